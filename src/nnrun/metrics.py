"""metrics.json: the one-object summary of a run, and the atomic file writes every output relies on."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

STATUSES = ("completed", "stopped_early", "diverged", "interrupted", "failed")
FINAL_KEYS = ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "accuracy/test")
METRICS_FILE = "metrics.json"


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: a non-finite metric is reported as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write through a temp file in the same dir, then rename: a crash mid-write leaves the old file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> Path:
    path = Path(run_dir) / METRICS_FILE
    atomic_write(path, lambda f: json.dump(metrics, f, indent=2, allow_nan=False))
    return path


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it is absent or unreadable (a run still going, or killed)."""
    try:
        return json.loads((Path(run_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build_metrics(*, status: str, epochs_run: int, best_epoch: int, best_value: float | None,
                  monitor: str, final: dict[str, float | None], wall_time_s: float, device: str, seed: int,
                  overrides: list[str]) -> dict[str, Any]:
    assert status in STATUSES, status
    return {
        "status": status,
        "epochs_run": int(epochs_run),
        "best": {"epoch": int(best_epoch), monitor: finite_or_none(best_value)},
        "final": {key: finite_or_none(final.get(key)) for key in FINAL_KEYS},
        "wall_time_s": round(float(wall_time_s), 4),
        "device": device,
        "seed": int(seed),
        "overrides": list(overrides),
    }
