"""`nnrun report DIR`: compare every run under a dir (a sweep, or all of experiments/) in one table and one plot.

A run is a dir holding `.hydra/` or `metrics.json`. A finished run is read from its metrics.json alone (status,
overrides, best and final metrics); its TensorBoard event file only when a curve of it is drawn. A run still
going has no metrics.json: its latest values come from its event file, read with tensorboard's own reader. Runs
that differ only by `seed` are grouped as mean ± std; runs of the same settings, seed included (a rerun, a sweep
job and its resumed copy), are one run in the table, the newest. Writes report.csv (every run) and report.png next
to the runs (or under --out).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from nnrun.config import ArgumentParser, ConfigError, UsageError, maximized, parse
from nnrun.console import STATUS_STYLE, PipeConsole, plural
from nnrun.metrics import FINAL_KEYS, atomic_write, finite_or_none, read_metrics, read_yaml

UNTRAINED = "untrained/"  # `--metric untrained/accuracy/test`: the run's network before its first step
METRICS = (*FINAL_KEYS, *(UNTRAINED + key for key in FINAL_KEYS))
TABLE_METRICS = ("loss/val", "accuracy/val", "accuracy/test")  # the table's final columns unless --metric says
# What the report never lists as a varying override: they say nothing about the result (another data file does).
IGNORED_KEYS = {"hydra/launcher", "hydra/sweeper", "device", "threads", "train.resume"}
UNFINISHED = "unfinished"  # no metrics.json yet: still running, or killed before it could write one
MAX_CURVES = 12  # loss/val curves drawn in report.png: every run's up to this many, else the best ones'


@dataclass
class Run:
    """One run dir as the report sees it. `curves` (every scalar tag of its event file) is read on first use."""

    path: Path
    overrides: dict[str, str]
    status: str
    monitor: str
    epochs_run: int | None
    best_epoch: int | None
    best: float | None
    final: dict[str, float | None]
    curves: dict[str, list[tuple[int, float]]] | None = field(default=None, repr=False)
    untrained: dict[str, float | None] | None = field(default=None, repr=False)

    def scalars(self) -> dict[str, list[tuple[int, float]]]:
        if self.curves is None:
            self.curves = read_curves(self.path)
        return self.curves

    def value(self, metric: str) -> float | None:
        """A metric of METRICS: a final value from metrics.json, or the untrained network's (computed once, from
        .hydra/config.yaml; none when the config or the data cannot be read)."""
        if not metric.startswith(UNTRAINED):
            return self.final.get(metric)
        if self.untrained is None:
            config = read_yaml(self.path / ".hydra" / "config.yaml")
            try:
                self.untrained = untrained(parse(config)) if isinstance(config, dict) else {}
            except ConfigError as exc:  # a data file moved away since: the run's other numbers still stand
                print(f"nnrun: report: {self.path}: no untrained values ({exc})", file=sys.stderr)
                self.untrained = {}
        return self.untrained.get(metric.removeprefix(UNTRAINED))


@dataclass
class Group:
    """Runs with the same overrides but for `seed` (a group of one when there is nothing to group): the newest run
    of each setting in `runs`, the older runs of the same settings, seed included, in `older` (a rerun of the same
    command; a sweep's interrupted job beside its resumed or carried-over copy: train.resume is no setting). The
    table counts and averages `runs` alone, so a seed counts once."""

    runs: list[Run]
    older: list[Run] = field(default_factory=list)

    def values(self, get) -> list[float]:
        return [v for v in map(get, self.runs) if v is not None and math.isfinite(v)]


def find_run_dirs(root: Path) -> list[Path]:
    """Every run dir under `root` (or `root` itself): one walk of the tree, not into a run (runs do not nest)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".hydra" in dirnames or "metrics.json" in filenames:
            found.append(Path(dirpath))
            dirnames.clear()
        else:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .submitit/, .git/: never runs
    return sorted(found)


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """['optimizer.lr=0.1', '+exp=xor'] -> {'optimizer.lr': '0.1', 'exp': 'xor'} (deletions '~key' dropped)."""
    split = (str(line).partition("=") for line in lines)
    return {key.lstrip("+"): value for key, sep, value in split if sep and not key.startswith("~")}


def _monitor(run_dir: Path) -> str:
    config = read_yaml(run_dir / ".hydra" / "config.yaml") or {}
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
    guidance = {**dict.fromkeys(ea.DEFAULT_SIZE_GUIDANCE, 1), ea.SCALARS: 0}
    accumulator = ea.EventAccumulator(str(run_dir), size_guidance=guidance)
    with contextlib.suppress(Exception):  # a file being written can end mid-record; what was read is still good
        accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags().get("scalars", [])}


def read_run(run_dir: Path) -> Run:
    metrics = read_metrics(run_dir)
    if metrics is not None:
        lines = metrics.get("overrides")
        if lines is None:
            lines = read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
        best = metrics.get("best") or {}
        monitor = next((k for k in best if k != "epoch"), None) or _monitor(run_dir)
        return Run(run_dir, parse_overrides(lines), metrics.get("status", "failed"), monitor,
                   metrics.get("epochs_run"), best.get("epoch"), finite_or_none(best.get(monitor)),
                   {k: finite_or_none(v) for k, v in (metrics.get("final") or {}).items()})
    # Still running (or killed): the latest logged point is its "final", the best logged point its best.
    overrides = parse_overrides(read_yaml(run_dir / ".hydra" / "overrides.yaml") or [])
    monitor = _monitor(run_dir)
    curves = read_curves(run_dir)
    final = {tag: finite_or_none(points[-1][1]) for tag, points in curves.items() if points}
    points = [(step, v) for step, v in curves.get(monitor, []) if math.isfinite(v)]
    best_epoch, best = min(points, key=lambda p: _best_first(p[1], monitor)) if points else (None, None)
    last_epoch = max((pts[-1][0] for pts in curves.values() if pts), default=None)
    return Run(run_dir, overrides, UNFINISHED, monitor, last_epoch, best_epoch, best, final, curves)


def untrained(cfg) -> dict[str, float | None]:
    """{loss/train, accuracy/train, ..., accuracy/test} of `cfg`'s network before its first step (the lecture's
    "an untrained net predicts badly"): the run's data split and initial weights, as the engine builds them."""
    from nnrun.data import load  # torch
    from nnrun.engine import evaluate, network
    from nnrun.losses import LOSSES

    data, loss = load(cfg.dataset), LOSSES[cfg.loss]
    evaluated = evaluate(network(cfg, data, loss), loss, data.train, data.val, data.test)
    return {f"{name}/{split}": value for split, pair in zip(("train", "val", "test"), evaluated)
            for name, value in zip(("loss", "accuracy"), pair)}


def varying_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs (or that some runs lack), in first-seen order."""
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [k for k in keys if k not in IGNORED_KEYS and len({run.overrides.get(k) for run in runs}) > 1]


def group_by_seed(runs: list[Run], keys: list[str]) -> list[Group]:
    groups: dict[tuple, dict[tuple, list[Run]]] = {}
    for run in runs:
        group = groups.setdefault(tuple((k, run.overrides.get(k, "")) for k in keys if k != "seed"), {})
        settings = tuple(sorted((k, v) for k, v in run.overrides.items() if k not in IGNORED_KEYS))
        group.setdefault(settings, []).append(run)
    found = []
    for repeats in groups.values():
        newest = [max(same, key=_written) for same in repeats.values()]
        found.append(Group(newest, [run for same, new in zip(repeats.values(), newest) for run in same
                                    if run is not new]))
    return found


def _written(run: Run) -> tuple[float, str]:
    """When the run last wrote its result (metrics.json, else its dir), then its path: the later of two repeats
    (a sweep dir carried over keeps its jobs' times, and its name is later)."""
    for path in (run.path / "metrics.json", run.path):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime, str(run.path)
    return 0.0, str(run.path)


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _best_first(value: float | None, monitor: str) -> tuple:
    """A sort key: the best value first (the largest where larger is better, as for accuracy), no value last."""
    return (value is None, 0.0 if value is None else -value if maximized(monitor) else value)


def sort_groups(groups: list[Group], monitor: str) -> list[Group]:
    """Best first by the mean best monitored value; groups with no value last."""
    return sorted(groups, key=lambda group: _best_first(mean_std(group.values(lambda r: r.best))[0], monitor))


def common_monitor(runs: list[Run]) -> str:
    """The metric most runs monitor (train.early_stopping.monitor): what "best" means for them all."""
    return Counter(r.monitor for r in runs).most_common(1)[0][0]


# Statuses whose weights are the run's to use: the last finite ones of a diverged run, or those of one that
# failed, are not what "the best run" should hand out while another run has better.
USABLE = ("completed", "stopped_early", "interrupted")


def best_run(runs: list[Run]) -> Run:
    """The run whose saved weights are best: by the final value of the monitored metric (the one most of them
    monitor), which was evaluated on the weights its checkpoint holds (the best ones when restore_best restored
    them, else the last epoch's; its best value may belong to weights long gone). Among the runs that ended with
    usable weights when there are any, else among all; a run without a value last."""
    monitor = common_monitor(runs)
    return min(runs, key=lambda run: (run.status not in USABLE, *_best_first(run.final.get(monitor), monitor)))


def _mean_text(values: list[float], spread: bool, whole: bool = False) -> str:
    """The mean of `values` (with `spread`, mean±std), or — when there are none: `whole` numbers, or four
    decimals as losses and accuracies read (a diverged run's 299283936.0 as 2.993e+08)."""
    mean, std = mean_std(values)

    def text(value: float) -> str:
        return f"{value:.0f}" if whole else f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"

    return "—" if mean is None else f"{text(mean)}±{text(std)}" if spread else text(mean)


SIGNIFICANT = 4  # override values typed with more significant digits than this are shown rounded


def override_texts(values: list[str]) -> list[str]:
    """A column of override values as shown. As typed, unless a number in it was typed with more than
    SIGNIFICANT significant digits (an Optuna-proposed lr 0.0044303752452182690, a log-spaced 0.398107): then
    every number of the column in one format, positional, with as few significant digits (3 or more) as keep
    different values apart: 0.00631, 0.00316, 0.398. Whole numbers stay whole. report.csv keeps every digit."""
    numbers = {v: _number(v) for v in values}  # Decimal reads every number float reads, its digits as typed
    if all(n is None or len(Decimal(v).normalize().as_tuple().digits) <= SIGNIFICANT for v, n in numbers.items()):
        return list(values)
    from numpy import format_float_positional  # numpy (0.1-0.2 s) only for a column that needs it
    distinct = {n for n in numbers.values() if n is not None}

    def shown(number: float, digits: int) -> str:
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))
        return format_float_positional(number, precision=digits, unique=True, fractional=False, trim="-")

    for digits in range(3, 18):
        texts = {n: shown(n, digits) for n in distinct}
        if len(set(texts.values())) == len(distinct):
            break
    return [v if numbers[v] is None else texts[numbers[v]] for v in values]


@dataclass
class Column:
    """A column of the report table: `name` says which (an override key, "status", "final loss/val")."""

    name: str
    header: str
    cells: list[Text]
    numeric: bool = True
    wraps: bool = False  # may break between words (status: "completed×2" / "diverged×1"), never inside one

    def width(self, wrapped: bool = True) -> int:
        """The narrowest this column gets without cutting a value, or, not `wrapped`, its natural width."""
        lines = [line for text in (self.header, *map(str, self.cells)) for line in text.split("\n")]
        words = [word for line in lines for word in line.split(" ")] if self.wraps and wrapped else lines
        return max(map(cell_len, words))


# Left out first, in this order, when the table is wider than the terminal; `--wide` keeps them all. The
# overrides, status and best value always show: they say which run did how well. Columns of metrics picked with
# --metric are never left out: the user asked for them.
DROP_ORDER = ("best epoch", "seeds", "final loss/val", "final accuracy/test", "final accuracy/val")
OVERRIDES = "overrides"  # the column that holds every override of a row as key=value lines (`fit`)


def metric_name(metric: str) -> str:
    """A column's name: 'final loss/val', 'untrained accuracy/test'."""
    return f"untrained {metric.removeprefix(UNTRAINED)}" if metric.startswith(UNTRAINED) else f"final {metric}"


def table_columns(groups: list[Group], keys: list[str], monitor: str,
                  metrics: tuple[str, ...] = TABLE_METRICS) -> list[Column]:
    grouped = any(len(g.runs) > 1 for g in groups)
    columns = []
    for key in [k for k in keys if not (grouped and k == "seed")]:
        values = override_texts([g.runs[0].overrides.get(key, "") for g in groups])
        # The key broken after its dots where it is wider than its values ("optimizer.\nlr"), so a long key does
        # not widen a column of short numbers.
        width = max([len(v) for v in values] + [len(part) + 1 for part in key.split(".")])
        header = "\n".join(_wrap(key.replace(".", ".\n").split("\n"), width, sep=""))
        columns.append(Column(key, header, [Text(v) for v in values], numeric=False))
    if grouped:
        columns.append(Column("seeds", "seeds", [Text(str(len(g.runs))) for g in groups]))
    statuses = [" ".join(f"[{STATUS_STYLE.get(s, 'dim')}]{s}{'' if len(g.runs) == 1 else f'×{n}'}[/]"
                         for s, n in Counter(r.status for r in g.runs).most_common()) for g in groups]
    columns.append(Column("status", "status", [Text.from_markup(s) for s in statuses], numeric=False, wraps=True))
    epochs = ([float(r.best_epoch) for r in g.runs if r.best_epoch is not None] for g in groups)
    cells = [Text(_mean_text(values, len(g.runs) > 1, whole=True)) for g, values in zip(groups, epochs)]
    columns.append(Column("best epoch", "best\nepoch", cells))
    for name, get in [(f"best {monitor}", lambda r: r.best),
                      *((metric_name(m), lambda r, m=m: r.value(m)) for m in metrics)]:
        cells = [Text(_mean_text(values, len(values) > 1)) for values in (g.values(get) for g in groups)]
        columns.append(Column(name, name.replace(" ", "\n", 1), cells))
    return columns


def table_width(columns: list[Column], wrapped: bool = True) -> int:
    """The narrowest (or, not `wrapped`, the natural) width of a rich Table of `columns` in its default box: each
    column's width, two spaces of padding and a border, one border more."""
    return sum(c.width(wrapped) + 3 for c in columns) + 1


def fit(columns: list[Column], keys: list[str], width: int,
        optional: tuple[str, ...] = DROP_ORDER) -> tuple[list[Column], list[str]] | None:
    """The columns that fit `width` and the names of those left out (`optional` ones, in order): each override in
    a column of its own, else all in one column of key=value lines (as wide as the longest, not as all side by
    side). None when even that is too wide."""
    layouts, stacked = [columns], [c for c in columns if c.name in keys]
    if len(stacked) > 1:
        cells = [Text("\n".join(f"{c.name}={cell}" for c, cell in zip(stacked, row) if str(cell)))
                 for row in zip(*(c.cells for c in stacked))]
        overrides = Column(OVERRIDES, OVERRIDES, cells, numeric=False)
        layouts.append([overrides, *(c for c in columns if c.name not in keys)])
    for layout in layouts:
        droppable = [name for name in optional if any(c.name == name for c in layout)]
        for n in range(len(droppable) + 1):
            shown = [c for c in layout if c.name not in droppable[:n]]
            if table_width(shown) <= width:
                return shown, droppable[:n]
    return None


def print_table(groups: list[Group], keys: list[str], monitor: str, title: str, console=None,
                wide: bool = False, metrics: tuple[str, ...] = TABLE_METRICS,
                optional: tuple[str, ...] = DROP_ORDER) -> None:
    """The comparison table at the console's width (`fit`), never a value cut; when even that is too wide, one
    block of lines per row. With `wide`, every column, at the table's full width."""
    console = console or PipeConsole()
    columns = table_columns(groups, keys, monitor, metrics)
    fitted = (columns, []) if wide else fit(columns, keys, console.width, optional)
    if fitted is None:
        print_blocks(columns, keys, title, console)
        return
    shown, dropped = fitted
    table = Table(title=title)
    for column in shown:  # every column but status keeps its widest cell on one line
        table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=not column.wraps,
                         min_width=column.width(), overflow="fold")
    for row in zip(*(column.cells for column in shown)):
        table.add_row(*row)
    if wide:
        table.width = max(table_width(shown, wrapped=False), console.width)
    console.print(table, crop=False)
    fitting = f"to fit {console.width} columns"
    notes = [f"overrides stacked in one column {fitting}"] if any(c.name == OVERRIDES for c in shown) else []
    if dropped:
        notes.append(f"left out{'' if notes else ' ' + fitting}: {', '.join(dropped)}")
    if notes:
        console.print(f"({'; '.join(notes)}; --wide shows every column)", style="dim")


def print_blocks(columns: list[Column], keys: list[str], title: str, console) -> None:
    """The table as one block per row, for a terminal too narrow for any table of it: the row's number and its
    overrides, then its status and numbers, indented; each `key=value` and `name value` whole."""
    console.print(Text(title, style="italic"), soft_wrap=True)
    indent, width = "   ", console.width - 3
    for number, row in enumerate(zip(*(c.cells for c in columns)), start=1):
        cells = {c.name: cell for c, cell in zip(columns, row)}
        overrides = [f"{k}={cells[k]}" for k in keys if k in cells and str(cells[k])]
        numbers = [f"{c.name} {cells[c.name]}".replace("\n", " ") for c in columns if c.name not in keys]
        head, *rest = _wrap([f"{number}.", *overrides], width)
        for line in [head, *(indent + line for line in rest + _wrap(numbers, width))]:
            console.print(Text(line), soft_wrap=True)


def _wrap(items: list[str], width: int, sep: str = " ") -> list[str]:
    """`items` joined by `sep` into lines of at most `width`, broken only between items."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(item)
    return lines


def write_csv(path: Path, runs: list[Run], keys: list[str], monitor: str, metrics: tuple[str, ...] = ()) -> None:
    """One row per run (no grouping: the raw numbers, for a spreadsheet or pandas): every final metric, and the
    untrained ones asked for; csv writes None as an empty cell."""
    extra = [m for m in metrics if m.startswith(UNTRAINED)]
    header = ["run_dir", *keys, "status", "epochs_run", "best_epoch", f"best {monitor}",
              *(f"final {t}" for t in FINAL_KEYS), *(metric_name(m) for m in extra)]
    rows = ([str(run.path), *(run.overrides.get(k, "") for k in keys), run.status, run.epochs_run, run.best_epoch,
             run.best, *(run.final.get(t) for t in FINAL_KEYS), *(run.value(m) for m in extra)] for run in runs)
    atomic_write(path, lambda handle: csv.writer(handle).writerows([header, *rows]))


def _number(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def numeric_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """Swept keys whose every value is a number (lr, dropout, batch size...); seed is noise, not a parameter."""
    return [k for k in keys if k != "seed" and all(_number(r.overrides.get(k)) is not None for r in runs)]


SPREAD_FOR_LOG_SCALE = 100  # max / min of the plotted values above which a linear axis flattens the small ones
# A log axis reaches this far below the values it is drawn for (the curves' starting losses, the typical best
# value): a loss a million times below where training started is as good as zero, and 1e-47 against 1e-6
# says nothing more.
LOG_AXIS_DECADES = 6


def plot(runs: list[Run], keys: list[str], monitor: str):
    """loss/val against epoch for the best MAX_CURVES runs (`runs` is best first; their event files are read
    here), then the best monitored value of every run against each swept number. A value axis spanning over two
    decades (one run at loss 10, the rest near 0.01) is log-scaled, clipped LOG_AXIS_DECADES below what matters."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    params = numeric_keys(runs, keys)
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(6 * (1 + len(params)), 4.5), squeeze=False)
    curves_ax, *param_axes = axes[0]
    drawn = runs[:MAX_CURVES]
    curves = [(run, points) for run in drawn if (points := run.scalars().get("loss/val", []))]
    for run, points in curves:
        label = ",".join(f"{k}={run.overrides.get(k, '')}" for k in keys) or run.path.name
        curves_ax.plot(*zip(*points), label=label, linewidth=1)
    which = "" if len(drawn) == len(runs) else f" (the best {len(drawn)} of {len(runs)} runs)"
    curves_ax.set(title=f"loss/val{which}", xlabel="epoch", ylabel="loss/val")
    _log_scale_if_spread(curves_ax, [v for _, points in curves for _, v in points], [p[0][1] for _, p in curves])
    if drawn:
        curves_ax.legend(fontsize="x-small")
    scored = [r for r in runs if r.best is not None]
    for ax, key in zip(param_axes, params):
        xs, ys = [_number(r.overrides[key]) for r in scored], [r.best for r in scored]
        ax.scatter(xs, ys, alpha=0.7)
        means = {x: statistics.fmean(y for x2, y in zip(xs, ys) if x2 == x) for x in sorted(set(xs))}
        ax.plot(list(means), list(means.values()), color="black", linewidth=1, label="mean")
        if xs and min(xs) > 0 and (key.endswith("lr") or max(xs) / min(xs) >= 100):
            ax.set_xscale("log")  # learning rates are swept in decades
        _log_scale_if_spread(ax, ys, ys)
        ax.set(title=f"best {monitor} vs {key}", xlabel=key, ylabel=f"best {monitor}")
    fig.tight_layout()
    return fig


def _log_scale_if_spread(ax, values: list[float], reference: list[float]) -> None:
    """Log-scale the y axis when `values` span more than SPREAD_FOR_LOG_SCALE, its bottom no lower than
    LOG_AXIS_DECADES below the median of `reference`."""
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if not positive or max(positive) / min(positive) <= SPREAD_FOR_LOG_SCALE:
        return
    ax.set_yscale("log")
    typical = [v for v in reference if math.isfinite(v) and v > 0]
    floor = statistics.median(typical) * 10.0 ** -LOG_AXIS_DECADES if typical else min(positive)
    if min(positive) < floor:
        ax.set_ylim(bottom=floor)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="nnrun report",
        description="A table (and plot) of every run under DIR: the overrides that vary, status, best epoch, "
                    "final and best metrics, sorted by the monitored metric; seeds grouped as mean ± std; of runs "
                    "with the same settings (seed included), the newest.")
    parser.add_argument("dir", metavar="DIR", type=Path, help="a sweep dir, an experiment dir, or experiments/")
    parser.add_argument("--metric", action="append", default=None, metavar="NAME",
                        help="a metric to show (repeat, or NAME,NAME): a final value of metrics.json "
                             f"({', '.join(FINAL_KEYS)}), or the network's before training, "
                             f"{UNTRAINED}NAME (e.g. {UNTRAINED}accuracy/test); default "
                             f"{' '.join(TABLE_METRICS)}")
    parser.add_argument("--out", type=Path, default=None, help="where report.csv and report.png go (default DIR)")
    parser.add_argument("--no-plot", action="store_true", help="skip report.png (and the matplotlib import)")
    parser.add_argument("--wide", action="store_true",
                        help="every column, even when the table is wider than the terminal (by default columns "
                             "such as best epoch and the final losses are left out until it fits)")
    return parser


def picked_metrics(args: list[str] | None) -> tuple[str, ...] | None:
    """--metric's names in order (comma lists split), or None when none was given; a name not in METRICS is a
    ConfigError naming the allowed ones."""
    if not args:
        return None
    names = [name.strip() for arg in args for name in arg.split(",") if name.strip()]
    for name in names:
        if name not in METRICS:
            raise ConfigError("--metric", name, f"one of {', '.join(FINAL_KEYS)}, or {UNTRAINED}<one of them>")
    return tuple(dict.fromkeys(names))


def title(runs: list[Run], groups: list[Group], monitor: str) -> str:
    """'18 runs in 6 groups of seeds (mean±std), sorted by best loss/val': `runs` are those the table shows."""
    grouped = f" in {plural(len(groups), 'group')} of seeds (mean±std)" if len(groups) < len(runs) else ""
    return f"{plural(len(runs), 'run')}{grouped}, sorted by best {monitor}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root: Path = args.dir
    try:
        picked = picked_metrics(args.metric)
        if not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        run_dirs = find_run_dirs(root)
        if not run_dirs:
            raise UsageError(f"no runs under {root} (a run is a dir with .hydra/ or metrics.json)")
    except ConfigError as exc:
        print(f"nnrun: error: report: {exc}", file=sys.stderr)
        return 2
    runs = [read_run(d) for d in run_dirs]
    keys = varying_keys(runs)
    monitor = common_monitor(runs)
    groups = sort_groups(group_by_seed(runs, keys), monitor)
    ordered = [run for group in groups for run in group.runs]
    older = [run for group in groups for run in group.older]
    out = args.out or root
    out.mkdir(parents=True, exist_ok=True)
    # report.csv first: output cut short (`| head`) still leaves it written.
    write_csv(out / "report.csv", [run for group in groups for run in (*group.runs, *group.older)], keys, monitor,
              picked or ())
    written = [out / "report.csv"]
    console = PipeConsole()
    print_table(groups, keys, monitor, title(ordered, groups, monitor), console=console, wide=args.wide,
                metrics=picked or TABLE_METRICS, optional=DROP_ORDER if picked is None else DROP_ORDER[:2])
    if older:
        console.print(f"({plural(len(older), 'older run')} of the same settings left out; report.csv lists every "
                      "run)", style="dim")
    if not args.no_plot:
        fig = plot(ordered, keys, monitor)
        import matplotlib.pyplot as plt  # after plot(), which picks the file-only backend

        fig.savefig(out / "report.png", dpi=100)
        plt.close(fig)
        written.append(out / "report.png")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
