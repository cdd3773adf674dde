"""The multirun side of `nnrun train -m`: a Hydra callback that prepares a sweep and sums it up when it ends,
and the sampler of nnrun's Optuna searches."""

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


def resumable_tpe_sampler(seed: int | None = None, **options: Any) -> Any:
    """Optuna's TPE sampler, seeded with `seed` plus the number of trials the study holds when this process first
    samples from it; `options` are TPESampler's other arguments (hydra.sweeper.sampler's fields).

    Hydra's Optuna sweeper loads a stored study and TPE sees its trials, but a seeded TPESampler starts its
    random stream afresh in every process, so the first (random, `n_startup_trials`) proposals of a resumed study
    would repeat the first run's. The offset gives each invocation a new stream, and the same starting study and
    seed still give the same proposals.
    """
    from optuna.samplers import BaseSampler, TPESampler

    class ResumableTPESampler(BaseSampler):  # defined here: optuna is an extra, and heavy to import
        def __init__(self) -> None:
            self.tpe: TPESampler | None = None

        def sampler(self, trial: Any) -> TPESampler:
            if self.tpe is None:  # the first trial this process asks for: its number = trials stored before it
                self.tpe = TPESampler(seed=None if seed is None else seed + trial.number, **options)
            return self.tpe

        def infer_relative_search_space(self, study, trial):
            return self.sampler(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.sampler(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.sampler(trial).sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values):
            self.sampler(trial).after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            if self.tpe is not None:
                self.tpe.reseed_rng()

    return ResumableTPESampler()


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
