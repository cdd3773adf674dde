"""`nnrun predict`: load a run's checkpoint (safely) and print class probabilities for new points."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from nnrun.config import ArgumentParser, ConfigError, UsageError


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="nnrun predict",
        description="Predict with a trained run: raw feature values in, class probabilities out.")
    parser.add_argument("run_dir", type=Path,
                        help="a run dir (holding checkpoint.pt), the checkpoint file, a sweep dir (its best job by "
                             "the final value of the monitored metric: that of the weights it saved), or an "
                             "experiment dir (experiments/<exp>, or its runs/ or multirun/: its newest run)")
    parser.add_argument("features", nargs="*", default=[],  # none with --csv
                        help="one point's feature values, in the training data's order")
    parser.add_argument("--csv", type=Path, help="a CSV file of points, header row of feature names")
    parser.add_argument("--best", action="store_true",
                        help="on an experiment dir (or any dir above runs): its best run by the final value of "
                             "the monitored metric (train.early_stopping.monitor), not its newest")
    return parser


# What predictions from a run that did not end well are worth, said before they are printed.
STATUS_WARNINGS = {
    "diverged": "diverged (its loss became inf or NaN): these predictions come from its last finite weights, "
                "not from a trained network",
    "failed": "failed: these predictions come from the weights it had when it stopped",
    "interrupted": "was interrupted before training ended: these predictions come from its weights at epoch {epoch}",
}


def locate(path: Path, best: bool = False) -> tuple[Path, str | None]:
    """The checkpoint `path` means (a sweep dir's, or with `best` any dir's, best run; an experiment dir's newest),
    and when it picked one run among several, a line saying which."""
    from nnrun.checkpoint import CHECKPOINT_FILE, find
    from nnrun.metrics import in_layout

    path = Path(path).expanduser()
    if path.is_file() or (path / CHECKPOINT_FILE).is_file():
        return find(path), None
    # A sweep dir holds multirun.yaml, or (Optuna's sweeper writes none) is one of experiments/<exp>/multirun/.
    sweep = (path / "multirun.yaml").is_file() or in_layout(path, "multirun")
    if path.is_dir() and (best or sweep):
        return best_checkpoint(path, "jobs" if sweep else "runs")
    found = find(path)
    return found, f"using {found.parent} (the newest run under {path})"


def best_checkpoint(root: Path, runs_are: str) -> tuple[Path, str]:
    """The checkpoint of the best run under `root` (report.best_run) and the line that says which."""
    from nnrun import report
    from nnrun.checkpoint import CHECKPOINT_FILE, CheckpointError

    runs = [report.read_run(d) for d in report.find_run_dirs(root) if (d / CHECKPOINT_FILE).is_file()]
    if not runs:
        raise CheckpointError(f"{root}: no run with a {CHECKPOINT_FILE} under it")
    run, monitor = report.best_run(runs), report.common_monitor(runs)
    value = run.final.get(monitor)
    value = "no value" if value is None else f"{value:.4f}"
    return run.path / CHECKPOINT_FILE, (f"using {run.path} (the best of {len(runs)} {runs_are} by final "
                                        f"{monitor}: {value}, {run.status})")


# The network computes in float32: a value a double holds but float32 does not (1e39) is inf there, and its
# probabilities NaN.
FLOAT32_MAX = 3.4028234663852886e38
IN_FLOAT32 = "(the network computes in float32: at most ±3.4e38)"


def _finite(value: float) -> bool:
    """Whether `value` is a number the network can take: finite in float32, not nan or ±inf."""
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def _read_points(path: Path, names: list[str]) -> list[list[float]]:
    from nnrun.data import DataError, feature_value, read_table

    table = read_table(path, f"--csv {path}")
    missing = [n for n in names if n not in table.header]
    if missing:
        raise DataError(f"{path}: missing feature column(s) {', '.join(missing)}; the run was trained on "
                        f"{', '.join(names)}; the file has {', '.join(table.header)} "
                        f"(separated by {table.separator_name})")
    cols = [table.header.index(n) for n in names]
    points = []
    for line, row in table.rows:
        if len(row) != len(table.header):
            raise DataError(f"{path}: row {line} has {len(row)} cells, the header has {len(table.header)}")
        point = [feature_value(path, line, name, row[c], table.separator) for name, c in zip(names, cols)]
        for name, c, value in zip(names, cols, point):
            if not _finite(value):
                raise DataError(f"{path}: row {line}, column {name!r}: {row[c].strip()} is not a finite number "
                                f"{IN_FLOAT32}")
        points.append(point)
    return points


def _point(values: list[str], names: list[str]) -> list[float]:
    """The point typed on the command line, one finite number per feature of the run, or UsageError saying what to
    type."""
    given = f"cannot predict from {' '.join(values)!r}" if values else "no point to predict"
    try:
        point = [float(v) for v in values] if len(values) == len(names) else None
    except ValueError:
        point = None
    if point is None:
        raise UsageError(f"{given}: the run takes {len(names)} numbers, one per feature ({', '.join(names)}), "
                         "or --csv FILE")
    for name, text, value in zip(names, values, point):
        if not _finite(value):
            raise UsageError(f"{given}: {name}={text} is not a finite number"
                             f"{' ' + IN_FLOAT32 if math.isfinite(value) else ''}")
    return point


def main(argv: list[str]) -> int:
    args = _parser().parse_intermixed_args(argv)  # flags before, between or after the numbers
    from nnrun.checkpoint import CheckpointError, load

    try:
        if args.csv is not None and args.features:
            raise UsageError("give one point's values or --csv FILE, not both")
        path, chosen = locate(args.run_dir, args.best)
        payload = load(path)
        names = list(payload["feature_names"])
        points = _read_points(args.csv, names) if args.csv is not None else [_point(args.features, names)]
    except (CheckpointError, ConfigError) as exc:
        print(f"nnrun: error: {exc}", file=sys.stderr)
        return 2
    if chosen:
        print(f"nnrun: predict: {chosen}", file=sys.stderr)
    warning = STATUS_WARNINGS.get(payload.get("status"))
    if warning:
        print(f"nnrun: predict: warning: {path.parent} {warning.format(epoch=payload.get('epoch'))}",
              file=sys.stderr)
    for point, proba in zip(points, predict(payload, points)):
        print(format_prediction(names, point, payload["class_names"], proba))
    return 0


def predict(payload: dict, points: list[list[float]]) -> list[list[float]]:
    """Class probabilities for raw (unstandardised) points, with the run's own scaling and weights."""
    import torch

    from nnrun.losses import LOSSES
    from nnrun.models import MLP

    model = MLP(**payload["spec"])
    model.load_state_dict(payload["model"])
    model.eval()
    x = (torch.tensor(points, dtype=torch.float32) - payload["mean"]) / payload["std"]
    with torch.no_grad():
        return LOSSES[payload["loss"]].proba(model(x)).tolist()


def format_prediction(names: list[str], point: list[float], classes: list[str], proba: list[float]) -> str:
    """`x1=1, x2=0: P(fail) = 0.0500, P(pass) = 0.9500 -> pass`: every class by name, in the run's class order."""
    inputs = ", ".join(f"{n}={v:g}" for n, v in zip(names, point))
    best = max(range(len(proba)), key=proba.__getitem__)
    spread = ", ".join(f"P({c}) = {p:.4f}" for c, p in zip(classes, proba))
    return f"{inputs}: {spread} -> {classes[best]}"
