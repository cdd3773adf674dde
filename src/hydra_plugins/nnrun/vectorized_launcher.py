"""A Hydra launcher that trains a sweep's jobs as stacks of models: `nnrun train -m hydra/launcher=vectorized ...`.

Shaped as Hydra's basic launcher: each job's config (the one nnrun's sweeper checked, else `SweepConfigs`') runs
through Hydra's `run_job` with the task's `set_up`, which only makes the job ready to train; then
`engine.train_jobs` trains them all together.
A job that a resumed sweep carries over (the task's `carry`) skips run_job. A task without `set_up` runs job by job.
"""

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.nnrun.sweep_configs import SweepConfigs, young_garbage_only
from nnrun.config import ConfigError
from nnrun.console import Phase, fail
from nnrun.sweep import discard_launch, objective

log = logging.getLogger(__name__)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.nnrun.vectorized_launcher.VectorizedLauncher"
    max_models: int = 256  # the most models in one stack; a bigger sweep runs in chunks
    # Memory one stack may use (parameters, gradients, optimizer state, activations); caps models per stack.
    memory_budget_mb: int = 1024


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="nnrun")


class VectorizedLauncher(Launcher):
    def __init__(self, max_models: int = 256, memory_budget_mb: int = 1024) -> None:
        self.max_models, self.memory_budget_mb = max_models, memory_budget_mb
        self.checked: Dict[Tuple[str, ...], Tuple[DictConfig, Any]] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        for key in ("max_models", "memory_budget_mb"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(f"hydra.launcher.{key}={value} is not allowed: an integer >= 1")

    def use_checked(self, checked: Dict[Tuple[str, ...], Tuple[DictConfig, Any]]) -> None:
        """The configs nnrun's sweeper checked, by overrides, with what the check made of each: not composed again."""
        self.checked = checked

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        made = [] if (sweep_dir / ".submitit").exists() else [sweep_dir / ".submitit"]  # what a refusal removes
        set_up = getattr(self.task_function, "set_up", None)
        configs = SweepConfigs(self.hydra_context.config_loader, self.config)
        runs: List[JobReturn] = []
        if set_up is None:
            log.info(f"Launching {len(job_overrides)} jobs locally")
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                runs.append(self.run(numbered(configs.load(list(overrides)), idx), self.task_function))
            return runs

        from nnrun import engine  # torch

        carry = getattr(self.task_function, "carry", None)
        with Phase("setting up", "set up", len(job_overrides)) as phase, young_garbage_only() as collect:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                cfg, checked = self.checked.pop(tuple(overrides), (None, None))
                cfg = numbered(configs.load(list(overrides)) if cfg is None else cfg, idx)
                made += new_dir(sweep_dir, Path(str(cfg.hydra.sweep.subdir)))
                carried = None if carry is None else carry(cfg, cfg.hydra)
                if carried is None:
                    runs.append(self.run(cfg, functools.partial(set_up, checked=checked)))
                else:  # a finished job of the sweep this one resumes: no set-up at all
                    runs.append(JobReturn(overrides=list(overrides), cfg=cfg, hydra_cfg=cfg, task_name=str(
                        cfg.hydra.job.name), working_dir=os.getcwd(), status=JobStatus.COMPLETED))
                    runs[-1].return_value = carried
                collect()
                phase.advance()
        # As Hydra's basic launcher: the launcher's own logging again, not the last job's log file.
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        try:
            self.train([(ret, ret.return_value) for ret in runs
                        if ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, engine.Job)])
        except ConfigError as exc:  # bad input found while the stacks are set up, or sbatch refused them
            discard_launch(sweep_dir, made, Path(str(self.config.hydra.runtime.cwd)))  # nothing trained: none left
            fail(str(exc))
        return runs

    def run(self, cfg: DictConfig, task: Any) -> JobReturn:
        return run_job(hydra_context=self.hydra_context, task_function=task, config=cfg,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

    def train(self, runs: List[Any]) -> None:
        """Train `runs` (JobReturn, engine.Job); each one's return value becomes what its task would have returned."""
        if not runs:
            return
        results = self.results(runs)  # ConfigError: before any training
        for (ret, _), result in zip(runs, results):
            ret.return_value = objective(result, ret.hydra_cfg.hydra)

    def results(self, runs: List[Any]) -> List[Any]:
        """The results (engine.RunResult; None: failed) of the jobs of `runs`, trained here."""
        from nnrun import engine  # torch

        return engine.train_jobs([job for _, job in runs], max_models=self.max_models,
                                 memory_budget_mb=self.memory_budget_mb, raise_faults=False, announce=True)


def numbered(cfg: DictConfig, idx: int) -> DictConfig:
    """A job's config with its number (hydra.job.id and num), as Hydra's basic launcher numbers it."""
    with open_dict(cfg):
        cfg.hydra.job.id = cfg.hydra.job.num = idx
    return cfg


def new_dir(parent: Path, sub: Path) -> List[Path]:
    """[the outermost dir of `parent / sub` below `parent` that is not there yet], or [] when it all is."""
    for depth in range(1, len(sub.parts) + 1):
        if not (parent / Path(*sub.parts[:depth])).exists():
            return [parent / Path(*sub.parts[:depth])]
    return []
