"""nnrun's sweeper (hydra/sweeper=nnrun, the default): the jobs of Hydra's basic sweeper, every one built once and
checked before any starts, launched by the vectorized launcher as checked, resumed in one pass, and Ctrl-C in
every phase one line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from conftest import (assert_same_results, interrupt_when, needs_extra, read_metrics, results, run_dirs, run_main,
                      start)

# Command lines whose jobs both sweepers expand: sweeps, ranges, a key given twice, glob, lists, group choices,
# params from an experiment file, batches.
COMMAND_LINES = [
    ["optimizer.lr=0.1,0.01", "seed=range(2)"],
    ["seed=0,1", "train.epochs=3", "seed=2,3"],
    ["activation=glob(*,exclude=[gelu,elu,softplus,leaky_relu,linear])", "seed=0"],
    ["model.hidden=[4],[8,8]", "optimizer=sgd,adam"],
    ["+exp=linear_vs_nonlinear", "seed=0", "optimizer.lr=choice(0.1)"],
    ["optimizer.betas=[0.9,0.99],[0.8,0.9]", "hydra.sweeper.max_batch_size=1"],
    ["seed=range(3)", "hydra.sweeper.max_batch_size=2"],
]


def _jobs(hydra_sweep_runner, sweeper: str, line: list[str], tmp_path: Path) -> list[list[tuple[int, list[str]]]]:
    """The batches a sweep launched, each job as (hydra.job.num, its overrides), with a task that only returns."""
    from nnrun.config import config_dir

    with hydra_sweep_runner(calling_file=str(config_dir() / "train.yaml"), calling_module=None,
                            task_function=lambda cfg: 0, config_path=str(config_dir()), config_name="train",
                            overrides=[f"hydra/sweeper={sweeper}", "hydra/job_logging=disabled",
                                       "~hydra.callbacks.sweep_summary", *line],
                            temp_dir=tmp_path / sweeper) as sweep:
        return [[(ret.hydra_cfg.hydra.job.num, ret.overrides) for ret in batch] for batch in sweep.returns]


@pytest.mark.usefixtures("hydra_restore_singletons")
@pytest.mark.parametrize("line", COMMAND_LINES, ids=[" ".join(line) for line in COMMAND_LINES])
def test_the_sweeper_launches_the_jobs_of_hydras_basic_sweeper_in_its_order_numbering_and_batches(
        hydra_sweep_runner, line, tmp_path):
    from nnrun.app import register_resolvers

    register_resolvers()  # nnrun's, which name the job dirs (the fixture clears what others registered)
    ours = _jobs(hydra_sweep_runner, "nnrun", line, tmp_path)
    assert ours == _jobs(hydra_sweep_runner, "basic", line, tmp_path)
    assert sum(map(len, ours)) > 1


def test_a_sweep_with_one_bad_combination_is_refused_before_any_job_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for loss in ("cross_entropy,bce", "bce,cross_entropy"):  # the bad job first or last: refused all the same
        code, out, err = run_main(["train", "-m", "dataset=spirals", f"loss={loss}", "dataset.classes=2,3"], capsys)
        assert code == 2
        bad = 3 if loss.startswith("cross") else 1
        assert err.splitlines() == [f"nnrun: error: job #{bad} (dataset=spirals loss=bce dataset.classes=3): "
                                    "loss='bce' is not allowed: bce and mse need 2 classes, the data has 3; "
                                    "use loss=cross_entropy"]
        assert out.startswith("nnrun: a sweep of 4 jobs: loss x 2, dataset.classes x 2\nnnrun: checking 4 jobs\n")
        assert not (tmp_path / "experiments").exists()


# Sweeps whose hydra.sweep.subdir gives two jobs one dir, and the line that refuses each.
SHARED_DIRS = {
    "the experiment left out of override_dirname": (
        ["+exp=xor_relu,xor_sigmoid", "hydra.sweep.subdir=${hydra.job.override_dirname}"],
        "job #0 (+exp=xor_relu train.epochs=2) and job #1 (+exp=xor_sigmoid train.epochs=2) would write into one "
        "job dir, 'train.epochs=2' (hydra.sweep.subdir=${hydra.job.override_dirname})"),
    "one name for all": (["seed=0,1", "hydra.sweep.subdir=same"],
                         "job #0 (seed=0 train.epochs=2) and job #1 (seed=1 train.epochs=2) would write into one job "
                         "dir, 'same' (hydra.sweep.subdir=same)"),
    "the sweep dir itself": (["seed=0,1", "hydra.sweep.subdir=./"],
                             "job #0 (seed=0 train.epochs=2) and job #1 (seed=1 train.epochs=2) would write into one "
                             "job dir, the sweep dir itself (hydra.sweep.subdir=./)"),
    "a key of the job's config, not all it varies": (
        ["optimizer.lr=0.1,0.01", "seed=0,1", "hydra.sweep.subdir=seed_${seed}/"],
        "job #0 (optimizer.lr=0.1 seed=0 train.epochs=2) and job #2 (optimizer.lr=0.01 seed=0 train.epochs=2) would "
        "write into one job dir, 'seed_0/' (hydra.sweep.subdir=seed_${seed}/)"),
}


@pytest.mark.parametrize("launcher", ["basic", "vectorized", "joblib"])
@pytest.mark.parametrize("line,said", SHARED_DIRS.values(), ids=SHARED_DIRS.keys())
def test_a_sweep_whose_subdir_gives_two_jobs_one_dir_is_refused_before_any_job_naming_both(launcher, line, said,
                                                                                           tmp_path, nnrun_here):
    """Each job would write over the other's files (and the summary count one job): the sweep is bad input."""
    if launcher == "joblib":
        needs_extra("hydra_plugins.hydra_joblib_launcher")
    code, out, err = nnrun_here(["train", "-m", f"hydra/launcher={launcher}", *line, "train.epochs=2",
                                 "hydra/job_logging=none"])
    assert code == 2, out + err
    assert err.splitlines() == [f"nnrun: error: {said}: make hydra.sweep.subdir differ per job, e.g. include "
                                "${hydra.job.num}"]
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("launcher,subdir", [
    *((launcher, subdir) for launcher in ("basic", "vectorized")
      for subdir in (None, "job/${hydra.job.id}", "${hydra.job.num}_${seed}")),
    ("basic", "${hydra:job.num}"),
])
def test_a_sweep_whose_subdir_differs_per_job_runs_and_resumes(launcher, subdir, tmp_path, nnrun_here):
    """nnrun's own subdir (conf/train.yaml), Hydra's `${hydra:...}` read in each job's config (as run_job reads
    it), a job's id or a key beside its number: every job its own dir, also when the sweep resumes another."""
    args = ["train", "-m", f"hydra/launcher={launcher}", "seed=0,1", "train.epochs=2", "hydra/job_logging=none",
            *([] if subdir is None else [f"hydra.sweep.subdir={subdir}"])]
    code, out, err = nnrun_here(args)
    assert code == 0, err
    code, out, err = nnrun_here([*args, "train.resume=latest"])
    assert code == 0, err
    assert "2 finished jobs carried over" in out
    for sweep_dir in (tmp_path / "experiments" / "default" / "multirun").iterdir():
        assert [read_metrics(d)["status"] for d in run_dirs(sweep_dir)] == ["completed"] * 2


@pytest.mark.parametrize("args,said", [
    (["train", "-m", "hydra.sweeper.max_batch_size=0", "seed=0,1"],
     "hydra.sweeper.max_batch_size=0 is not allowed: an integer >= 1 or null"),
    *((["train", "-m", *sweeper, "optimizer.lr=interval(0.1,1)"], "optimizer.lr=interval(0.1,1) is a range to "
       "sample: nnrun's sweeper (and Hydra's basic one) runs lists of values (a,b,c, range(), glob()); a sweeper "
       "that samples takes ranges, such as hydra/sweeper=optuna") for sweeper in ([], ["hydra/sweeper=basic"])),
    (["train", "--cfg", "all", "--package", "hydra.sweep.dir"], None),  # prints the dir's name
    (["-sc", "query=bash"], None),  # a shell completion of hydra.sweep.dir=
])
def test_a_sweep_dir_is_only_named_until_the_sweep_launches(args, said, tmp_path, capsys, monkeypatch):
    """The sweep dir's name is chosen as the config resolves; the dir is made when the sweep launches, so what
    never launches a sweep (refused by nnrun's sweeper: one line, exit 2) leaves none behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMP_LINE", "nnrun train -m hydra.sweep.dir=")
    code, out, err = run_main(args, capsys)
    if said is not None:
        assert code == 2 and err.splitlines() == [f"nnrun: error: {said}"], err
    else:
        assert code == 0 and "Traceback" not in err, err
    if "--package" in args:
        assert out.startswith("experiments/default/multirun/"), out
    assert not (tmp_path / "experiments").exists()


def test_a_glob_sweep_runs_one_job_per_matching_choice(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", "-m", "hydra/launcher=vectorized", "activation=glob(s*)",
                               "model.hidden=[2]", "train.epochs=2", "hydra/job_logging=none"], capsys)
    assert code == 0, err
    names = sorted(d.name for d in run_dirs(tmp_path / "experiments"))
    assert names == ["0_activation=sigmoid,model.hidden=[2],train.epochs=2",
                     "1_activation=softplus,model.hidden=[2],train.epochs=2"]


def test_the_vectorized_launcher_launches_the_configs_the_sweeper_checked(tmp_path, capsys, monkeypatch):
    """Each job's config is built once, by the sweeper: the launcher composes none again."""
    from hydra_plugins.nnrun.sweep_configs import SweepConfigs

    built = []
    real_load = SweepConfigs.load
    monkeypatch.setattr(SweepConfigs, "load", lambda self, overrides: built.append(overrides) or real_load(self, overrides))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", "-m", "hydra/launcher=vectorized", "optimizer.lr=0.1,0.01", "seed=range(4)",
                               "train.epochs=3", "hydra/job_logging=none"], capsys)
    assert code == 0, err
    assert len(built) == 8 and len({tuple(job) for job in built}) == 8
    lines = out.splitlines()
    assert lines[:3] == ["nnrun: a sweep of 8 jobs: optimizer.lr x 2, seed x 4", "nnrun: checking 8 jobs",
                         lines[2]] and lines[2].startswith("nnrun: checked 8 jobs in ")
    assert lines[3] == "nnrun: setting up 8 jobs" and lines[4].startswith("nnrun: set up 8 jobs in ")
    assert [read_metrics(d)["status"] for d in run_dirs(tmp_path / "experiments")] == ["completed"] * 8


def test_a_stop_signal_after_the_last_job_ended_leaves_the_summary_and_exit_code_as_they_are(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C just after the stacks trained (the launcher still handing back its results) changes nothing: the
    summary follows, the exit code is the sweep's, nothing is called interrupted; Ctrl-C's handler is put back."""
    from nnrun import engine

    real_train_jobs = engine.train_jobs

    def then_ctrl_c(*args, **kwargs):
        results = real_train_jobs(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train_jobs", then_ctrl_c)
    monkeypatch.chdir(tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    code, out, err = run_main(["train", "-m", "hydra/launcher=vectorized", "seed=0,1", "train.epochs=3",
                               "hydra/job_logging=none"], capsys)
    assert code == 0 and "interrupt" not in out + err, err
    assert "sweep: 2 jobs" in out and signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("launcher", ["vectorized", "basic"])
def test_a_resumed_sweep_carries_its_finished_jobs_over_without_setting_them_up(launcher, tmp_path, capsys,
                                                                                monkeypatch):
    """Each job finds its namesake by its name (no scan of the old sweep per job), a finished one is copied over
    without a model built (under the vectorized launcher, without Hydra's run_job), and the sweep says once
    what it takes over."""
    from nnrun import models, sweep

    monkeypatch.chdir(tmp_path)
    args = ["train", "-m", f"hydra/launcher={launcher}", "seed=range(3)", "train.epochs=3", "hydra/job_logging=none"]
    assert run_main(args, capsys)[0] == 0
    read = []
    real = sweep.job_overrides
    monkeypatch.setattr(sweep, "job_overrides", lambda job_dir: read.append(job_dir) or real(job_dir))
    monkeypatch.setattr(models, "build", lambda *args: pytest.fail("a model was built"))
    # Hydra's own job logging on: a carried job's train.log is its namesake's (its result), not the empty one
    # Hydra makes for the job before it is carried over.
    code, out, err = run_main([*args[:-1], "train.resume=latest"], capsys)
    assert code == 0, err
    assert len(read) == 3  # one per job: no job reads the others'
    sweeps = sorted((tmp_path / "experiments" / "default" / "multirun").iterdir())
    said = [line for line in out.splitlines() if "resuming" in line or "carried over" in line]
    assert said == [f"nnrun: resuming the sweep {sweeps[0].relative_to(tmp_path)}: 3 finished jobs carried over, "
                    "0 going on from their checkpoints, the others from the start"]
    assert [read_metrics(d) for d in run_dirs(sweeps[1])] == [read_metrics(d) for d in run_dirs(sweeps[0])]
    logs = [[(d / "train.log").read_text() for d in run_dirs(sweep_dir)] for sweep_dir in sweeps]
    assert logs[1] == logs[0] and all("] - completed after 3 epochs (" in log for log in logs[0])


def test_a_sweep_resumed_into_its_own_dir_keeps_its_jobs(tmp_path, capsys, monkeypatch):
    """train.resume names the sweep dir the sweep writes to: each finished job is its own namesake, left as it is
    (a copy onto itself was shutil's 'are the same file' error)."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "-m", "seed=0,1", "train.epochs=2", "hydra/job_logging=none", "hydra.sweep.dir=same"]
    assert run_main(args, capsys)[0] == 0
    jobs = run_dirs(tmp_path / "same")
    before = [read_metrics(job) for job in jobs]
    for job in jobs:
        (job / "train.log").write_text("")
    code, out, err = run_main([*args, f"train.resume={tmp_path / 'same'}"], capsys)
    assert code == 0, err
    assert "2 finished jobs carried over" in out and [read_metrics(job) for job in jobs] == before


def test_a_job_goes_on_from_its_namesake_only_where_it_saved_a_checkpoint(tmp_path):
    from nnrun import sweep

    def job(name: str, overrides: list[str], checkpoint: bool) -> Path:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        if checkpoint:
            (tmp_path / name / "checkpoint.pt").write_bytes(b"")
        return tmp_path / name

    trained = job("0_seed=0", ["seed=0", "train.resume=x"], checkpoint=True)
    job("1_seed=1", ["seed=1"], checkpoint=False)  # set up, never trained
    elsewhere = job("job-b", ["seed=2"], checkpoint=True)  # named otherwise (hydra.sweep.subdir)
    assert sweep.namesake(tmp_path, "0_seed=0", ["seed=0", "train.resume=latest"]) == trained
    assert sweep.namesake(tmp_path, "1_seed=1", ["seed=1"]) is None
    assert sweep.namesake(tmp_path, "2_seed=2", ["seed=2"]) == elsewhere
    assert sweep.namesake(tmp_path, "3_seed=3", ["seed=3"]) is None


def test_the_jobs_a_cut_sweep_never_reached_read_the_sweep_they_resume_once(tmp_path, monkeypatch):
    """Cut while set up, a sweep lacks the dirs of the jobs it never reached: each of them looks for its namesake
    elsewhere in it, through one index of the sweep (not one per job: quadratic in the jobs); a job dir added to
    the sweep is seen."""
    from nnrun import sweep

    for n in range(3):
        (tmp_path / f"{n}_seed={n}" / ".hydra").mkdir(parents=True)
        (tmp_path / f"{n}_seed={n}" / ".hydra" / "overrides.yaml").write_text(f"- seed={n}\n")
        (tmp_path / f"{n}_seed={n}" / "checkpoint.pt").write_bytes(b"")
    read = []
    real = sweep.job_overrides
    monkeypatch.setattr(sweep, "job_overrides", lambda job_dir: read.append(job_dir) or real(job_dir))
    known: dict = {}
    assert [sweep.namesake(tmp_path, f"{n}_seed={n}", [f"seed={n}"], known) for n in range(3, 50)] == [None] * 47
    assert len(read) == 47 + 3  # its own name once per job; the sweep's 3 job dirs once
    (tmp_path / "x" / ".hydra").mkdir(parents=True)
    (tmp_path / "x" / ".hydra" / "overrides.yaml").write_text("- seed=60\n")
    (tmp_path / "x" / "checkpoint.pt").write_bytes(b"")
    later = tmp_path.stat().st_mtime_ns + 10 ** 9  # the dir's clock may not have ticked since it was indexed
    os.utime(tmp_path, ns=(later, later))
    assert sweep.namesake(tmp_path, "60_seed=60", ["seed=60"], known) == tmp_path / "x"


# 64 jobs of one stack, checkpointed as they train.
SIXTY_FOUR = ["train", "-m", "hydra/launcher=vectorized", "optimizer.lr=0.3,0.1,0.03,0.01", "seed=range(16)",
              "train.epochs=1000", "train.log_every=100", "train.checkpoint_every=50", "train.image_every=0",
              "hydra/job_logging=none"]


@pytest.mark.slow
def test_a_64_job_sweep_cut_while_set_up_then_while_training_resumes_to_the_uncut_results(tmp_path, nnrun_here):
    """Cut while its jobs are set up (some have a dir, none trained), resumed and cut again while it trains (some
    checkpoints written), resumed again: every job ends as in a sweep never cut. (The cuts are real Ctrl-Cs to a
    new process; the sweeps that run through, in this one.)"""
    code, _, err = nnrun_here([*SIXTY_FOUR, "exp_name=whole"])
    assert code == 0, err
    (whole_dir,) = (tmp_path / "experiments" / "whole" / "multirun").iterdir()
    experiment = tmp_path / "experiments" / "cut" / "multirun"
    resume: list[str] = []
    for ready in (lambda d: len(list(d.glob("*/*/.hydra"))) >= 20, lambda d: list(d.glob("*/*/checkpoint.pt"))):
        before = set(experiment.iterdir()) if experiment.is_dir() else set()
        code, out, err = interrupt_when(start([*SIXTY_FOUR, "exp_name=cut", *resume], tmp_path),
                                        lambda: experiment.is_dir() and ready(experiment))
        assert code == 130, err
        (cut_dir,) = set(experiment.iterdir()) - before
        said = err.strip().splitlines()
        assert said[0] == f"nnrun: interrupted by SIGINT; results saved in {cut_dir.relative_to(tmp_path)}", err
        assert len(said) == 2, err
        assert said[1].endswith(f"exp_name=cut train.resume={cut_dir.relative_to(tmp_path)}")
        resume = [f"train.resume={cut_dir}"]
    code, _, err = nnrun_here([*SIXTY_FOUR, "exp_name=cut", *resume])
    assert code == 0, err
    assert_same_results(results(max(experiment.iterdir())), results(whole_dir))


@pytest.mark.slow
def test_ctrl_c_while_a_sweep_is_checked_is_one_line_and_starts_nothing(tmp_path):
    process = start(["train", "-m", "optimizer.lr=range(0.001,1,0.001)", "train.epochs=2"], tmp_path)
    said = process.stdout.readline() + process.stdout.readline()
    assert said.startswith("nnrun: a sweep of 999 jobs") and "nnrun: checking 999 jobs" in said
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.splitlines() == ["nnrun: interrupted before any training; nothing was saved",
                                "to start again: nnrun train -m 'optimizer.lr=range(0.001,1,0.001)' train.epochs=2"]
    assert not (tmp_path / "experiments").exists()
