"""A Hydra launcher that submits a sweep's stacks as SLURM jobs: `nnrun train -m hydra/launcher=vectorized_slurm ...`.

The vectorized launcher, with its training moved onto the cluster. Each job still runs through Hydra's `run_job` in
the launching process, where nnrun's task makes its run dir, `.hydra/` and log and hands back its `engine.Job`. The
jobs are then split into the stacks `engine.train_jobs` would train (`plan_stacks`), and each stack becomes one
SLURM job (a task of one submitit job array) that calls `train_on_node`: `engine.train_jobs` on the cluster's node,
writing each run's events, checkpoint.pt and metrics.json into its run dir on the shared file system. The
launching process waits, prints a line as each stack's SLURM job ends, and sets each job's return value.

SLURM's SIGTERM (`scancel`, preemption) and the SIGUSR2 it sends `signal_delay_s` before the time limit make the
engine finish its step and save every unfinished run `interrupted` with its checkpoint; the same command with
`train.resume=latest` goes on from there.
"""

import io
import subprocess
import sys
import time
from collections import Counter
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

# No `from __future__ import annotations`: Hydra imports plugins outside sys.modules, where dataclass
# cannot resolve string annotations.
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nnrun_vectorized_launcher.vectorized_launcher import VectorizedLauncher, bad_input


NAME = "vectorized_slurm"


@dataclass
class VectorizedSlurmLauncherConf:
    _target_: str = "hydra_plugins.nnrun_vectorized_launcher.vectorized_slurm_launcher.VectorizedSlurmLauncher"
    # The most models in one stack, that is in one SLURM job; a bigger sweep is more SLURM jobs.
    max_models: int = 256
    # Memory one stack may use (parameters, gradients, optimizer state, activations); caps models per stack.
    memory_budget_mb: int = 1024
    # Where submitit keeps each SLURM job's script, pickles and logs; %j is the job's id.
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    # The SLURM settings of every stack's job (sbatch's options of the same names).
    partition: Optional[str] = None
    timeout_min: int = 60
    cpus_per_task: Optional[int] = None
    gpus_per_node: Optional[int] = None
    mem_gb: Optional[int] = None
    qos: Optional[str] = None
    account: Optional[str] = None
    constraint: Optional[str] = None
    # Seconds before the time limit at which SLURM sends SIGUSR2: the stack saves its runs `interrupted`.
    signal_delay_s: int = 120
    # The most stacks running at once.
    array_parallelism: int = 256
    # Shell lines run before the job (`module load ...`).
    setup: Optional[List[str]] = None
    # Any other sbatch option, e.g. {mail-type: END}.
    additional_parameters: Dict[str, Any] = field(default_factory=dict)
    name: str = "${hydra.job.name}"


ConfigStore.instance().store(group="hydra/launcher", name=NAME, node=VectorizedSlurmLauncherConf, provider="nnrun")


class Outcome(NamedTuple):
    """How one job of a stack ended, as the SLURM job hands it back: what `sweep.objective` reads."""

    status: str
    objective: float


def train_on_node(jobs: List[Any], max_models: int, memory_budget_mb: int) -> List[Outcome]:
    """What a stack's SLURM job runs: train `jobs` (engine.Jobs) with the engine, on the node it was given.
    SIGTERM or SIGUSR2 saves the unfinished runs `interrupted` and returns (the engine's stop_signals)."""
    from nnrun import engine

    results = engine.train_jobs(jobs, max_models=max_models, memory_budget_mb=memory_budget_mb, raise_faults=False,
                                raise_interrupt=False, announce=True)
    return [Outcome(r.status, r.objective) for r in results]


def plan_stacks(jobs: List[Any], max_models: int, memory_budget_mb: int):
    """The stacks `engine.train_jobs(jobs, max_models=..., memory_budget_mb=...)` trains (`engine.plan`), made
    where the sweep is launched, as lists of jobs. Returns (carried, stacks): a finished job of a resumed sweep is
    carried over here and is in no stack; `carried` pairs it with its result. Bad input (data, a run that cannot
    be resumed) raises ConfigError."""
    import torch

    from nnrun import engine

    # Only where each run starts is read here; the node trains on its own device.
    members, stacks = engine.plan(jobs, max_models=max_models, memory_budget_mb=memory_budget_mb,
                                  device=torch.device("cpu"))
    carried = [(m.job, m.result) for m in members if m.result is not None]
    return carried, [[m.job for m in chunk] for *_, chunk in stacks]


class VectorizedSlurmLauncher(VectorizedLauncher):
    def __init__(self, max_models: int = 256, memory_budget_mb: int = 1024,
                 submitit_folder: str = ".submitit/%j", **slurm: Any) -> None:
        super().__init__(max_models, memory_budget_mb)
        self.submitit_folder = submitit_folder
        # partition, timeout_min, ... (VectorizedSlurmLauncherConf's SLURM settings) as plain values for submitit
        self.slurm = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in slurm.items()}
        self.executor: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # nnrun's pre-flight has checked that this is a multirun and that sbatch is here.
        check_settings(self.slurm)
        self.executor = make_executor(self.submitit_folder, self.slurm)

    def train(self, runs: List[Any]) -> None:
        """Plan the collected jobs' stacks, submit each as a SLURM job, wait; each job's return value is what its
        task would have returned."""
        if not runs:
            return
        from nnrun.config import ConfigError
        from nnrun.sweep import objective

        try:
            carried, stacks = plan_stacks([job for _, job in runs], self.max_models, self.memory_budget_mb)
        except ConfigError as exc:  # bad input found while the stacks are planned: before any submission
            bad_input(str(exc))
        outcomes: Dict[int, Any] = {id(job): result for job, result in carried}
        if stacks:
            numbers = {id(job): ret.hydra_cfg.hydra.job.num for ret, job in runs}
            outcomes.update(self.run_stacks(stacks, [[numbers[id(job)] for job in stack] for stack in stacks]))
        for ret, job in runs:
            ret.return_value = objective(outcomes.get(id(job)), ret.hydra_cfg.hydra)

    def run_stacks(self, stacks: List[List[Any]], numbers: List[List[int]]) -> Dict[int, Outcome]:
        """Submit each stack as one task of a SLURM job array; wait for them, a line as each ends (naming its jobs
        by `numbers`, hydra.job.num). Ctrl-C cancels the stacks still queued or running (each saves its runs
        `interrupted`), waits for them and exits 130."""
        jobs = submit(self.executor, stacks, self.max_models, self.memory_budget_mb)
        print(f"nnrun: {len(stacks)} stack{'' if len(stacks) == 1 else 's'} submitted to SLURM as "
              f"{_ids(jobs)} ({sum(map(len, stacks))} jobs)", flush=True)
        outcomes: Dict[int, Outcome] = {}
        pending = list(range(len(stacks)))
        try:
            wait(jobs, stacks, numbers, pending, outcomes)
        except KeyboardInterrupt:
            print(f"nnrun: interrupted: cancelling SLURM jobs {_ids([jobs[i] for i in pending])}; each saves its "
                  "runs (interrupted, with their checkpoints)", file=sys.stderr, flush=True)
            for i in pending:
                jobs[i].cancel(check=False)
            try:
                wait(jobs, stacks, numbers, pending, outcomes)
            except KeyboardInterrupt:  # twice: leave them to finish saving on their own
                pass
            print("nnrun: the same command with train.resume=latest goes on from there", file=sys.stderr)
            sys.exit(130)
        return outcomes


# The least each number may be; None where the setting may be left unset (null: SLURM's default).
LEAST = {"timeout_min": (1, False), "signal_delay_s": (0, False), "array_parallelism": (1, False),
         "cpus_per_task": (1, True), "gpus_per_node": (0, True), "mem_gb": (1, True)}


def check_settings(slurm: Dict[str, Any]) -> None:
    """Numbers sbatch would take but that make no sense, as bad input: a time limit under a minute, a signal
    that would come before the stacks have begun."""
    for key, (least, nullable) in LEAST.items():
        value = slurm.get(key)
        if value is None and nullable:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            bad_input(f"hydra.launcher.{key}={value} is not allowed: an integer >= {least}"
                      + (" or null" if nullable else ""))
    if slurm["signal_delay_s"] >= slurm["timeout_min"] * 60:
        bad_input(f"hydra.launcher.signal_delay_s={slurm['signal_delay_s']} is not allowed: less than "
                  f"hydra.launcher.timeout_min x 60 ({slurm['timeout_min'] * 60} s), or SLURM would signal each "
                  "stack to stop as it starts")


def make_executor(folder: str, slurm: Dict[str, Any]) -> Any:
    """A submitit executor for SLURM with the launcher's settings (its names are the keys of
    VectorizedSlurmLauncherConf); a setting sbatch cannot take is bad input."""
    import submitit

    generic = {"timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "name"}  # AutoExecutor's own names
    try:
        # A run that is cut short saves itself (`interrupted`); submitit must not requeue it to start over.
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=0)
        executor.update_parameters(**{key if key in generic else f"slurm_{key}": value
                                      for key, value in slurm.items()})
    except (ValueError, TypeError, NameError, AssertionError, RuntimeError) as exc:
        bad_input(f"hydra/launcher={NAME}: {first_line(str(exc))}")
    return executor


def submit(executor: Any, stacks: List[List[Any]], max_models: int, memory_budget_mb: int) -> List[Any]:
    """One sbatch call: a job array, one task per stack. sbatch's refusal (a partition that does not exist, more
    memory than a node has) is bad input, in sbatch's own words."""
    from submitit.core.utils import FailedJobError

    said = io.StringIO()  # submitit prints sbatch's stderr when it fails; it is the message, shown once below
    try:
        with redirect_stderr(said):
            jobs = executor.map_array(train_on_node, stacks, [max_models] * len(stacks),
                                      [memory_budget_mb] * len(stacks))
    except FailedJobError as exc:
        bad_input(f"sbatch refused the sweep's jobs: {first_line(str(exc) or said.getvalue())}")
    return jobs


def wait(jobs: List[Any], stacks: List[List[Any]], numbers: List[List[int]], pending: List[int],
         outcomes: Dict[int, Outcome], poll_s: float = 1.0, queue_every_s: float = 15.0) -> None:
    """Until every stack in `pending` has ended (removed from it as it does): its jobs' outcomes and its line.

    A stack has ended when its SLURM job's result file is there, or when squeue no longer lists the job (killed
    before it could write one). submitit's own `done()` asks sacct, which a cluster without accounting cannot
    answer (it would then wait forever for a killed job, and sacct says so on stderr at every poll)."""
    began, asked = time.monotonic(), float("-inf")
    while pending:
        gone: set = set()
        if time.monotonic() - asked >= queue_every_s:
            gone, asked = left_queue([jobs[i].job_id for i in pending]), time.monotonic()
        for i in list(pending):
            if jobs[i].paths.result_pickle.exists() or jobs[i].job_id in gone:
                name = f"stack {i + 1}/{len(stacks)}"
                outcomes.update(stack_outcomes(jobs[i], stacks[i], name, numbered(numbers[i]), began))
                pending.remove(i)
        if pending:
            time.sleep(poll_s)


# Seconds a result file may take to show on a shared file system after its job has left the queue.
RESULT_WAIT_S = 15


def stack_outcomes(job: Any, stack: List[Any], name: str, which: str, began: float) -> Dict[int, Outcome]:
    """Each run's outcome as the stack's SLURM job returned it, or, where it returned nothing (killed, failed
    outside training), as its run dir holds it; prints the stack's line."""
    took = time.monotonic() - began
    deadline = time.monotonic() + RESULT_WAIT_S
    while not job.paths.result_pickle.exists() and time.monotonic() < deadline:
        time.sleep(1)
    returned, problem = None, "it was killed before it could return them"
    if job.paths.result_pickle.exists():
        try:
            returned = job.result()
        except Exception as exc:  # whatever the job raised, as submitit hands it back (FailedJobError)
            problem = last_line(str(exc))
    if returned is None:
        print(f"nnrun: {name} (SLURM job {job.job_id}) ended without returning its results: {problem} "
              f"(its log: {job.paths.stderr})", file=sys.stderr, flush=True)
    outcomes = returned if returned is not None else [read_outcome(run) for run in stack]
    counted = ", ".join(f"{n} {status}" for status, n in Counter(o.status for o in outcomes).items())
    print(f"nnrun: {name} (SLURM job {job.job_id}): {which} after {took:.0f} s: {counted}", flush=True)
    return {id(run): outcome for run, outcome in zip(stack, outcomes)}


def read_outcome(job: Any) -> Outcome:
    """A run's outcome as its metrics.json says; none written: failed."""
    from nnrun import engine
    from nnrun.metrics import read_metrics

    if read_metrics(job.run_dir) is None:
        return Outcome("failed", float("nan"))
    result = engine.RunResult.read(job.run_dir, job.cfg.train.early_stopping.monitor)
    return Outcome(result.status, result.objective)


def left_queue(job_ids: List[str]) -> set:
    """Of these SLURM job ids, those squeue no longer lists: ended. A cluster without accounting (sacct) tells
    submitit nothing about a job killed before it wrote its result; squeue still does. Nothing when squeue
    cannot answer."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        listed = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(arrays)}"],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    if listed.returncode != 0:
        # squeue refuses ids it has forgotten (a while after they end): then none is queued.
        return set(job_ids) if "Invalid job id" in listed.stderr else set()
    queued = set(listed.stdout.split())
    return {job_id for job_id in job_ids if job_id not in queued}


def first_line(message: str) -> str:
    """The first line that says something: sbatch's 'sbatch: error: ...' line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[0] if lines else "no message")


def last_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    return next((line for line in reversed(lines) if not line.startswith(("You can check", "or at paths", "- "))),
                "no message")


def numbered(nums: List[int]) -> str:
    """'8 jobs, #0-#7': how many, and their numbers (a range where they follow on)."""
    if len(nums) == 1:
        return f"1 job, #{nums[0]}"
    shown = f"#{nums[0]}-#{nums[-1]}" if nums == list(range(nums[0], nums[-1] + 1)) else f"#{nums[0]} ... #{nums[-1]}"
    return f"{len(nums)} jobs, {shown}"


def _ids(jobs: List[Any]) -> str:
    ids = [job.job_id for job in jobs]
    return ids[0] if len(ids) == 1 else f"{ids[0]} ... {ids[-1]}"
