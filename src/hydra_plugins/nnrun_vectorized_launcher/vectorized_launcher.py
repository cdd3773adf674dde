"""A Hydra launcher that trains a sweep's jobs as stacked models (nnrun.vectorized), K jobs per stack.

Each job still gets its own run dir exactly as Hydra's basic launcher makes it (`_set_up_job` does what
Hydra's `run_job` does around a task: output dir, `.hydra/`, the job's log, callbacks), then the jobs that can
share a stack train together, and each job's TensorBoard events, metrics.json and checkpoint.pt are written
through the engine's own code; its callbacks' on_job_end follows with its result.
"""

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where dataclass
# cannot resolve string annotations.
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Sweepers that hand their jobs to `launch` as lists of overrides (grid sweeps, Optuna's batches of trials).
SERVED_SWEEPERS = ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                   "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper")


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.nnrun_vectorized_launcher.vectorized_launcher.VectorizedLauncher"
    # The most models in one stack; a bigger sweep runs in chunks.
    max_models: int = 256
    # Memory one stack may use (parameters, gradients, optimizer state, activations); caps models per stack.
    memory_budget_mb: int = 1024


ConfigStore.instance().store(group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf,
                             provider="nnrun")


def _bad_input(message: str) -> None:
    from nnrun.app import fail

    fail(message)


class VectorizedLauncher(Launcher):
    def __init__(self, max_models: int = 256, memory_budget_mb: int = 1024) -> None:
        self.max_models, self.memory_budget_mb = max_models, memory_budget_mb
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        self.configs: Any = None  # sweep_configs.CachedSweepConfigs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_")
        if sweeper not in SERVED_SWEEPERS:
            _bad_input(f"hydra/launcher=vectorized cannot serve the sweeper {sweeper}: it serves Hydra's basic "
                       "sweeper and hydra/sweeper=optuna")
        # One full composition per distinct set of group choices, for this launcher and the sweeper's checks.
        from hydra_plugins.nnrun_vectorized_launcher import sweep_configs

        self.configs = sweep_configs.install(hydra_context.config_loader)
        if not isinstance(self.max_models, int) or self.max_models < 1:
            _bad_input(f"hydra.launcher.max_models={self.max_models} is not allowed: an integer >= 1")

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import (JobLogs, YamlSections,
                                                                          interpolations_parsed_once)

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        # --- every job's run dir, as the basic launcher makes it; configs validated before any training ---
        yamls, logs = YamlSections(), JobLogs()
        returns, jobs, configs = [], [], []
        with interpolations_parsed_once():
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                # The configs composed for the sweeper's check of this job.
                job_configs = self.configs.take(self.config, list(overrides))
                ret, job = _set_up_job(self.hydra_context, job_configs, idx, yamls, logs)
                returns.append(ret)
                jobs.append(job)
                configs.append(job_configs.config)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

        objectives = self.train(jobs)
        # Each job ends (its callbacks' on_job_end) once its result is known, as in Hydra's run_job.
        saved = HydraConfig.instance().cfg
        try:
            for ret, job, sweep_config in zip(returns, jobs, configs):
                ret.return_value = objectives.get(id(job), math.nan)
                HydraConfig.instance().cfg = ret.hydra_cfg
                self.hydra_context.callbacks.on_job_end(config=sweep_config, job_return=ret)
        finally:
            HydraConfig.instance().cfg = saved
        return returns

    def train(self, jobs: List[Any]) -> Dict[int, float]:
        """Train the jobs in stacks; the objective (best monitored value, NaN if none) per job by id()."""
        import torch

        from nnrun import engine
        from nnrun.config import ConfigError
        from nnrun.data import load
        from nnrun.vectorized import batching
        from nnrun.vectorized.trainer import train_stack

        groups = batching.group(jobs, lambda job: batching.batch_key(job.cfg))
        if len(groups) > 1:
            print(f"nnrun: these {len(jobs)} jobs differ in more than per-model values (data, architecture, "
                  f"loss, batch size, ...): {len(groups)} separate stacks", file=sys.stderr)
        objectives: Dict[int, float] = {}
        for stack in groups:
            try:  # once per stack: its data size the stack, and every chunk of it trains on them
                data = load(stack[0].cfg.dataset)
            except ConfigError as exc:  # a data file that cannot be read: bad input, as for a single run
                _bad_input(str(exc))
            for chunk in batching.chunks(stack, self.stack_size(stack[0].cfg, data)):
                torch.set_num_threads(chunk[0].cfg.threads)
                started = time.perf_counter()
                try:
                    results = train_stack(chunk, data)
                except ConfigError as exc:
                    _bad_input(str(exc))
                except engine.RunInterrupted as exc:
                    print(f"nnrun: {exc}", file=sys.stderr)
                    sys.exit(130)
                except Exception as exc:
                    # One faulty stack is a result (status failed in its jobs' metrics.json); the others go on.
                    print(f"nnrun: a stack of {len(chunk)} jobs failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
                    continue
                for job, result in zip(chunk, results):
                    objectives[id(job)] = result.objective
                statuses = [r.status for r in results]
                print(f"nnrun: trained {len(chunk)} jobs as one stacked model in "
                      f"{time.perf_counter() - started:.2f} s ("
                      + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) + ")")
        return objectives

    def stack_size(self, cfg, data) -> int:
        """Models per stack: hydra.launcher.max_models, and what the memory budget holds for these data."""
        from nnrun.losses import LOSSES
        from nnrun.vectorized import batching

        rows = max(len(data.train), len(data.val), len(data.test))
        per_model = batching.bytes_per_model(cfg, data.n_features, LOSSES[cfg.loss].n_outputs(data.n_classes),
                                             rows, min(cfg.train.batch_size or rows, rows))
        return batching.models_per_stack(per_model, self.memory_budget_mb * 2**20, self.max_models)


def _set_up_job(hydra_context: HydraContext, job_configs: Any, idx: int, yamls: Any,
                logs: Any) -> Tuple[JobReturn, Any]:
    """What Hydra's launcher and `run_job` do for job number `idx` before its task, without running a task: the
    job's numbers and output dir in its config, HydraConfig set to it, `.hydra/` (config.yaml, hydra.yaml,
    overrides.yaml, the same text as Hydra's `_save_config` writes, through `yamls`, a
    sweep_configs.YamlSections), its log (through `logs`, a sweep_configs.JobLogs), the callbacks'
    on_job_start; then the job's validated config and run dir for training. (`run_job` copies the whole config
    three times per job; `job_configs`, a sweep_configs.JobConfigs, holds those copies already, and on a sweep
    of small networks that difference is most of the launcher's time.)"""
    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import set_hydra
    from nnrun import config as schema
    from nnrun.config import ConfigError
    from nnrun.vectorized.trainer import Job

    config, task_cfg, hydra_cfg = job_configs[:3]
    set_hydra(job_configs, {("job", "id"): idx, ("job", "num"): idx})
    output_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
        OmegaConf.select(config, "hydra.sweep.subdir"))
    run_dir = Path(os.path.abspath(output_dir))
    set_hydra(job_configs, {("runtime", "output_dir"): str(run_dir)})
    saved = HydraConfig.instance().cfg
    # HydraConfig.set_config(config), with its part of the config at hand: JobConfigs' hydra part holds the
    # config's own hydra node, parented to the config as set_config parents its copy.
    OmegaConf.set_readonly(config.hydra, True)
    HydraConfig.instance().cfg = hydra_cfg
    try:
        ret = JobReturn(overrides=list(config.hydra.overrides.task), cfg=task_cfg, hydra_cfg=hydra_cfg,
                        working_dir=os.getcwd(), task_name=str(config.hydra.job.name))
        output_dir.mkdir(parents=True, exist_ok=True)
        logs.configure(config.hydra.job_logging, config.hydra.verbose)  # Hydra's configure_log, cheaper
        # The task's config as plain containers, as written (config.yaml) and resolved (what the run logs and
        # trains with): one and the same where it holds no interpolation.
        task_plain = OmegaConf.to_container(task_cfg, enum_to_str=True)
        resolved = OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True) \
            if _has_interpolation(task_plain) else task_plain
        if config.hydra.output_subdir is not None:
            hydra_output = output_dir / str(config.hydra.output_subdir)
            hydra_output.mkdir(parents=True, exist_ok=True)
            plain_hydra = job_configs.plain_hydra()
            for name, plain in (("config.yaml", task_plain), ("hydra.yaml", plain_hydra),
                                ("overrides.yaml", plain_hydra["hydra"]["overrides"]["task"])):
                with open(hydra_output / name, "w", encoding="utf-8") as file:
                    file.write(yamls.dump_plain(plain))
        try:
            parsed = schema.parse(resolved)  # the same TrainConfig as from the DictConfig, read faster
        except ConfigError as exc:
            _bad_input(str(exc))
        job = Job(parsed, run_dir, list(ret.overrides), yamls.dump_plain(resolved))
        hydra_context.callbacks.on_job_start(config=config, task_function=None)
        ret.status = JobStatus.COMPLETED
        return ret, job
    finally:
        HydraConfig.instance().cfg = saved


def _has_interpolation(plain: Any) -> bool:
    """Whether a plain container (OmegaConf.to_container, unresolved) holds a `${...}` anywhere."""
    if isinstance(plain, dict):
        return any(_has_interpolation(value) for value in plain.values())
    if isinstance(plain, list):
        return any(_has_interpolation(item) for item in plain)
    return isinstance(plain, str) and "${" in plain
