"""The multirun side of `nnrun train -m`: a Hydra callback that prepares a sweep and sums it up when it ends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SQLITE_PREFIX = "sqlite:///"


def worst_value(direction: str) -> float:
    """What a failed trial scores: below every result when maximising, above every one when minimising."""
    return float("-inf") if direction.lower().endswith("maximize") else float("inf")


def sqlite_path(storage: Any) -> Path | None:
    """The file of an Optuna 'sqlite:///path' storage URL (relative paths stay relative), else None."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE_PREFIX):
        return None
    path = storage[len(SQLITE_PREFIX):]
    return Path(path) if path and path != ":memory:" else None


def job_statuses(sweep_dir: Path) -> list[str]:
    """The status of each job dir of a sweep; a job with no metrics.json never trained or was killed: failed."""
    from nnrun.metrics import read_metrics

    job_dirs = sorted({p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")})
    return [(read_metrics(d) or {}).get("status", "failed") for d in job_dirs]


class SweepSummary(Callback):
    """Before a sweep, make the dir of an SQLite study; after each job, keep a failure from ending an Optuna
    search; after the sweep, one table of how the jobs ended."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # SQLite creates the file but not its dir, and Optuna opens the study before the first job
        # (which is what would create experiments/<exp>/).
        path = sqlite_path(config.hydra.sweeper.get("storage"))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        # A failed job returns NaN. Optuna's tell() rejects NaN, and Hydra's Optuna sweeper then ends the
        # whole search; the worst value for the study's direction lets the search go on past that trial.
        # Runs in the job's own process (joblib, submitit), before the return value travels back.
        direction = config.hydra.sweeper.get("direction")  # only a sweeper that optimises has one
        if isinstance(direction, str) and job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            if isinstance(value, float) and math.isnan(value):
                job_return.return_value = worst_value(direction)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nnrun.console import print_sweep_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = job_statuses(sweep_dir)
        print_sweep_summary(str(sweep_dir), statuses, len(statuses),
                            best_trial=_optuna_best(sweep_dir / "optimization_results.yaml"))


def _optuna_best(path: Path) -> str | None:
    """'best value 0.97 with optimizer.lr=0.01 ...' from the Optuna sweeper's results file, if it wrote one."""
    import yaml

    try:
        results = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(results, dict) or "best_value" not in results:
        return None
    params = " ".join(f"{k}={v}" for k, v in (results.get("best_params") or {}).items())
    return f"best value {results['best_value']:.4f} with {params}"
