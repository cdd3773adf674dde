"""The Hydra application behind `nnrun train`: config location, output-dir resolvers, and the task function.

The `@hydra.main` function is a thin wrapper around `run_task`, a plain package function, so launchers that
pickle the task (joblib, submitit) can carry it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from nnrun.config import ConfigError


def config_dir() -> Path:
    """conf/ inside the installed wheel, else the repository's top-level conf/ (an editable install)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def unique_run_dir(exp_name: str) -> str:
    """experiments/<exp>/runs/<YYYY-MM-DD_HH-MM-SS>, or ..._1, _2 ... when another run took that second.

    The dir is created here (mkdir is atomic), so two runs started in the same second never share it.
    """
    parent = Path("experiments") / str(exp_name) / "runs"
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for n in range(10_000):
        candidate = parent / (stamp if n == 0 else f"{stamp}_{n}")
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run dir under {parent} for {stamp}")


_UNSAFE = re.compile(r"[^\w.,=+\-\[\]]")


def job_dir_name(num: int, override_dirname: str) -> str:
    """A sweep job's dir: '<num>_<overrides>' (e.g. 3_optimizer.lr=0.1,seed=0), safe as one path part."""
    name = _UNSAFE.sub("_", override_dirname)
    if len(name) > 200:  # file names stop at 255 bytes; keep it unique with a hash of the whole
        name = name[:180] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{num}_{name}" if name else str(num)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("nnrun_run_dir"):
        OmegaConf.register_new_resolver("nnrun_run_dir", unique_run_dir)
    if not OmegaConf.has_resolver("nnrun_job_dir"):
        OmegaConf.register_new_resolver(
            "nnrun_job_dir",
            lambda *, _root_: job_dir_name(_root_.hydra.job.num, _root_.hydra.job.override_dirname))


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
    """`nnrun train --help`: the groups read off conf/ and the config composed with `overrides`.

    Hydra's own --help lists groups by composing each one (about a second); listing files is instant.
    """
    from hydra import compose, initialize_config_dir

    from nnrun.preflight import config_groups, default_groups

    root = config_dir()
    groups, defaults = config_groups(), default_groups()
    chosen = "\n".join(f"  {group}: {', '.join(choices)}" for group, choices in groups.items() if group in defaults)
    added = "\n".join(f"  +{group}=<name>: {', '.join(choices)}"
                      for group, choices in groups.items() if group not in defaults)
    with initialize_config_dir(version_base="1.3", config_dir=str(root), job_name="train"):
        cfg = compose("train", overrides=overrides)
    return TRAIN_HELP.format(groups=chosen, added=added, config=OmegaConf.to_yaml(cfg))


def fail(message: str, code: int = 2) -> None:
    """One clear line on stderr, then exit (2 = bad input). HYDRA_FULL_ERROR=1 keeps the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and sys.exc_info()[0] is not None:
        raise
    print(f"nnrun: error: {message}", file=sys.stderr)
    sys.exit(code)


def run_task(cfg: DictConfig) -> float | None:
    """Validate the composed config, train, print the result; return the monitored metric for sweepers."""
    from nnrun import config as schema

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN

    def refuse(message: str) -> None:
        """A single run refused at start (bad input) leaves nothing behind, then one line and exit 2."""
        discard_run_dir(Path(hydra_cfg.runtime.output_dir))
        fail(message)

    if not multirun and hydra_cfg.runtime.choices.get("hydra/launcher") == "vectorized":
        refuse("hydra/launcher=vectorized trains the jobs of a sweep together; add -m "
               "(nnrun train -m hydra/launcher=vectorized optimizer.lr=0.01,0.1 seed=0,1)")

    from nnrun import console, engine, sweep

    try:
        parsed = schema.parse(cfg)
        job = make_job(parsed, cfg, hydra_cfg, multirun)
        if sweep.collect(job):  # a stacking launcher trains it, with the others
            return None
        # A sweep's job shows no progress bar: a line when it ends (Hydra's names it when it starts).
        (result,) = engine.train_jobs([job], show_progress=not multirun)
    except ConfigError as exc:
        if not multirun:
            refuse(str(exc))
        # Pre-flight checked every sweep value; what is left (a data file one job cannot read) fails that job,
        # and its metrics.json says so (nnrun report lists it as failed, not unfinished).
        print(f"nnrun: job {hydra_cfg.job.num} failed: {exc}", file=sys.stderr)
        write_failed(cfg, hydra_cfg)
        return sweep.objective(None, hydra_cfg)
    except engine.RunInterrupted as exc:
        print(f"nnrun: {exc}", file=sys.stderr)
        if not multirun or hydra_cfg.runtime.choices.get("hydra/launcher") == "basic":
            sys.exit(130)  # the process the user started: the sweep stops here
        # A launcher's worker (joblib, submitit: a SLURM job timed out or cancelled): the job is a result,
        # `interrupted` with its checkpoint, and the launcher must hear back from it.
        return sweep.objective(None, hydra_cfg)
    except Exception as exc:
        if not multirun:
            raise
        # In a sweep, one faulty job is a result (status failed in its metrics.json); the others go on.
        print(f"nnrun: job {hydra_cfg.job.num} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return sweep.objective(None, hydra_cfg)
    if multirun:  # one line per job; the sweep's summary follows when the last one ends
        console.print_job_line(result)
    else:
        console.print_run(result, parsed)
    return sweep.objective(result, hydra_cfg)


def write_failed(cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """metrics.json of a sweep's job that failed before it trained."""
    from nnrun import metrics

    monitor = OmegaConf.select(cfg, "train.early_stopping.monitor", default="loss/val")
    seed = OmegaConf.select(cfg, "seed", default=0)
    metrics.write_metrics(Path(hydra_cfg.runtime.output_dir), metrics.build_metrics(
        status="failed", epochs_run=0, best_epoch=0, best_value=None, monitor=str(monitor), final={},
        wall_time_s=0.0, device="cpu", seed=seed if isinstance(seed, int) else 0,
        overrides=list(hydra_cfg.overrides.task)))


def discard_run_dir(run_dir: Path) -> None:
    """Remove the run dir Hydra made for a run that never started (.hydra/ and an empty log, which Hydra's job
    logging holds open: the log is closed first), and runs/ and the experiment dirs above it if that left them
    empty. A dir holding anything more stays."""
    import logging
    import shutil

    run_dir = run_dir.resolve()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and run_dir in Path(handler.baseFilename).resolve().parents:
            root.removeHandler(handler)
            handler.close()
    untouched = run_dir.is_dir() and all(
        p.name == ".hydra" or (p.suffix == ".log" and p.is_file() and p.stat().st_size == 0)
        for p in run_dir.iterdir())
    if not untouched:
        return
    shutil.rmtree(run_dir)
    above = run_dir.parents[:3]  # experiments/<exp_name>/runs/, unless hydra.run.dir put it elsewhere
    if len(above) == 3 and (above[0].name, above[2].name) == ("runs", "experiments"):
        for parent in above:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break


def make_job(parsed, cfg: DictConfig, hydra_cfg: DictConfig, multirun: bool):
    """The engine's Job for this Hydra job, its paths read where the job runs (its working dir: see
    hydra.job.chdir): the dataset's file, and the run that train.resume names."""
    from dataclasses import replace

    from nnrun import engine, sweep

    if parsed.dataset.path is not None and Path.cwd() != Path(hydra_cfg.runtime.cwd):  # hydra.job.chdir
        parsed = replace(parsed, dataset=replace(parsed.dataset, path=str(Path(parsed.dataset.path).absolute())))
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    job = engine.Job(parsed, run_dir, overrides, OmegaConf.to_yaml(cfg, resolve=True), in_sweep=multirun)
    if parsed.train.resume is not None:
        root = Path(hydra_cfg.runtime.cwd)  # experiments/ is where nnrun was started
        if multirun:  # the job with the same overrides in the sweep train.resume names; None: it never started
            source = sweep.resume_sweep_dir(parsed.exp_name, parsed.train.resume, root / str(hydra_cfg.sweep.dir),
                                            root)
            job.resume_from = sweep.same_job(source, overrides)
        else:
            job.resume_from = engine.find_resume_dir(parsed, run_dir, root=root)
    return job


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_task(cfg: DictConfig) -> float:
    return run_task(cfg)
