"""nnrun's sweeper for Hydra (`hydra/sweeper=nnrun`, nnrun's default): a sweep's jobs expanded as Hydra's basic
sweeper expands them (`hydra.sweeper.params` then the command line, `itertools.product`'s order, numbered from 0,
in batches of `max_batch_size`), every job's config built once (`SweepConfigs`) and read through the task's own
`check`, and every job's dir named (no two jobs may share one), before any job starts. nnrun's vectorized
launchers then launch the very configs checked. A task without a check (a Hydra app that is not nnrun's) gets what
Hydra's basic sweeper gives it."""

import itertools
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.nnrun.sweep_configs import SweepConfigs, job_subdir, young_garbage_only
from hydra_plugins.nnrun.vectorized_launcher import numbered
from nnrun.config import ConfigError, explain_composition, first_line, sampled_range
from nnrun.console import Phase, fail, plural
from nnrun.metrics import read_metrics
from nnrun.sweep import job_dirs


@dataclass
class NnrunSweeperConf:
    _target_: str = "hydra_plugins.nnrun.sweeper.NnrunSweeper"
    max_batch_size: Optional[int] = None  # jobs launched at once; null = all of them (as Hydra's basic sweeper)
    params: Optional[Dict[str, str]] = None  # sweeps a config sets ({key: "a,b,c"}), before the command line's


ConfigStore.instance().store(group="hydra/sweeper", name="nnrun", node=NnrunSweeperConf, provider="nnrun")


def expand(overrides: Sequence[Any], max_batch_size: Optional[int]) -> List[List[List[str]]]:
    """The jobs of these parsed overrides in batches, as Hydra's basic sweeper makes them: one list of override
    lines per job. A key given twice keeps its first place and its last value."""
    lists: Dict[str, List[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if o.is_sweep_override() and not o.is_discrete_sweep():
            raise sampled_range(o.input_line)
        values = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        lists[key] = [f"{key}={value}" for value in values]
    jobs = [list(job) for job in itertools.product(*lists.values())]
    size = len(jobs) if max_batch_size in (None, -1) else max_batch_size
    if size < 1:
        raise ConfigError("hydra.sweeper.max_batch_size", max_batch_size, "an integer >= 1 or null")
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


def shared_dir(first: Tuple[int, List[str]], then: Tuple[int, List[str]], subdir: str, cfg: DictConfig) -> str:
    """Why two jobs cannot run: hydra.sweep.subdir (as `cfg`, the second's config, sets it) names them one dir."""
    (a, a_overrides), (b, b_overrides) = first, then
    given = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    shown = "the sweep dir itself" if os.path.normpath(subdir) == "." else repr(subdir)
    return (f"job #{a} ({' '.join(a_overrides)}) and job #{b} ({' '.join(b_overrides)}) would write into one job dir, "
            f"{shown} (hydra.sweep.subdir={given}): make hydra.sweep.subdir differ per job, e.g. include "
            "${hydra.job.num}")


class NnrunSweeper(Sweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        self.max_batch_size, self.params = max_batch_size, dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config, self.task_function = hydra_context, config, task_function
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        # Named (nnrun_sweep_dir, cached) before the jobs' configs are made: each copies the sweep's resolver
        # cache, so all name one sweep dir; it is made when the sweep launches.
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        try:
            batches = expand(overrides, self.max_batch_size)
        except ConfigError as exc:
            fail(str(exc))
        check = getattr(self.task_function, "check", None)
        if check is None:  # not nnrun's task: Hydra's basic sweeper's checks, batch by batch as it launches them
            return self.launch(batches, validate=True)
        jobs = [job for batch in batches for job in batch]
        swept = ", ".join(f"{o.get_key_element()} x {len(list(o.sweep_string_iterator()))}"
                          for o in overrides if o.is_sweep_override())  # what it varies, over how many values
        print(f"nnrun: a sweep of {plural(len(jobs), 'job')}{': ' + swept if swept else ''}", flush=True)
        self.check(check, jobs)
        try:
            returns = self.launch(batches)
        except KeyboardInterrupt as exc:
            if not self.all_ended(len(jobs)):
                from nnrun.engine import RunInterrupted  # torch

                if not isinstance(exc, RunInterrupted):  # as the engine's: what train.resume takes to go on
                    exc = RunInterrupted(self.sweep_dir, signal.SIGINT)
                raise exc from None
            returns = []
        # Every job has ended: Ctrl-C from here on would only cut the summary short (nnrun's command line puts
        # the handler back when the sweep is over).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return returns

    def launch(self, batches: List[List[List[str]]], validate: bool = False) -> List[Any]:
        """Save the sweep's config in its dir (multirun.yaml), then launch its batches one after another."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        returns, initial_job_idx = [], 0
        for batch in batches:
            if validate:
                self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for result in results:
                _ = result.return_value  # as Hydra's basic sweeper: a job that raised ends the sweep here
            returns.append(results)
            initial_job_idx += len(batch)
        return returns

    def check(self, check: Callable[[DictConfig], Any], jobs: List[List[str]]) -> None:
        """Each job's config read through the task's `check`, and its dir named: the first job refused, or named as
        one before it (each would overwrite the other's files), is one line, exit 2, before the sweep dir exists.
        A launcher that takes the checked configs (`use_checked`) gets them, numbered, and what `check` made."""
        configs = SweepConfigs(self.hydra_context.config_loader, self.config)
        keep = getattr(self.launcher, "use_checked", None)
        checked = {}
        named: Dict[str, int] = {}  # each job's dir (the sweep's, joined as run_job joins them): the job that has it
        with Phase("checking", "checked", len(jobs)) as phase, young_garbage_only() as collect:
            for num, overrides in enumerate(jobs):
                try:
                    cfg = numbered(configs.load(overrides), num)
                    made = check(cfg)
                    subdir = job_subdir(cfg)
                except (ConfigError, HydraException, OmegaConfBaseException) as exc:
                    fail(f"job #{num} ({' '.join(overrides)}): {self.why(exc, overrides)}")
                first = named.setdefault(os.path.normpath(self.sweep_dir / subdir), num)
                if first != num:
                    fail(shared_dir((first, jobs[first]), (num, overrides), subdir, cfg))
                if keep is not None:
                    checked[tuple(overrides)] = (cfg, made)
                collect()
                phase.advance()
        if keep is not None:
            keep(checked)

    def why(self, exc: Exception, overrides: List[str]) -> str:
        """A job's refusal in nnrun's words: the schema's, or for a config that does not compose, the override
        that nnrun's schema explains (an unknown key), else the first line of Hydra's message."""
        if isinstance(exc, ConfigError):
            return str(exc)

        def compose(lines: List[str]) -> Any:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, lines)
            return OmegaConf.to_container(cfg, resolve=False)

        try:
            explained = explain_composition(OverridesParser.create().parse_overrides(overrides), compose)
        except (HydraException, OmegaConfBaseException):
            explained = None
        return first_line(exc) if explained is None else str(explained)

    def all_ended(self, n_jobs: int) -> bool:
        """Whether all `n_jobs` have ended: each has a metrics.json, none interrupted (a later stop changes nothing)."""
        found = [read_metrics(job_dir) for job_dir in job_dirs(self.sweep_dir)]
        return len(found) == n_jobs and all(m is not None and m.get("status") != "interrupted" for m in found)
