"""A Hydra launcher that trains a sweep's jobs as stacks of models: `nnrun train -m hydra/launcher=vectorized ...`.

Shaped as Hydra's basic launcher: each job's config is composed (`sweep_configs.SweepConfigs`, equal to
`load_sweep_config`'s), numbered and run through Hydra's own `run_job`, which makes its run dir, `.hydra/`,
its log and calls the callbacks. nnrun's task, run inside `sweep.collecting_jobs()`, only sets its job up there;
once every job is, `engine.train_jobs` trains them together (the stacks of `nnrun.stacking`), and each job's
return value is its result. Any other task function runs job by job, as under the basic launcher.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where dataclass
# cannot resolve string annotations.
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.nnrun_vectorized_launcher.vectorized_launcher.VectorizedLauncher"
    # The most models in one stack; a bigger sweep runs in chunks.
    max_models: int = 256
    # Memory one stack may use (parameters, gradients, optimizer state, activations); caps models per stack.
    memory_budget_mb: int = 1024


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="nnrun")


class VectorizedLauncher(Launcher):
    def __init__(self, max_models: int = 256, memory_budget_mb: int = 1024) -> None:
        self.max_models, self.memory_budget_mb = max_models, memory_budget_mb
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        for key in ("max_models", "memory_budget_mb"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                bad_input(f"hydra.launcher.{key}={value} is not allowed: an integer >= 1")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import SweepConfigs
        from nnrun.sweep import collecting_jobs

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, stacked")
        configs = SweepConfigs(self.hydra_context.config_loader, self.config)
        runs: List[Any] = []  # (JobReturn, the job its task set up for training, or None)
        with collecting_jobs() as collected:
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                sweep_config = configs.load(list(overrides))
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = idx
                    sweep_config.hydra.job.num = idx
                before = len(collected)
                ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                              config=sweep_config, job_dir_key="hydra.sweep.dir",
                              job_subdir_key="hydra.sweep.subdir")
                runs.append((ret, collected[before] if len(collected) > before else None))
                # As Hydra's basic launcher: the launcher's own logging again, not the job's log file.
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self.train([(ret, job) for ret, job in runs if job is not None])
        return [ret for ret, _ in runs]

    def train(self, runs: List[Any]) -> None:
        """Train the collected jobs; each one's return value is what its task would have returned."""
        if not runs:
            return
        from nnrun import engine
        from nnrun.sweep import objective
        from nnrun.config import ConfigError

        jobs = [job for _, job in runs]
        try:
            results = engine.train_jobs(jobs, max_models=self.max_models, memory_budget_mb=self.memory_budget_mb,
                                        raise_faults=False, announce=True)
        except ConfigError as exc:  # bad input found while the stacks are set up: before any training
            bad_input(str(exc))
        except engine.RunInterrupted as exc:
            print(f"nnrun: {exc}", file=sys.stderr)
            sys.exit(130)
        for (ret, _), result in zip(runs, results):
            ret.return_value = objective(result, ret.hydra_cfg.hydra)


def bad_input(message: str) -> None:
    from nnrun.app import fail

    fail(message)
