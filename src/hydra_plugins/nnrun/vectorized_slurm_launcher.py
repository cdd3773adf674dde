"""A Hydra launcher that submits a sweep's stacks as SLURM jobs: `nnrun train -m hydra/launcher=vectorized_slurm ...`.

The vectorized launcher with its training moved onto the cluster: each job's `set_up` runs in the launching
process, then each stack that `engine.train_jobs` would train (`plan_stacks`) becomes one task of a submitit job
array that trains it on a node, writing into the run dirs on the shared file system. SLURM's SIGTERM and the
SIGUSR2 sent `signal_delay_s` before the time limit save every unfinished run `interrupted` with its checkpoint;
the same command with `train.resume=latest` goes on from there.
"""

import functools
import io
import sys
import time
from contextlib import redirect_stderr
from dataclasses import dataclass, fields
from typing import Any, Dict, List

from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nnrun.vectorized_launcher import VectorizedLauncher, VectorizedLauncherConf
from nnrun.config import UsageError
from nnrun.console import counted, fail, plural
from nnrun.metrics import read_metrics

try:  # Hydra's submitit plugin, of nnrun's sweep extra; without it nnrun's pre-flight says what to install
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
except ImportError:
    SlurmQueueConf = None

if SlurmQueueConf is not None:
    @dataclass
    class VectorizedSlurmLauncherConf(SlurmQueueConf, VectorizedLauncherConf):
        """hydra/launcher=submitit_slurm's settings (partition, timeout_min, ..., submitit_folder), with its
        defaults, and the vectorized launcher's (max_models, memory_budget_mb)."""

        _target_: str = "hydra_plugins.nnrun.vectorized_slurm_launcher.VectorizedSlurmLauncher"

    ConfigStore.instance().store(group="hydra/launcher", name="vectorized_slurm", node=VectorizedSlurmLauncherConf,
                                 provider="nnrun")

# Numbers sbatch would take but that make no sense: (the least value, whether null, SLURM's default, is allowed).
# Their types are the config schema's (SlurmQueueConf), checked as Hydra composes it.
LEAST = {"timeout_min": (1, False), "signal_delay_s": (0, False), "array_parallelism": (1, False),
         "cpus_per_task": (1, True), "gpus_per_node": (0, True), "mem_gb": (1, True)}
# Settings a stack's job can honour only at one value: (that value, why)
ONLY = {"nodes": (1, "a stack trains in one process"), "tasks_per_node": (1, "a stack trains in one process"),
        "max_num_timeout": (0, "a stack cut by its time limit saves its runs interrupted, and the same command "
                               "with train.resume=latest goes on from there")}


def plan_stacks(jobs: List[Any], max_models: int, memory_budget_mb: int) -> List[List[Any]]:
    """The stacks (lists of jobs) `engine.train_jobs` trains (`engine.plan`), planned where the sweep is launched: a
    job whose data or checkpoint cannot be read there fails alone (`engine.fail_alone`), in no stack."""
    import torch

    from nnrun import engine

    # Only where each run starts is read here; the node trains on its own device.
    _, stacks = engine.plan(jobs, max_models=max_models, memory_budget_mb=memory_budget_mb, device=torch.device("cpu"),
                            refused=engine.fail_alone)
    return [[m.job for m in chunk] for *_, chunk in stacks]


class VectorizedSlurmLauncher(VectorizedLauncher):
    def __init__(self, max_models: int = 256, memory_budget_mb: int = 1024, **params: Any) -> None:
        super().__init__(max_models, memory_budget_mb)
        # The submitit plugin's settings (SlurmQueueConf's fields) as plain values, as that plugin keeps them
        self.params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                       for k, v in params.items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Settings that make no sense for a stack's job, or that submitit cannot take, are bad input. (nnrun's
        pre-flight has checked that this is a multirun and that sbatch is here.)"""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        params = dict(self.params)
        for key, (least, nullable) in LEAST.items():
            if params[key] is not None and params[key] < least:
                fail(f"hydra.launcher.{key}={params[key]} is not allowed: an integer >= {least}"
                     + (" or null" if nullable else ""))
        for key, (only, why) in ONLY.items():
            if params[key] != only:
                fail(f"hydra.launcher.{key}={params[key]} is not allowed: {only} ({why})")
        if params["signal_delay_s"] >= params["timeout_min"] * 60:
            fail(f"hydra.launcher.signal_delay_s={params['signal_delay_s']} is not allowed: less than "
                 f"hydra.launcher.timeout_min x 60 ({params['timeout_min'] * 60} s), or SLURM would signal each "
                 "stack to stop as it starts")
        import submitit

        # As the submitit plugin makes its executor: BaseQueueConf's fields are submitit's generic parameters, the
        # others take `slurm_`.
        folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
        generic = {f.name for f in fields(BaseQueueConf)}
        try:
            self.executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
            self.executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
        except (ValueError, TypeError, NameError, AssertionError, RuntimeError) as exc:
            fail(f"hydra/launcher=vectorized_slurm: {sbatch_error(str(exc))}")

    def results(self, runs: List[Any]) -> List[Any]:
        """Plan the stacks here (bad input comes before any submission), submit them as one SLURM job array and wait.
        Ctrl-C cancels the stacks still queued or running (each saves its runs `interrupted`), waits for them, and
        lets the interrupt go on up."""
        from submitit.core.utils import FailedJobError

        from nnrun import engine  # torch

        stacks = plan_stacks([job for _, job in runs], self.max_models, self.memory_budget_mb)
        if not stacks:  # every job failed as it was planned
            return [None] * len(runs)
        # Each stack's SLURM job: SIGTERM or SIGUSR2 saves its unfinished runs `interrupted` and returns.
        train = functools.partial(engine.train_jobs, max_models=self.max_models, announce=True,
                                  memory_budget_mb=self.memory_budget_mb, raise_faults=False, raise_interrupt=False)
        said = io.StringIO()  # submitit prints sbatch's stderr when it fails; it is the message, shown once below
        try:
            with redirect_stderr(said):
                jobs = self.executor.map_array(train, stacks)
        except FailedJobError as exc:
            raise UsageError(f"sbatch refused the sweep's jobs: {sbatch_error(str(exc) or said.getvalue())}") from None
        print(f"nnrun: {plural(len(stacks), 'stack')} submitted to SLURM as {ids(jobs)} "
              f"({sum(map(len, stacks))} jobs)", flush=True)
        number = {id(job): ret.hydra_cfg.hydra.job.num for ret, job in runs}
        # Each SLURM job that has not ended yet: its stack's name, its runs (engine.Jobs) and their numbers.
        waiting = {job: (f"stack {i + 1}/{len(stacks)}", stack, [number[id(run)] for run in stack])
                   for i, (job, stack) in enumerate(zip(jobs, stacks))}
        results: Dict[int, Any] = {}
        began = time.monotonic()
        try:
            wait(waiting, results, began)
        except KeyboardInterrupt:
            print(f"nnrun: interrupted: cancelling SLURM jobs {ids(list(waiting))}; each saves its runs "
                  "(interrupted, with their checkpoints)", file=sys.stderr, flush=True)
            for job in waiting:
                job.cancel(check=False)
            try:
                wait(waiting, results, began)
            except KeyboardInterrupt:  # twice: leave them to finish saving on their own
                pass
            raise  # the sweeper and the command line say how to go on
        return [results.get(id(job)) for _, job in runs]


def wait(waiting: Dict[Any, Any], results: Dict[int, Any], began: float) -> None:
    """Until every SLURM job in `waiting` has ended (submitit's result file, or sacct's state): a line as each stack
    ends, its runs' results by id (None: failed; the run dirs' where a killed stack returned none)."""
    import submitit
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from nnrun import engine  # torch

    for job in submitit.helpers.as_completed(list(waiting), poll_frequency=1):
        name, stack, nums = waiting[job]
        took = time.monotonic() - began
        try:
            ended = job.result()
        except (UncompletedJobError, FailedJobError):
            log = job.paths.stderr if job.paths.stderr.exists() else job.paths.stdout  # stderr_to_stdout: one log
            print(f"nnrun: {name} (SLURM job {job.job_id}) ended without returning its results; its runs count as "
                  f"their run dirs say (its log: {log})", file=sys.stderr, flush=True)
            ended = [None if read_metrics(run.run_dir) is None
                     else engine.RunResult.read(run.run_dir, run.cfg.train.early_stopping.monitor) for run in stack]
        print(f"nnrun: {name} (SLURM job {job.job_id}): {numbered(nums)} after {took:.0f} s: "
              f"{counted('failed' if r is None else r.status for r in ended)}", flush=True)
        results.update({id(run): result for run, result in zip(stack, ended)})
        del waiting[job]


def sbatch_error(message: str) -> str:
    """sbatch's 'sbatch: error: ...' line of a message, else its first line that says something."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no message")


def numbered(nums: List[int]) -> str:
    """'8 jobs, #0-#7': how many, and their numbers (a range where they follow on)."""
    if len(nums) == 1:
        return f"1 job, #{nums[0]}"
    between = "-" if nums == list(range(nums[0], nums[-1] + 1)) else " ... "
    return f"{len(nums)} jobs, #{nums[0]}{between}#{nums[-1]}"


def ids(jobs: List[Any]) -> str:
    return jobs[0].job_id if len(jobs) == 1 else f"{jobs[0].job_id} ... {jobs[-1].job_id}"
