"""The multirun side of `nnrun train -m`: the task's return value, resuming a sweep, the jobs a stacking
launcher collects, a Hydra callback that prepares a sweep (checking that a resumed one is the same sweep) and
sums it up when it ends, and the sampler of nnrun's Optuna searches."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SQLITE_PREFIX = "sqlite:///"
RESUME_KEY = "train.resume"


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


def objective(result, hydra_cfg: DictConfig) -> float:
    """What the task returns to a sweeper: the run's best monitored value. A run without one (failed) scores
    NaN, or where the sweeper optimises a direction (Optuna) the worst value for it: Optuna rejects NaN, and
    Hydra's Optuna sweeper would then end the whole search."""
    value = float("nan") if result is None else result.objective
    direction = OmegaConf.select(hydra_cfg, "sweeper.direction", default=None)
    if isinstance(direction, str) and value != value:
        return worst_value(direction)
    return value


@contextlib.contextmanager
def collecting_jobs() -> Iterator[list]:
    """While it lasts, nnrun's task sets its job up (run dir, validated config, where it resumes from) and
    hands it to the list this yields (`collect`) instead of training it: the vectorized launcher runs each job
    through Hydra's own `run_job`, then trains the jobs it collected as stacks."""
    global _collected
    outer, _collected = _collected, []
    try:
        yield _collected
    finally:
        _collected = outer


_collected: list | None = None


def collect(job: Any) -> bool:
    """Hand `job` to the launcher collecting jobs, if one is; False: the task trains it itself."""
    if _collected is None:
        return False
    _collected.append(job)
    return True


def without_resume(overrides) -> list[str]:
    """A job's override lines less train.resume: what names the same job in the sweep it resumes."""
    return [line for line in overrides if line.split("=", 1)[0].lstrip("+~") != RESUME_KEY]


def resume_sweep_dir(exp_name: str, resume: str, current: Path, root: Path = Path(".")) -> Path:
    """The sweep that `train.resume` names for a sweep: a sweep dir (one holding Hydra's multirun.yaml), or
    `latest`, the newest other sweep of this exp_name under `root`/experiments."""
    from nnrun.config import ConfigError

    if resume == "latest":
        sweeps = root / "experiments" / exp_name / "multirun"
        mine = Path(current).resolve()
        candidates = sorted(p for p in sweeps.glob("*/multirun.yaml") if p.parent.resolve() != mine)
        if not candidates:
            raise ConfigError(RESUME_KEY, resume, f"a sweep to resume; there is none under {sweeps}")
        return candidates[-1].parent
    path = Path(resume).expanduser()
    if not (path / "multirun.yaml").is_file():
        raise ConfigError(RESUME_KEY, resume, "in a sweep (-m), a sweep dir (one holding multirun.yaml) or latest")
    return path


def same_job(sweep_dir: Path, overrides) -> Path | None:
    """The job dir of `sweep_dir` that ran with these overrides (train.resume aside), None if there is none."""
    import yaml

    wanted = sorted(without_resume(overrides))
    for path in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        if sorted(without_resume(yaml.safe_load(path.read_text(encoding="utf-8")) or [])) == wanted:
            return path.parent.parent
    return None


def check_same_sweep(config: DictConfig) -> None:
    """A sweep resumed with train.resume must be the one it resumes: the same command line (train.resume
    aside) and the same swept values. Raises ConfigError naming the first difference."""
    from omegaconf import OmegaConf

    from nnrun.config import ConfigError

    resume = OmegaConf.select(config, RESUME_KEY, default=None)
    if resume is None:
        return
    source = resume_sweep_dir(str(config.exp_name), str(resume), Path(config.hydra.sweep.dir),
                              Path(config.hydra.runtime.cwd))
    before = OmegaConf.load(source / "multirun.yaml")

    def sweep_of(cfg: DictConfig) -> dict[str, str]:
        lines = without_resume(OmegaConf.to_container(cfg.hydra.overrides.task))
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        return {**{str(k): str(v) for k, v in params.items()},
                **dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)}

    then, now = sweep_of(before), sweep_of(config)
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            was = f"{key}={then[key]}" if key in then else f"no {key}"
            has = f"{key}={now[key]}" if key in now else f"no {key}"
            raise ConfigError(RESUME_KEY, resume, f"the same sweep as the one it resumes; {source} ran with {was}, "
                                                  f"this one has {has}")


class SweepSummary(Callback):
    """Before a sweep, check that a resumed sweep is the one it resumes and make the dir of an SQLite study;
    after the sweep, one table of how the jobs ended, and their statuses in `SweepSummary.statuses`."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from nnrun.config import ConfigError

        try:
            check_same_sweep(config)
        except ConfigError as exc:
            from nnrun.app import fail

            fail(str(exc))
        # SQLite creates the file but not its dir, and Optuna opens the study before the first job
        # (which is what would create experiments/<exp>/).
        path = sqlite_path(config.hydra.sweeper.get("storage"))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nnrun.console import print_sweep_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = job_statuses(sweep_dir)
        print_sweep_summary(str(sweep_dir), statuses, len(statuses),
                            best_trial=_optuna_best(sweep_dir / "optimization_results.yaml"))
        # Kept for `nnrun train`'s exit code: 1 when a job failed (a fault; diverged is a result). This runs in
        # the process that started the sweep, under every launcher.
        SweepSummary.statuses = statuses


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
