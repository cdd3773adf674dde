"""The Hydra application behind `nnrun train`: output-dir resolvers and the task function, `TrainTask` (a plain
object, so that launchers that pickle the task can carry it; nnrun's own use its halves: check, carry, set_up)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nnrun import console, sweep
from nnrun.config import ConfigError, check_loss_fits, config_dir, config_groups, default_groups, parse
from nnrun.metrics import FINISHED, read_metrics, write_failed

EXPERIMENTS = Path("experiments")  # where nnrun was started: runs and sweeps go under experiments/<exp_name>/


def dated_dir(parent: Path, make: bool) -> str:
    """<parent>/<YYYY-MM-DD_HH-MM-SS>, or ..._1, _2 ... where that is taken. With `make` it is made here (mkdir is
    atomic), so two runs started in the same second never share one. A sweep's is only named: Hydra makes it as the
    sweep launches, so a sweep refused before, a printed config or a shell completion leaves nothing behind; a
    sweep started in the second of one before it gets its own (two started at once may still share one)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if make:
        parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = parent / (f"{stamp}_{n}" if n else stamp)
        if make:
            with contextlib.suppress(FileExistsError):
                candidate.mkdir()
                return str(candidate)
        elif not candidate.exists():
            return str(candidate)
    raise RuntimeError(f"no free dir under {parent} for {stamp}")


def job_dir_name(num: int, override_dirname: str) -> str:
    """A sweep job's dir: '<num>_<overrides>' (e.g. 3_optimizer.lr=0.1,seed=0), safe as one path part."""
    name = re.sub(r"[^\w.,=+\-\[\]]", "_", override_dirname)
    if len(name) > 200:  # file names stop at 255 bytes; keep it unique with a hash of the whole
        name = name[:180] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{num}_{name}" if name else str(num)


def register_resolvers(make_run_dir: bool = True) -> None:
    """The resolvers of conf/train.yaml's hydra.run.dir, hydra.sweep.dir and hydra.sweep.subdir. A run's dir is
    made as its name resolves, unless `make_run_dir` is False (a command that runs nothing: --cfg, a completion).
    A sweep's dir is named once, before its jobs' configs are made, and each of them copies the cache (as Hydra's
    `now`)."""
    OmegaConf.register_new_resolver("nnrun_run_dir", lambda exp: dated_dir(EXPERIMENTS / str(exp) / "runs",
                                                                           make_run_dir), replace=True)
    OmegaConf.register_new_resolver("nnrun_sweep_dir", lambda exp: dated_dir(EXPERIMENTS / str(exp) / "multirun",
                                                                             False), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("nnrun_job_dir", lambda *, _root_: job_dir_name(
        _root_.hydra.job.num, named_overrides(_root_)), replace=True)


def named_overrides(cfg: DictConfig) -> str:
    """What a sweep job's dir name says of it: Hydra's override_dirname, led by its experiment (exp=<name>) where
    that leaves exp out (conf/train.yaml: a sweep of one experiment is under experiments/<name>/ already) and the
    sweep's dir is not that experiment's: a sweep over +exp=a,b (under experiments/default/) or one elsewhere."""
    exp, naming = cfg.hydra.runtime.choices.get("exp"), cfg.hydra.job.config.override_dirname
    cwd = Path(cfg.hydra.runtime.cwd)  # the sweep's, not a job's own under hydra.job.chdir
    in_its_home = Path(os.path.normpath(cwd / EXPERIMENTS / str(exp))) in Path(
        os.path.normpath(cwd / str(cfg.hydra.sweep.dir))).parents
    if exp is None or "exp" not in naming.exclude_keys or in_its_home:
        return cfg.hydra.job.override_dirname
    return naming.item_sep.join(filter(None, [f"exp{naming.kv_sep}{exp}", cfg.hydra.job.override_dirname]))


TRAIN_HELP = """\
nnrun train: train one network (or, with -m, a sweep of them) on a lecture dataset.

Usage: nnrun train [-m] [--cfg job] [+exp=<name>] [group=choice ...] [key=value ...]

Config groups (pick one with group=choice):
{groups}
Added with a plus (no default to override):
{added}

Composed config (any key can be overridden as key=value):

{config}
Examples:
  nnrun train +exp=xor_relu
  nnrun train dataset=spirals model.hidden=[32,32] optimizer=sgd optimizer.lr=0.1
  nnrun train -m optimizer.lr=0.001,0.01,0.1 seed=0,1,2
  nnrun train --cfg job            (print the composed config)
  nnrun train --hydra-help         (Hydra's own flags: -m, --cfg, -sc, hydra/launcher=...)
Runs land in experiments/<exp_name>/; view them with: tensorboard --logdir experiments
"""


def train_help(overrides: list[str]) -> str:
    """`nnrun train --help`: the groups read off conf/ (Hydra's --help composes each, a second) and the config."""
    groups, defaults = config_groups(), default_groups()
    chosen = "\n".join(f"  {group}: {', '.join(choices)}" for group, choices in groups.items() if group in defaults)
    added = "\n".join(f"  +{group}=<name>: {', '.join(choices)}"
                      for group, choices in groups.items() if group not in defaults)
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        cfg = compose("train", overrides=overrides)
    return TRAIN_HELP.format(groups=chosen, added=added, config=OmegaConf.to_yaml(cfg))


class TrainTask:
    """`nnrun train`'s task function: trains a job, prints its result, returns the monitored metric for sweepers."""

    def __init__(self) -> None:
        self.classes: dict = {}  # each CSV file's number of classes, by its dataset config: read once per sweep
        self.indexes: dict = {}  # the job dirs of each sweep that a sweep's jobs resume from (sweep.index)

    def check(self, cfg: DictConfig):
        """A job's config as this task will read it, or ConfigError; for a CSV file, the loss's fit to its classes
        too (a relative path that hydra.job.chdir makes the job's own is left to the job)."""
        parsed = parse(cfg)
        data = parsed.dataset
        if data.name == "csv" and (Path(data.path).is_absolute() or not cfg.hydra.job.chdir):
            if data not in self.classes:
                from nnrun.data import load  # torch

                self.classes[data] = load(data).n_classes
            check_loss_fits(parsed.loss, self.classes[data])
        return parsed

    def set_up(self, cfg: DictConfig, checked=None):
        """This job ready to train (an engine.Job), or the objective of one that fails or is carried over."""
        hydra_cfg = HydraConfig.get()
        try:
            carried = self.carry(cfg, hydra_cfg)
            return carried if carried is not None else make_job(checked or parse(cfg), cfg, hydra_cfg, self.indexes)
        except ConfigError as exc:
            return self.failed(exc, cfg, hydra_cfg)

    def carry(self, cfg: DictConfig, hydra_cfg: DictConfig) -> float | None:
        """The objective of a resumed sweep's job whose namesake had finished, that run carried into this job's dir
        untrained (a launcher may call this before Hydra's run_job, to skip it); None for any other job."""
        from nnrun import engine  # torch

        resume = OmegaConf.select(cfg, "train.resume")
        if resume is None or hydra_cfg.mode != RunMode.MULTIRUN:
            return None
        source = sweep.resumed_job(str(cfg.exp_name), str(resume), hydra_cfg, self.indexes)
        if source is None or (read_metrics(source) or {}).get("status") not in FINISHED:
            return None
        run_dir = Path(hydra_cfg.runtime.cwd) / str(hydra_cfg.sweep.dir) / str(hydra_cfg.sweep.subdir)
        sweep.carry_over(source, run_dir)
        monitor = OmegaConf.select(cfg, "train.early_stopping.monitor")
        return sweep.objective(engine.RunResult.read(run_dir, monitor), hydra_cfg)

    def __call__(self, cfg: DictConfig) -> float:
        from nnrun import engine  # torch

        job = self.set_up(cfg)
        if not isinstance(job, engine.Job):
            return job
        hydra_cfg = HydraConfig.get()
        try:
            # A sweep's job shows no progress bar: a line when it ends (Hydra's names it when it starts).
            (result,) = engine.train_jobs([job], show_progress=not job.in_sweep)
        except ConfigError as exc:  # the data, read as training starts
            return self.failed(exc, cfg, hydra_cfg)
        except engine.RunInterrupted as exc:
            if not job.in_sweep or hydra_cfg.runtime.choices.get("hydra/launcher") == "basic":
                raise  # the process the user started: the run or sweep stops here (see cli)
            # A launcher's worker (joblib, submitit: a SLURM job timed out or cancelled): the job is a result,
            # `interrupted` with its checkpoint, and the launcher must hear back from it. Its log says so.
            print(f"nnrun: {exc}", file=sys.stderr)
            return sweep.objective(None, hydra_cfg)
        except Exception as exc:
            if not job.in_sweep:
                raise
            # In a sweep, one faulty job is a result (status failed in its metrics.json); the others go on.
            print(f"nnrun: job {hydra_cfg.job.num} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return sweep.objective(None, hydra_cfg)
        if job.in_sweep:  # one line per job; the sweep's summary follows when the last one ends
            console.print_job_line(result)
        else:
            console.print_run(result, job.cfg)
        return sweep.objective(result, hydra_cfg)

    @staticmethod
    def failed(exc: ConfigError, cfg: DictConfig, hydra_cfg: DictConfig) -> float:
        """A run that cannot start is refused: nothing left behind, one line, exit 2. A sweep's job fails alone: a
        line, and a metrics.json that says so (nnrun report lists it as failed, not unfinished)."""
        if hydra_cfg.mode != RunMode.MULTIRUN:
            discard_run_dir(Path(hydra_cfg.runtime.output_dir), Path(hydra_cfg.runtime.cwd))
            console.fail(str(exc))
        print(f"nnrun: job {hydra_cfg.job.num} failed: {exc}", file=sys.stderr)
        seed = OmegaConf.select(cfg, "seed", default=0)
        write_failed(Path(hydra_cfg.runtime.output_dir), str(exc), seed=seed if isinstance(seed, int) else 0,
                     monitor=str(OmegaConf.select(cfg, "train.early_stopping.monitor", default="loss/val")),
                     overrides=list(hydra_cfg.overrides.task))
        return sweep.objective(None, hydra_cfg)


def discard_run_dir(run_dir: Path, home: Path) -> None:
    """Remove the run dir Hydra made for a run that never started (.hydra/ and an empty log, which Hydra holds
    open: closed first), and the experiment dirs above it that this leaves empty, never `home`, where nnrun was
    started (sweep.discard)."""
    root, where = logging.getLogger(), run_dir.resolve()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and where in Path(handler.baseFilename).resolve().parents:
            root.removeHandler(handler)
            handler.close()
    sweep.discard(run_dir, (), "runs", home)


def make_job(parsed, cfg: DictConfig, hydra_cfg: DictConfig, indexes: dict | None = None):
    """The engine's Job for this Hydra job, its dataset's file and the run that train.resume names read where the
    job runs (see hydra.job.chdir)."""
    from nnrun import engine  # torch

    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if parsed.dataset.path is not None and Path.cwd() != Path(hydra_cfg.runtime.cwd):  # hydra.job.chdir
        parsed = replace(parsed, dataset=replace(parsed.dataset, path=str(Path(parsed.dataset.path).absolute())))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    job = engine.Job(parsed, run_dir, list(hydra_cfg.overrides.task), OmegaConf.to_yaml(cfg, resolve=True),
                     in_sweep=multirun)
    if parsed.train.resume is not None and multirun:
        job.resume_from = sweep.resumed_job(parsed.exp_name, parsed.train.resume, hydra_cfg, indexes)
    elif parsed.train.resume is not None:  # experiments/ is where nnrun was started
        job.resume_from = engine.find_resume_dir(parsed, run_dir, root=Path(hydra_cfg.runtime.cwd))
    return job


register_resolvers()
train_task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(TrainTask())
