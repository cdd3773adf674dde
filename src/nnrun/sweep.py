"""The multirun side of `nnrun train -m`: the task's return value, resuming a sweep (the job each job goes on
from), a Hydra callback that prepares a sweep and sums it up when it ends, and the sampler of Optuna searches."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nnrun.checkpoint import CHECKPOINT_FILE
from nnrun.config import ConfigError, UsageError
from nnrun.console import fail, plural, print_sweep_summary, shown_path
from nnrun.metrics import FINISHED, LOG_FILE, in_layout, read_metrics, read_yaml

RESUME_KEY = "train.resume"


def sqlite_path(storage: Any) -> Path | None:
    """The file of an Optuna 'sqlite:///path' storage URL (relative paths stay relative), else None."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:///"):
        return None
    path = storage.removeprefix("sqlite:///")
    return Path(path) if path and path != ":memory:" else None


def resumable_tpe_sampler(seed: int | None = None, **options: Any) -> Any:
    """Optuna's TPE sampler (`options`: its other arguments) seeded with `seed` plus the trials the study holds when
    this process first samples: a resumed study's first (random) proposals would repeat the first run's."""
    from optuna.samplers import BaseSampler, TPESampler

    class ResumableTPESampler(BaseSampler):  # defined here: optuna is an extra, and heavy to import
        tpe: TPESampler | None = None

        def sampler(self, trial: Any) -> TPESampler:
            if self.tpe is None:  # the first trial this process asks for: its number = trials stored before it
                # (running ones too: two sweeps on one study at once draw apart)
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


def discard(path: Path, left: tuple[str, ...], kind: str, home: Path) -> None:
    """Remove what set-up left in the dir `path` where it holds no more than that (.hydra/, an empty log, the names
    in `left`). A dir of nnrun's own goes too (`in_layout(path, kind)`: kind runs or multirun), with the dirs above
    it that this leaves empty. Any other dir, a link, and `home` (the user's working dir: Hydra's runtime.cwd) or a
    dir holding it stay, emptied."""
    if not path.is_dir() or not all(p.name in (".hydra", *left) or (p.suffix == ".log" and p.is_file() and
                                                                   p.stat().st_size == 0) for p in path.iterdir()):
        return
    home = home.resolve()

    def kept(folder: Path) -> bool:
        return folder.resolve() == home or folder.resolve() in home.parents

    if path.is_symlink() or not in_layout(path, kind) or kept(path):
        for entry in path.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        return
    shutil.rmtree(path)
    with contextlib.suppress(OSError):  # each only when empty: the first that is not stops it
        for parent in Path(os.path.abspath(path)).parents[:3]:  # as named, not where links above it lead
            if kept(parent):
                break
            parent.rmdir()


def discard_launch(sweep_dir: Path, made: list[Path], home: Path) -> None:
    """What a sweep refused before any training (sbatch refused it) leaves: the dirs its launch `made` (its job
    dirs, copies of finished jobs carried over from a resumed sweep, which keeps them, submitit's folder), then the
    sweep dir if only its multirun.yaml is left (emptied where the user named it). `home`: as for `discard`."""
    for path in made:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    discard(sweep_dir, ("multirun.yaml",), "multirun", home)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs of a sweep (each holds Hydra's .hydra/overrides.yaml), in order; at any depth, as a
    hydra.sweep.subdir of several parts (job/${hydra.job.num}) puts them."""
    return sorted(p.parent.parent for p in Path(sweep_dir).glob("**/.hydra/overrides.yaml"))


def objective(result, hydra_cfg: DictConfig) -> float:
    """What the task returns to a sweeper: the run's best monitored value. A failed run scores NaN, or where the
    sweeper optimises a direction the worst value for it: Optuna rejects NaN, which would end Hydra's search."""
    value = float("nan") if result is None else result.objective
    direction = OmegaConf.select(hydra_cfg, "sweeper.direction", default=None)
    if isinstance(direction, str) and value != value:
        return float("-inf") if direction.lower().endswith("maximize") else float("inf")
    return value


def without_resume(overrides) -> list[str]:
    """A job's override lines less train.resume: what names the same job in the sweep it resumes."""
    return [line for line in overrides if line.split("=", 1)[0].lstrip("+~") != RESUME_KEY]


def resume_lines(overrides) -> list[str]:
    """The train.resume lines of a command line's overrides (what `without_resume` leaves out)."""
    return [line for line in overrides if line.split("=", 1)[0].lstrip("+~") == RESUME_KEY]


def resume_sweep_dir(exp_name: str, resume: str, current: Path, root: Path = Path(".")) -> Path:
    """The sweep `train.resume` names: a sweep dir (it holds multirun.yaml), or `latest`: exp_name's newest other
    than `current`, this sweep's dir. Where nnrun names that (experiments/<exp>/multirun/<time>), the newest beside
    it: a job of a sweep over exp_name is in its sweep's experiment, not its own."""
    if resume == "latest":
        current = root / current
        sweeps = current.parent if in_layout(current, "multirun") else root / "experiments" / exp_name / "multirun"
        candidates = sorted((p for p in sweeps.glob("*/multirun.yaml") if p.parent.resolve() != current.resolve()),
                            key=started)
        if not candidates:
            raise UsageError(f"{RESUME_KEY}=latest finds no sweep to resume: there is no other sweep under {sweeps}; "
                             f"give a sweep dir, or leave out {RESUME_KEY} to start this sweep")
        return candidates[-1].parent
    path = root / Path(resume).expanduser()  # where nnrun was started, also for a job in its own dir (chdir)
    if not (path / "multirun.yaml").is_file():
        raise UsageError(f"{RESUME_KEY}={resume} is not a sweep dir (it holds no multirun.yaml); a sweep (-m) goes on "
                         "from a sweep dir, or from latest")
    return path


def started(multirun_yaml: Path) -> tuple[str, int]:
    """A sweep's place in time by its dir's name, <YYYY-MM-DD_HH-MM-SS>[_n]: `_10` after `_9`."""
    stamp, _, n = multirun_yaml.parent.name.rpartition("_")
    return (stamp, int(n)) if n.isdigit() else (multirun_yaml.parent.name, 0)


def job_key(overrides) -> tuple[str, ...]:
    return tuple(sorted(without_resume(overrides)))


def job_overrides(job_dir: Path) -> list[str] | None:
    return read_yaml(Path(job_dir) / ".hydra" / "overrides.yaml")


def index(sweep_dir: Path, known: dict) -> dict[tuple[str, ...], Path]:
    """Each job dir of a sweep by its `job_key` (the first one of a key), kept in `known` by sweep dir and mtime
    (a dir that gains a job is indexed anew), so that all the jobs of a resumed sweep read the sweep it resumes once."""
    key = (Path(sweep_dir).resolve(), Path(sweep_dir).stat().st_mtime_ns)
    if key not in known:
        jobs: dict[tuple[str, ...], Path] = {}
        for job_dir in job_dirs(sweep_dir):
            if (ran := job_overrides(job_dir)) is not None:
                jobs.setdefault(job_key(ran), job_dir)
        known[key] = jobs
    return known[key]


def namesake(sweep_dir: Path, name: str, overrides, known: dict | None = None) -> Path | None:
    """The job dir of `sweep_dir` that ran with these overrides (train.resume aside) and saved a checkpoint: the one
    of this job's own `name` (the same sweep), else, where it ran others (hydra.sweep.subdir), found by `index`.
    Where that sweep resumed another and was stopped before the job trained there (while it set its jobs up), the
    job's namesake in the sweep before."""
    known, wanted, seen = {} if known is None else known, job_key(overrides), set()
    while sweep_dir is not None and Path(sweep_dir).resolve() not in seen:
        seen.add(Path(sweep_dir).resolve())
        found = Path(sweep_dir) / name
        ran = job_overrides(found)
        if ran is None or job_key(ran) != wanted:
            found = index(sweep_dir, known).get(wanted)
        if found is not None and (found / CHECKPOINT_FILE).is_file():
            return found
        sweep_dir = resumed_by(Path(sweep_dir), known)
    return None


def resumed_by(sweep_dir: Path, known: dict) -> Path | None:
    """The sweep that `sweep_dir` resumed, as its multirun.yaml says (`latest` as it was then: the newest beside it
    that started before it), or None; kept in `known`."""
    key = ("resumed", sweep_dir.resolve())
    if key not in known:
        saved = read_yaml(sweep_dir / "multirun.yaml")
        hydra = (saved.get("hydra") if isinstance(saved, dict) else None) or {}
        lines = resume_lines((hydra.get("overrides") or {}).get("task") or [])
        resume, earlier = lines[-1].split("=", 1)[1] if lines else None, None
        if resume == "latest":
            before = [p.parent for p in sweep_dir.parent.glob("*/multirun.yaml")
                      if started(p) < started(sweep_dir / "multirun.yaml")]
            earlier = max(before, key=lambda d: started(d / "multirun.yaml"), default=None)
        elif resume is not None and "cwd" in (hydra.get("runtime") or {}):
            earlier = Path(str(hydra["runtime"]["cwd"])) / Path(resume).expanduser()
        known[key] = earlier if earlier is not None and (earlier / "multirun.yaml").is_file() else None
    return known[key]


def resumed_job(exp_name: str, resume: str, hydra_cfg: DictConfig, known: dict | None = None) -> Path | None:
    """The `namesake` of a sweep's job (`hydra_cfg`: its `hydra` node) in the sweep that `resume` names."""
    root = Path(hydra_cfg.runtime.cwd)  # experiments/ is where nnrun was started
    source = resume_sweep_dir(exp_name, resume, root / str(hydra_cfg.sweep.dir), root)
    return namesake(source, str(hydra_cfg.sweep.subdir), list(hydra_cfg.overrides.task), known)


def carry_over(source: Path, run_dir: Path) -> None:
    """A finished job of the resumed sweep copied into this job's dir, but for what it holds (.hydra/, a log with
    lines in it: the one Hydra has just made for the job is empty, and the source's holds the job's result). A
    sweep resumed into its own dir has the job there already."""
    if Path(source).resolve() == Path(run_dir).resolve():
        return

    def held(folder: str, names: list[str]) -> list[str]:
        here = run_dir / Path(folder).relative_to(source)
        empty_log = here / LOG_FILE if (here / LOG_FILE).is_file() and (here / LOG_FILE).stat().st_size == 0 else None
        return [name for name in names if (here / name).exists() and here / name != empty_log]

    shutil.copytree(source, run_dir, ignore=held, dirs_exist_ok=True)


def check_same_sweep(config: DictConfig) -> Path | None:
    """The sweep that train.resume names (None without it). It must be the same sweep: the same command line
    (train.resume aside) and swept values, else UsageError naming the first difference."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(resume_lines(config.hydra.overrides.task)):
        if override.is_sweep_override():
            raise UsageError(f"{override.input_line} sweeps {RESUME_KEY}: a sweep goes on as a whole, from one sweep "
                             f"dir or from latest (each job from its namesake there)")
    resume = OmegaConf.select(config, RESUME_KEY, default=None)
    if resume is None:
        return None
    source = resume_sweep_dir(str(config.exp_name), str(resume), Path(config.hydra.sweep.dir),
                              Path(config.hydra.runtime.cwd))

    def sweep_of(cfg: DictConfig) -> dict[str, str]:
        lines = without_resume(OmegaConf.to_container(cfg.hydra.overrides.task))
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        return {**{str(k): str(v) for k, v in params.items()},
                **dict(line.split("=", 1) if "=" in line else (line, "") for line in lines)}

    then, now = sweep_of(OmegaConf.load(source / "multirun.yaml")), sweep_of(config)
    for key in sorted(set(then) | set(now)):
        if then.get(key) != now.get(key):
            was, has = (f"{key}={side[key]}" if key in side else f"no {key}" for side in (then, now))
            raise UsageError(f"{RESUME_KEY}={resume} names the sweep {source}, which ran with {was} where this "
                             f"command has {has}: a sweep goes on with the command line it was started with "
                             f"(give that one, or leave out {RESUME_KEY} to start a new sweep)")
    return source


def resume_line(source: Path) -> str:
    """What a resumed sweep takes from the sweep `source`: its finished jobs, and its checkpoints."""
    finished = going_on = 0
    known: dict = {}
    earlier = resumed_by(source, known)  # where a job it set up but never trained goes on from
    for job_dir in job_dirs(source):
        if (read_metrics(job_dir) or {}).get("status") in FINISHED:
            finished += 1
        elif (job_dir / CHECKPOINT_FILE).is_file() or (earlier is not None and namesake(
                earlier, str(job_dir.relative_to(source)), job_overrides(job_dir) or [], known) is not None):
            going_on += 1
    return (f"nnrun: resuming the sweep {shown_path(source)}: {plural(finished, 'finished job')} carried over, "
            f"{going_on} going on from {'its checkpoint' if going_on == 1 else 'their checkpoints'}, the others from "
            "the start")


class SweepSummary(Callback):
    """Before a sweep: check that a resumed sweep is the one it resumes (and say what it takes from it), and make
    the dir of an SQLite study. After it: one table of how the jobs ended, then exit 1 if a job failed (a fault;
    diverged is a result). Callbacks run in the process that started the sweep, under every launcher."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            source = check_same_sweep(config)
        except ConfigError as exc:
            fail(str(exc))
        if source is not None:
            print(resume_line(source), flush=True)
        # SQLite creates the file but not its dir, and Optuna opens the study before the first job makes it.
        path = sqlite_path(config.hydra.sweeper.get("storage"))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # A job with no metrics.json never trained or was killed: failed.
        statuses = [(read_metrics(d) or {}).get("status", "failed") for d in job_dirs(sweep_dir)]
        results = read_yaml(sweep_dir / "optimization_results.yaml")  # the Optuna sweeper's, if it wrote one
        best = None
        if isinstance(results, dict) and "best_value" in results:
            params = " ".join(f"{k}={v}" for k, v in (results.get("best_params") or {}).items())
            best = f"best value {results['best_value']:.4f} with {params}"
        print_sweep_summary(str(sweep_dir), statuses, len(statuses), best_trial=best)
        if "failed" in statuses:
            sys.exit(1)
