"""`nnrun report` over a large experiments/ tree: its time against reading the same runs' metrics.json files alone.

Builds `--runs` run dirs (default 2,000) laid out as sweeps leave them, experiments/<exp>/multirun/<time>/
<num>_<overrides>/ with .hydra/ (config.yaml, overrides.yaml, hydra.yaml), metrics.json, an event file and a
log, written with nnrun's own writers (metrics.write_metrics, logging.RunLogger: 21 points of five curves, two
decision-boundary images, the HParams and final values, as a 200-epoch run logs them), not by training; 1 run in
100 is unfinished (no metrics.json: its numbers come from its event file). Then times, in this process:

- baseline: every run's metrics.json found (os.walk) and parsed with json, nothing else;
- `nnrun report DIR --no-plot` and `nnrun report DIR` (report.main; the table at 80 columns, into /dev/null);
- `nnrun report DIR` as a user runs it: a new process (`python -m nnrun`), its imports included;
- for scale: every run's event file read with TensorBoard's EventAccumulator, as a report that read each run's
  curves would.

Bar: 2,000 runs in under 5 s for `nnrun report DIR`. Each figure is the median of --repeats runs after a first
one that warms the imports.

    python benchmarks/report_speed.py                 # 2,000 runs, 3 repeats
    python benchmarks/report_speed.py --quick         # 200 runs, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nnrun import metrics, report  # noqa: E402
from nnrun.tensorboard_events import RunLogger  # noqa: E402

# (exp_name, swept key, its values): the lecture's sweeps, made long enough to reach --runs with seeds.
SWEEPS = [
    ("lr_sweep", "optimizer.lr", ["1e-4", "0.001", "0.01", "0.1", "1", "10", "100"]),
    ("optimizers", "optimizer", ["sgd", "momentum", "adagrad", "adadelta", "adam", "rmsprop"]),
    ("capacity", "model.hidden", ["[1]", "[16]", "[128,128]"]),
    ("dropout_ablation", "model.dropout", ["0.0", "0.2", "0.5"]),
    ("spirals_optuna", "optimizer.lr", [f"{10 ** (-4 + 3 * i / 49):.17g}" for i in range(50)]),
]
EPOCHS, LOG_EVERY = 200, 10


def config_yaml(exp: str, key: str, value: str, seed: int) -> str:
    import yaml

    config = {"exp_name": exp, "seed": seed, "device": "auto", "threads": 1,
              "dataset": {"name": "spirals", "n_samples": 600, "noise": 0.1, "val_fraction": 0.2,
                          "test_fraction": 0.2, "classes": 2, "seed": 0},
              "model": {"hidden": [32, 32], "dropout": 0.0, "init_std": None}, "activation": {"name": "relu"},
              "loss": {"name": "bce"}, "optimizer": {"name": "adam", "lr": 0.01},
              "train": {"epochs": EPOCHS, "batch_size": None, "log_every": LOG_EVERY,
                        "early_stopping": {"patience": None, "monitor": "loss/val"}}}
    section, _, leaf = key.rpartition(".")
    (config[section] if section else config)[leaf or key] = yaml.safe_load(value)
    return yaml.safe_dump(config)


def write_run(run_dir: Path, exp: str, key: str, value: str, seed: int, finished: bool, picture) -> None:
    """One run dir as a 200-epoch run of `exp` leaves it, with made-up but plausible numbers."""
    import yaml

    overrides = [f"+exp={exp}", f"{key}={value}", f"seed={seed}"]
    (run_dir / ".hydra").mkdir(parents=True)
    text = config_yaml(exp, key, value, seed)
    (run_dir / ".hydra" / "config.yaml").write_text(text)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": "train"}}}))
    (run_dir / "train.log").write_text("")
    logger = RunLogger(run_dir, text)
    rate = 0.002 + 0.001 * (hash((exp, value)) % 7) + 0.0001 * seed
    curve = {}
    for epoch in [1, *range(LOG_EVERY, EPOCHS + 1, LOG_EVERY)]:
        loss = 0.69 * (1 - rate) ** epoch + 0.05
        curve = {"loss/train": loss * 0.9, "loss/val": loss, "accuracy/train": 1 - loss / 2,
                 "accuracy/val": 1 - loss / 1.8, "lr": 0.01}
        logger.scalars(epoch, curve)
        if epoch in (1, EPOCHS):
            logger.image("pictures/decision_boundary", picture, epoch)
    final = {"loss/train": curve["loss/train"], "loss/val": curve["loss/val"],
             "accuracy/train": curve["accuracy/train"], "accuracy/val": curve["accuracy/val"],
             "accuracy/test": curve["accuracy/val"] - 0.01}
    logger.hparams({"exp_name": exp, key: value, "seed": seed}, final)
    logger.close()
    if finished:
        metrics.write_metrics(run_dir, metrics.build_metrics(
            status="completed", epochs_run=EPOCHS, best_epoch=EPOCHS, best_value=final["loss/val"],
            monitor="loss/val", final=final, wall_time_s=1.0, device="cpu", seed=seed, overrides=overrides))


def build(root: Path, n_runs: int) -> int:
    import numpy as np

    picture = np.full((3, 200, 200), 128, dtype=np.uint8)
    picture[0, :100] = 255  # two flat regions, as a decision boundary is
    per_sweep = -(-n_runs // len(SWEEPS))
    made = 0
    for exp, key, values in SWEEPS:
        sweep = root / "experiments" / exp / "multirun" / "2026-12-01_00-00-00"
        seeds = -(-per_sweep // len(values))
        for num, (value, seed) in enumerate((v, s) for s in range(seeds) for v in values):
            if made == n_runs or num == per_sweep:
                break
            write_run(sweep / f"{num}_{key}={value},seed={seed}", exp, key, value, seed, made % 100 != 99,
                      picture)
            made += 1
        (sweep / "multirun.yaml").write_text("hydra: {}\n")
    return made


def read_metrics_alone(root: Path) -> int:
    """The baseline: every metrics.json under root, found and parsed."""
    count = 0
    for dirpath, _, filenames in os.walk(root):
        if "metrics.json" in filenames:
            json.loads((Path(dirpath) / "metrics.json").read_text(encoding="utf-8"))
            count += 1
    return count


def read_every_event_file(root: Path) -> int:
    return sum(bool(report.read_curves(d)) for d in report.find_run_dirs(root))


def run_report(root: Path, out: Path, *args: str) -> None:
    os.environ["COLUMNS"] = "80"
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        assert report.main([str(root), "--out", str(out), *args]) == 0


def run_command(root: Path, out: Path) -> None:
    import subprocess

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-m", "nnrun", "report", str(root), "--out", str(out)], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def timed(fn, repeats: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `fn`, each the median of `repeats` calls after a first that warms the imports and
    the file system's cache. CPU time counts this process and the processes it waited for: on a shared machine
    under load it is the steadier figure."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), cpu_seconds()
        fn()
        walls.append(time.perf_counter() - began)
        cpus.append(cpu_seconds() - began_cpu)
    return statistics.median(walls), statistics.median(cpus)


def cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 runs, 1 repeat")
    args = parser.parse_args()
    n_runs, repeats = (200, 1) if args.quick else (args.runs, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "work", Path(tmp) / "out"
        began = time.perf_counter()
        made = build(root, n_runs)
        print(f"built {made} run dirs in {time.perf_counter() - began:.1f} s")
        experiments = root / "experiments"
        base = timed(lambda: read_metrics_alone(experiments), repeats)
        table = timed(lambda: run_report(experiments, out, "--no-plot"), repeats)
        full = timed(lambda: run_report(experiments, out), repeats)
        command = timed(lambda: run_command(experiments, out), repeats)
        events = timed(lambda: read_every_event_file(experiments), 1)
        rows = len(list(csv_rows(out / "report.csv")))
    assert rows == made, (rows, made)
    print(f"{'what':<46} {'wall s':>7} {'× base':>7} {'CPU s':>7} {'× base':>7}")
    for name, (wall, cpu) in [(f"baseline: {made} metrics.json read with json", base),
                              ("nnrun report DIR --no-plot", table),
                              ("nnrun report DIR (report.png too)", full),
                              ("python -m nnrun report DIR (a new process)", command),
                              ("every event file read (EventAccumulator)", events)]:
        print(f"{name:<46} {wall:>7.2f} {wall / base[0]:>6.1f}× {cpu:>7.2f} {cpu / base[1]:>6.1f}×")
    print(f"bar: {made} runs in under 5 s: {'met' if command[0] < 5 else 'NOT met'} ({command[0]:.2f} s wall, "
          f"{command[1]:.2f} s CPU, a new process; load average {os.getloadavg()[0]:.1f})")


def csv_rows(path: Path):
    import csv

    with path.open(newline="") as handle:
        yield from csv.DictReader(handle)


if __name__ == "__main__":
    main()
