"""metrics.json: the one-object summary of a run, and its line in the run's log; the atomic file writes every
output relies on; reading the YAML files beside it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import yaml

STATUSES = ("completed", "stopped_early", "diverged", "interrupted", "failed")
# A run with one of these is over (all are results): a resumed sweep carries such a job over, untrained.
FINISHED = ("completed", "stopped_early", "diverged")
FINAL_KEYS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "accuracy/test")
METRICS_FILE = "metrics.json"
LOG_FILE = "train.log"  # Hydra's job log (conf/train.yaml: hydra.job.name is train), which a run's lines join


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite metric is reported as null."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through a temp file `.<name>.<random>.tmp` in the same dir, then rename: a crash mid-write leaves the
    old file. The temp file is made with mode 0o666 less the umask (what `open()` would give), not mkstemp's 0o600:
    results on a shared machine stay as readable as the user's other files. The kernel applies the umask at
    creation, so it is never read (reading it means setting it, which races with other threads)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)  # O_EXCL: the temp file is ours alone
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        with contextlib.suppress(FileExistsError):  # 48 random bits taken already: draw again
            fd = os.open(tmp, flags, 0o666)
            break
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    path = Path(run_dir) / METRICS_FILE
    atomic_write(path, lambda f: json.dump(metrics, f, indent=2, allow_nan=False))
    return path


def in_layout(path: Path, kind: str) -> bool:
    """Whether `path`, as named (not where links lead), is one of nnrun's own dirs, experiments/<exp>/<kind>/<name>:
    a run's (`kind` runs) or a sweep's (multirun)."""
    above = Path(os.path.abspath(path)).parents
    return len(above) > 2 and (above[0].name, above[2].name) == (kind, "experiments")


def log_line(run_dir: Path, message: str) -> None:
    """`message` appended to the run's train.log in Hydra's format ([time][nnrun][INFO] - ...): under every launcher,
    and for each run of a stack, which trains while the launcher's own logging is set (no run's file)."""
    try:
        handler = logging.FileHandler(Path(run_dir) / LOG_FILE, encoding="utf-8")
    except OSError:  # the run dir is gone (removed while the run was going): its result is told elsewhere
        return
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.handle(logging.LogRecord("nnrun", logging.INFO, __file__, 0, message, None, None))
    handler.close()


def result_line(metrics: dict[str, Any]) -> str:
    """A run's metrics.json in one line of its log: 'completed after 200 epochs (1.52 s on cpu): best loss/val
    0.0123 at epoch 180; final loss/train 0.01, ...'."""
    monitor, value = next((k, v) for k, v in metrics["best"].items() if k != "epoch")
    final = ", ".join(f"{key} {_shown(value)}" for key, value in metrics["final"].items())
    status = {"diverged": "diverged (its loss became inf or NaN)"}.get(metrics["status"], metrics["status"])
    epochs = metrics["epochs_run"]
    return (f"{status.replace('_', ' ')} after {epochs} epoch{'' if epochs == 1 else 's'} "
            f"({metrics['wall_time_s']} s on {metrics['device']}): best {monitor} {_shown(value)} at epoch "
            f"{metrics['best']['epoch']}; final {final}")


def _shown(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is absent, unreadable or not one object (a run still going, or
    killed; a file of something else)."""
    try:
        saved = json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def build_metrics(*, status: str, epochs_run: int, best_epoch: int, best_value: float | None,
                  monitor: str, final: dict[str, float | None], wall_time_s: float, device: str, seed: int,
                  overrides: list[str]) -> dict[str, Any]:
    assert status in STATUSES, status
    return {"status": status, "epochs_run": int(epochs_run),
            "best": {"epoch": int(best_epoch), monitor: finite_or_none(best_value)},
            "final": {key: finite_or_none(final.get(key)) for key in FINAL_KEYS},
            "wall_time_s": round(float(wall_time_s), 4), "device": device, "seed": int(seed),
            "overrides": list(overrides)}


def write_failed(run_dir: Path, reason: str, *, monitor: str, seed: int, overrides: list[str]) -> None:
    """A run that failed before it trained: its metrics.json says so (nnrun report lists it failed, not unfinished),
    its log says why."""
    write_metrics(run_dir, build_metrics(status="failed", epochs_run=0, best_epoch=0, best_value=None, monitor=monitor,
                                         final={}, wall_time_s=0.0, device="cpu", seed=seed, overrides=overrides))
    log_line(run_dir, f"failed: {reason}")


def read_yaml(path: Path) -> Any:
    """A YAML file of a run or sweep (Hydra's .hydra/*.yaml, Optuna's results), None when it cannot be read.
    libyaml's safe loader where PyYAML has it: a run's config.yaml in a millisecond, not ten."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
