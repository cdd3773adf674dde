"""`nnrun report DIR`: compare every run under a dir (a sweep, or all of experiments/) in one table and one plot.

A run is a dir holding `.hydra/` or `metrics.json`. Its status and final/best metrics come from metrics.json;
its curves (and, for a run still going, its latest values) come from its TensorBoard event file, read with
tensorboard's own reader. Runs that differ only by `seed` are grouped as mean ± std. Writes report.csv and
report.png next to the runs (or under --out).
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINAL_COLUMNS = ("loss/train", "loss/val", "accuracy/val", "accuracy/test")
TABLE_FINAL_COLUMNS = ("loss/val", "accuracy/val", "accuracy/test")  # the CSV has them all
# What the report never lists as a varying override: they say nothing about the result.
IGNORED_KEYS = {"hydra/launcher", "hydra/sweeper", "device", "threads", "dataset.path"}
UNFINISHED = "unfinished"  # no metrics.json yet: still running, or killed before it could write one


@dataclass
class Run:
    """One run dir as the report sees it."""

    path: Path
    overrides: dict[str, str]
    status: str
    monitor: str
    epochs_run: int | None
    best_epoch: int | None
    best: float | None
    final: dict[str, float | None]
    curves: dict[str, list[tuple[int, float]]] = field(repr=False)

    @property
    def seed(self) -> str | None:
        return self.overrides.get("seed")


@dataclass
class Group:
    """Runs with the same overrides but for `seed` (a group of one when there is nothing to group)."""

    key: tuple[tuple[str, str], ...]
    runs: list[Run]

    def values(self, get) -> list[float]:
        return [v for v in (get(r) for r in self.runs) if v is not None and math.isfinite(v)]


# --- reading runs -------------------------------------------------------------------------------------


def find_run_dirs(root: Path) -> list[Path]:
    found = {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    found |= {p.parent for p in root.rglob("metrics.json")}
    return sorted(found)


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """['optimizer.lr=0.1', '+exp=xor'] -> {'optimizer.lr': '0.1', 'exp': 'xor'} (deletions '~key' dropped)."""
    parsed = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if not sep or key.startswith("~"):
            continue
        parsed[key.lstrip("+")] = value
    return parsed


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _monitor(run_dir: Path) -> str:
    config = _read_yaml(run_dir / ".hydra" / "config.yaml") or {}
    try:
        return str(config["train"]["early_stopping"]["monitor"])
    except (KeyError, TypeError):
        return "loss/val"


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run's event file(s) as [(step, value)], via tensorboard's EventAccumulator."""
    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing import event_accumulator as ea

    # Keep every scalar; skip the pictures (the report does not need them, and they are most of the file).
    guidance = {ea.SCALARS: 0, ea.IMAGES: 1, ea.TENSORS: 1, ea.HISTOGRAMS: 1, ea.AUDIO: 1,
                ea.COMPRESSED_HISTOGRAMS: 1}
    accumulator = ea.EventAccumulator(str(run_dir), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception:  # a file being written can end mid-record; what was read so far is still good
        pass
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags().get("scalars", [])}


def maximize(monitor: str) -> bool:
    return monitor.startswith("accuracy")


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def read_run(run_dir: Path) -> Run:
    from nnrun.metrics import read_metrics

    overrides = parse_overrides(_read_yaml(run_dir / ".hydra" / "overrides.yaml") or [])
    metrics = read_metrics(run_dir)
    monitor = _monitor(run_dir)
    curves = read_curves(run_dir)
    if metrics is not None:
        best = metrics.get("best") or {}
        monitor = next((k for k in best if k != "epoch"), monitor)
        return Run(run_dir, overrides, metrics.get("status", "failed"), monitor, metrics.get("epochs_run"),
                   best.get("epoch"), _finite(best.get(monitor)),
                   {k: _finite(v) for k, v in (metrics.get("final") or {}).items()}, curves)
    # Still running (or killed): the latest logged point is its "final", the best logged point its best.
    final = {tag: _finite(points[-1][1]) for tag, points in curves.items() if points}
    points = [(step, v) for step, v in curves.get(monitor, []) if math.isfinite(v)]
    best_epoch, best = (max if maximize(monitor) else min)(points, key=lambda p: p[1]) if points else (None, None)
    last_epoch = max((pts[-1][0] for pts in curves.values() if pts), default=None)
    return Run(run_dir, overrides, UNFINISHED, monitor, last_epoch, best_epoch, best, final, curves)


# --- comparing them -----------------------------------------------------------------------------------


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (or that some runs lack), in first-seen order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.overrides))
    return [k for k in keys if k not in IGNORED_KEYS
            and len({run.overrides.get(k) for run in runs}) > 1]


def group_by_seed(runs: list[Run], keys: list[str]) -> list[Group]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        key = tuple((k, run.overrides.get(k, "")) for k in keys if k != "seed")
        groups.setdefault(key, []).append(run)
    return [Group(key, members) for key, members in groups.items()]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sort_groups(groups: list[Group], monitor: str) -> list[Group]:
    """Best first by the mean best monitored value; groups with no value last."""
    sign = -1.0 if maximize(monitor) else 1.0

    def order(group: Group):
        mean, _ = mean_std(group.values(lambda r: r.best))
        return (mean is None, 0.0 if mean is None else sign * mean)

    return sorted(groups, key=order)


def _fmt(mean: float | None, std: float | None = None, n: int = 1) -> str:
    if mean is None:
        return "—"
    return f"{_number_text(mean)}±{_number_text(std)}" if n > 1 and std is not None else _number_text(mean)


def _number_text(value: float) -> str:
    """Four decimals, as losses and accuracies read; a diverged run's 299283936.0 as 2.993e+08."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


def _short(value: str) -> str:
    """An Optuna-proposed 0.0044303752452182690 shows as 0.00443 (report.csv keeps every digit)."""
    number = _number(value)
    return f"{number:.4g}" if number is not None and len(value) > 8 else value


def _status_cell(runs: list[Run]) -> str:
    from nnrun.console import STATUS_STYLE

    counts = Counter(r.status for r in runs)
    return " ".join(f"[{STATUS_STYLE.get(s, 'dim')}]{s}{'' if len(runs) == 1 else f'×{n}'}[/]"
                    for s, n in counts.most_common())


def _key_header(key: str, values: list[str]) -> str:
    """An override key as a column header, broken after its dots where it is wider than its values
    ("optimizer.\nlr"), so a long key does not widen a column of short numbers."""
    width = max([len(v) for v in values] + [len(part) + 1 for part in key.split(".")])
    lines = [""]
    for part in key.replace(".", ".\n").split("\n"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


@dataclass
class Column:
    """One column of the report table: `name` says which (an override key, "status", "final loss/val")."""

    name: str
    header: str
    cells: list  # rich Text
    numeric: bool = True


# Left out first, in this order, when the table is wider than the terminal; `--wide` keeps them all.
# The overrides, status and best value always show: they say which run did how well.
DROP_ORDER = ("best epoch", "seeds", "final loss/val", "final accuracy/test", "final accuracy/val")


def table_columns(groups: list[Group], keys: list[str], monitor: str) -> list[Column]:
    from rich.text import Text

    grouped = any(len(g.runs) > 1 for g in groups)
    columns = []
    for key in keys:
        if grouped and key == "seed":
            continue
        values = [_short(dict(g.key).get(key, g.runs[0].overrides.get(key, ""))) for g in groups]
        columns.append(Column(key, _key_header(key, values), [Text(v) for v in values], numeric=False))
    if grouped:
        columns.append(Column("seeds", "seeds", [Text(str(len(g.runs))) for g in groups]))
    columns.append(Column("status", "status", [Text.from_markup(_status_cell(g.runs)) for g in groups],
                          numeric=False))
    epochs = [[float(r.best_epoch) for r in g.runs if r.best_epoch is not None] for g in groups]
    columns.append(Column("best epoch", "best\nepoch",
                          [Text("—" if not e else f"{statistics.fmean(e):.0f}") for e in epochs]))
    for name, get in [(f"best {monitor}", lambda r: r.best),
                      *((f"final {tag}", lambda r, tag=tag: r.final.get(tag)) for tag in TABLE_FINAL_COLUMNS)]:
        cells = []
        for group in groups:
            values = group.values(get)
            cells.append(Text(_fmt(*mean_std(values), n=len(values))))
        columns.append(Column(name, name.replace(" ", "\n", 1), cells))
    return columns


def _table(columns: list[Column], title: str):
    """A rich Table that never cuts a value: every column but status keeps its widest cell on one line;
    status may wrap between statuses ("completed×2" / "diverged×1"), never inside one."""
    from rich.cells import cell_len
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        wraps = column.name == "status"
        widest = max(cell_len(line) for text in (column.header, *column.cells) for line in str(text).split("\n"))
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=not wraps,
                         min_width=None if wraps else widest)
    for row in zip(*(column.cells for column in columns)):
        table.add_row(*row)
    return table


def print_table(groups: list[Group], keys: list[str], monitor: str, title: str, console=None,
                wide: bool = False) -> None:
    """The comparison table at the console's width: columns are left out (DROP_ORDER) until it fits, never a
    value cut. With `wide`, or when even the essential columns do not fit, it is printed at its full width."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    columns = table_columns(groups, keys, monitor)
    table = _table(columns, title)

    def measure(table) -> Measurement:
        return Measurement.get(console, console.options.update_width(1 << 16), table)

    dropped = []
    for name in () if wide else DROP_ORDER:
        if measure(table).minimum <= console.width:
            break
        columns = [c for c in columns if c.name != name]
        dropped.append(name)
        table = _table(columns, title)
    needed = measure(table).maximum if wide else measure(table).minimum
    if needed > console.width:
        table.width = needed  # wider than the terminal: it folds the lines, but every value stays whole
    console.print(table, crop=False)
    if dropped:
        console.print(f"(left out to fit {console.width} columns: {', '.join(dropped)}; "
                      "--wide shows every column)", style="dim")


def write_csv(path: Path, runs: list[Run], keys: list[str], monitor: str) -> None:
    """One row per run (no grouping: the raw numbers, for a spreadsheet or pandas)."""
    from nnrun.metrics import atomic_write

    header = ["run_dir", *keys, "status", "epochs_run", "best_epoch", f"best {monitor}",
              *(f"final {t}" for t in FINAL_COLUMNS)]

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(header)
        for run in runs:
            writer.writerow([str(run.path), *(run.overrides.get(k, "") for k in keys), run.status,
                             "" if run.epochs_run is None else run.epochs_run,
                             "" if run.best_epoch is None else run.best_epoch,
                             "" if run.best is None else run.best,
                             *("" if run.final.get(t) is None else run.final[t] for t in FINAL_COLUMNS)])

    atomic_write(path, write)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def numeric_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """Swept keys whose every value is a number (lr, dropout, batch size...); seed is noise, not a parameter."""
    return [k for k in keys if k != "seed"
            and all(_number(r.overrides.get(k)) is not None for r in runs)]


def write_plot(path: Path, runs: list[Run], keys: list[str], monitor: str) -> None:
    fig = plot(runs, keys, monitor)
    import matplotlib.pyplot as plt  # after plot(), which picks the file-only backend

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


SPREAD_FOR_LOG_SCALE = 100  # max / min of the plotted values above which a linear axis flattens the small ones


def plot(runs: list[Run], keys: list[str], monitor: str):
    """loss/val against epoch for every run; then the best monitored value against each swept number.
    A value axis spanning more than two decades (an lr sweep: one run at loss 10, the rest near 0.01) is
    log-scaled, so the small values are not flattened against the axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    params = numeric_keys(runs, keys)
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(6 * (1 + len(params)), 4.5), squeeze=False)
    curves_ax = axes[0][0]
    plotted = []
    for run in runs:
        points = run.curves.get("loss/val", [])
        if points:
            label = ",".join(f"{k}={run.overrides.get(k, '')}" for k in keys) or run.path.name
            curves_ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1)
            plotted += [p[1] for p in points]
    curves_ax.set(title="loss/val", xlabel="epoch", ylabel="loss/val")
    _log_scale_if_spread(curves_ax, plotted)
    if 0 < len(runs) <= 12:
        curves_ax.legend(fontsize="x-small")
    for ax, key in zip(axes[0][1:], params):
        xs = [_number(r.overrides[key]) for r in runs if r.best is not None]
        ys = [r.best for r in runs if r.best is not None]
        ax.scatter(xs, ys, alpha=0.7)
        means = {x: statistics.fmean(y for x2, y in zip(xs, ys) if x2 == x) for x in set(xs)}
        ax.plot(sorted(means), [means[x] for x in sorted(means)], color="black", linewidth=1, label="mean")
        positive = all(x > 0 for x in xs) and xs
        if positive and (key.endswith("lr") or max(xs) / min(xs) >= 100):
            ax.set_xscale("log")  # learning rates are swept in decades
        _log_scale_if_spread(ax, ys)
        ax.set(title=f"best {monitor} vs {key}", xlabel=key, ylabel=f"best {monitor}")
    fig.tight_layout()
    return fig


def _log_scale_if_spread(ax, values: list[float]) -> None:
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > SPREAD_FOR_LOG_SCALE:
        ax.set_yscale("log")


# --- the command --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnrun report",
        description="A table (and plot) of every run under DIR: the overrides that vary, status, best epoch, "
                    "final and best metrics, sorted by the monitored metric; seeds grouped as mean ± std.")
    parser.add_argument("dir", metavar="DIR", type=Path, help="a sweep dir, an experiment dir, or experiments/")
    parser.add_argument("--out", type=Path, default=None, help="where report.csv and report.png go (default DIR)")
    parser.add_argument("--no-plot", action="store_true", help="skip report.png (and the matplotlib import)")
    parser.add_argument("--wide", action="store_true",
                        help="every column, even when the table is wider than the terminal (by default columns "
                             "such as best epoch and the final losses are left out until it fits)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root: Path = args.dir
    if not root.is_dir():
        print(f"nnrun: error: report: {root} is not a directory", file=sys.stderr)
        return 2
    run_dirs = find_run_dirs(root)
    if not run_dirs:
        print(f"nnrun: error: report: no runs under {root} (a run is a dir with .hydra/ or metrics.json)",
              file=sys.stderr)
        return 2
    runs = [read_run(d) for d in run_dirs]
    keys = varying_keys(runs)
    monitor = Counter(r.monitor for r in runs).most_common(1)[0][0]
    groups = sort_groups(group_by_seed(runs, keys), monitor)
    print_table(groups, keys, monitor, title=f"{len(runs)} runs, sorted by best {monitor}", wide=args.wide)
    out = args.out or root
    out.mkdir(parents=True, exist_ok=True)
    ordered = [run for group in groups for run in group.runs]
    write_csv(out / "report.csv", ordered, keys, monitor)
    written = [out / "report.csv"]
    if not args.no_plot:
        write_plot(out / "report.png", ordered, keys, monitor)
        written.append(out / "report.png")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
