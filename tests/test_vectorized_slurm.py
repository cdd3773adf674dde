"""`hydra/launcher=vectorized_slurm`: a sweep's stacks as SLURM jobs on a real cluster (the one-node cluster
`.ci/slurm-cluster` starts): one SLURM job per stack, each run dir and result as a local vectorized sweep's; a
stack cancelled mid-training leaves its runs `interrupted` and `train.resume=latest` finishes them; bad input is
one line and exit 2 before anything is submitted. The cluster tests skip where no cluster is up, except under CI
(CI=true), where a missing cluster is a failure.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import (PARTITION, assert_same_results, compose, interrupt_when, needs_extra, only_sweep_dir,
                      read_metrics, require_cluster, results, run_dirs, run_nnrun, start, summary_count, wait_until)

LAUNCHER = ["hydra/launcher=vectorized_slurm", f"hydra.launcher.partition={PARTITION}"]
# 32 jobs, 8 a stack: 4 SLURM jobs.
SWEEP_32 = ["optimizer.lr=0.01,0.1", "seed=range(16)", "train.epochs=60", "train.log_every=20",
            "hydra.launcher.max_models=8"]
# 16 jobs, 2 stacks, each long enough to be cancelled while it trains (1-2 ms an epoch here).
SWEEP_16 = ["optimizer.lr=0.01,0.1", "seed=range(8)", "train.epochs=6000", "train.log_every=500",
            "hydra.launcher.max_models=8"]


@pytest.fixture
def cluster():
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    require_cluster()


def slurm_jobs(sweep_dir: Path) -> list[str]:
    """The SLURM job of each stack, in the stacks' order: submitit's folders <array id>_<task> (<job id> for one)."""
    names = [p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    if len(names) > 1:  # a job array's tasks, not the array's own folder (its sbatch script)
        names = [name for name in names if "_" in name]
    return sorted(names, key=lambda name: int(name.split("_")[-1]))


def fake_sbatch(tmp_path: Path, monkeypatch, script: str) -> None:
    """An `sbatch` first on PATH that runs the shell lines `script` (and submits nothing)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f"#!/bin/sh\n{script}\n")
    (fake / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")


def stack_processes(sweep_dir: Path) -> list[int]:
    """The pids of the Python processes running this sweep's stacks here: submitit's `_submit` on its folder."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:  # not a process, or one that has ended
            continue
        # Python itself, not the srun line that started it
        if Path(argv[0]).name.startswith("python") and "submitit.core._submit" in argv \
                and any(arg.startswith(str(sweep_dir / ".submitit")) for arg in argv):
            pids.append(int(entry.name))
    return pids


def files_of(run_dir: Path) -> list[str]:
    return sorted("events" if p.name.startswith("events.out.tfevents.") else p.name for p in run_dir.iterdir())


@pytest.mark.slow
@pytest.mark.slurm
def test_a_32_job_sweep_of_8_a_stack_is_4_slurm_jobs_with_the_local_vectorized_sweeps_results(cluster, tmp_path,
                                                                                            nnrun_here):
    sweep = run_nnrun(["train", "-m", *LAUNCHER, *SWEEP_32, "exp_name=cluster"], tmp_path, timeout=600)
    assert sweep.returncode == 0, sweep.stderr
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized", *SWEEP_32, "exp_name=here"])
    assert code == 0, err
    on_cluster, here = only_sweep_dir(tmp_path, "cluster"), only_sweep_dir(tmp_path, "here")

    jobs = slurm_jobs(on_cluster)
    assert len(jobs) == 4
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_{task}" for task in range(4)]
    assert f"4 stacks submitted to SLURM as {array}_0 ... {array}_3 (32 jobs)" in sweep.stdout
    # The settings reach sbatch as the submitit plugin hands them over: its defaults, slurm_ names for SLURM's.
    script = (on_cluster / ".submitit" / array / f"{array}_submission.sh").read_text()
    # (array_parallelism, 256, capped by submitit at the array's 4 tasks)
    for line in (f"--partition={PARTITION}", "--time=60", "--signal=USR2@120", "--array=0-3%4", "--nodes=1",
                 "--ntasks-per-node=1", "--job-name=train"):
        assert f"#SBATCH {line}\n" in script, script
    for task in range(4):
        # One line as each stack's SLURM job ends, in whatever order they end.
        assert re.search(rf"nnrun: stack {task + 1}/4 \(SLURM job {array}_{task}\): 8 jobs, "
                         rf"#{8 * task}-#{8 * task + 7} after \d+ s: 8 completed", sweep.stdout), sweep.stdout
        # Each ran on the cluster, as one stack of 8.
        log = (on_cluster / ".submitit" / f"{array}_{task}" / f"{array}_{task}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={array}_{task}," in log
        assert "nnrun: trained 8 jobs in 1 stack (8 completed)" in log
    assert summary_count(sweep.stdout, "completed") == 32

    assert [d.name.replace("cluster", "here") for d in run_dirs(on_cluster)] == [d.name for d in run_dirs(here)]
    for a, b in zip(run_dirs(on_cluster), run_dirs(here)):
        assert files_of(a) == files_of(b) == [".hydra", "checkpoint.pt", "events", "metrics.json", "train.log"]
    assert_same_results(results(on_cluster), results(here), 1e-5)


@pytest.mark.slow
@pytest.mark.slurm
def test_a_cancelled_stack_leaves_its_runs_interrupted_and_resume_finishes_them_as_an_uncut_sweep(cluster, tmp_path,
                                                                                                  nnrun_here):
    args = ["train", "-m", *LAUNCHER, *SWEEP_16, "exp_name=cut"]
    process = start(args, tmp_path)
    experiment = tmp_path / "experiments" / "cut" / "multirun"
    # The second stack (lr 0.1) trains once its runs' event files are there: cancel its SLURM job then.
    wait_until(lambda: len(list(experiment.glob("*/*,optimizer.lr=0.1,*/events.out.tfevents.*"))) == 8, process,
               timeout=240)
    cut_dir = only_sweep_dir(tmp_path, "cut")
    first, second = slurm_jobs(cut_dir)
    subprocess.run(["scancel", second], check=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert re.search(rf"stack 2/2 \(SLURM job {second}\): 8 jobs, #8-#15 after \d+ s: 8 interrupted", out), out
    assert re.search(rf"stack 1/2 \(SLURM job {first}\): 8 jobs, #0-#7 after \d+ s: 8 completed", out), out
    assert summary_count(out, "interrupted") == 8 and summary_count(out, "completed") == 8
    for run in run_dirs(cut_dir):
        cut = read_metrics(run)
        if ",optimizer.lr=0.1," in run.name:
            assert cut["status"] == "interrupted" and cut["epochs_run"] < 6000, run.name
        assert (run / "checkpoint.pt").exists()

    resumed = run_nnrun([*args, "train.resume=latest"], tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"nnrun: resuming the sweep {cut_dir.relative_to(tmp_path)}: 8 finished jobs carried over, 8 going on" \
        in resumed.stdout
    assert "nnrun: 1 stack submitted to SLURM" in resumed.stdout
    assert summary_count(resumed.stdout, "completed") == 16
    new_dir = max(experiment.iterdir())
    assert new_dir != cut_dir

    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized", *SWEEP_16, "exp_name=whole"])
    assert code == 0, err
    assert_same_results(results(new_dir), results(only_sweep_dir(tmp_path, "whole")), 1e-5)


@pytest.mark.slow
@pytest.mark.slurm
def test_ctrl_c_while_the_sweep_waits_cancels_its_slurm_jobs_which_save_their_runs(cluster, tmp_path):
    process = start(["train", "-m", *LAUNCHER, "seed=0,1", "train.epochs=1000000", "exp_name=stop"], tmp_path)
    code, out, err = interrupt_when(
        process, lambda: len(list((tmp_path / "experiments").glob("stop/multirun/*/*/events.out.tfevents.*"))) == 2,
        timeout=300)
    assert code == 130, err
    (job,) = slurm_jobs(only_sweep_dir(tmp_path, "stop"))  # one stack: a single SLURM job
    assert f"cancelling SLURM jobs {job}" in err
    assert err.splitlines()[-1].startswith("to go on: nnrun train -m ") and "train.resume=experiments/stop/" in err
    for run in run_dirs(only_sweep_dir(tmp_path, "stop")):
        assert read_metrics(run)["status"] == "interrupted" and (run / "checkpoint.pt").exists()
    running = subprocess.run(["squeue", "--noheader", "--states=PENDING,RUNNING", f"--jobs={job}"],
                             capture_output=True, text=True)
    assert running.stdout.strip() == "", running.stdout


@pytest.mark.slow
@pytest.mark.slurm
def test_a_stack_killed_outright_is_a_line_naming_its_log_and_its_runs_count_as_failed(cluster, tmp_path):
    """SIGKILL leaves no result file: SLURM's accounting (sacct), which submitit asks, saying the job has ended
    is what ends the wait."""
    process = start(["train", "-m", *LAUNCHER, "seed=0,1", "train.epochs=1000000", "exp_name=kill"], tmp_path)
    wait_until(lambda: len(list((tmp_path / "experiments").glob("kill/multirun/*/*/events.out.tfevents.*"))) == 2,
               process, timeout=240)
    (job,) = slurm_jobs(only_sweep_dir(tmp_path, "kill"))
    # scancel, whatever the signal, lets the job save: kill its Python itself (the cluster is this machine).
    (pid,) = stack_processes(only_sweep_dir(tmp_path, "kill"))
    os.kill(pid, signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert f"nnrun: stack 1/1 (SLURM job {job}) ended without returning its results; its runs count as their " \
           "run dirs say" in err, err
    assert f"/.submitit/{job}/{job}_0_log.err)" in err
    assert re.search(rf"nnrun: stack 1/1 \(SLURM job {job}\): 2 jobs, #0-#1 after \d+ s: 2 failed", out), out
    assert summary_count(out, "failed") == 2


@pytest.mark.slow
@pytest.mark.slurm
def test_a_partition_that_does_not_exist_is_slurms_own_line_and_exit_2(cluster, tmp_path):
    refused = run_nnrun(["train", "-m", "hydra/launcher=vectorized_slurm", "hydra.launcher.partition=nosuch",
                         "seed=0,1", "train.epochs=2", "exp_name=p"], tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "nnrun: error: sbatch refused the sweep's jobs: sbatch: error: invalid partition specified: nosuch"]
    assert not (tmp_path / "experiments").exists()  # nothing submitted, nothing left behind


def test_a_sweep_that_sbatch_refuses_leaves_nothing_behind(tmp_path, nnrun_here, monkeypatch):
    """Its jobs were set up (their dirs made) before sbatch said no: they go, and the sweep dir with them; another
    sweep of the experiment stays."""
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    # While it submits, another sweep in the same dir may finish a job ($OTHER_JOB): that one is not this sweep's.
    fake_sbatch(tmp_path, monkeypatch,
                "[ -n \"$OTHER_JOB\" ] && mkdir -p \"$OTHER_JOB\" && touch \"$OTHER_JOB/x.json\"\n"
                "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2\nexit 1")
    other = tmp_path / "experiments" / "p" / "multirun" / "2026-01-01_00-00-00"
    other.mkdir(parents=True)
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "hydra.launcher.gpus_per_node=1",
                               "seed=0,1", "train.epochs=2", "exp_name=p"])
    assert (code, err.strip().splitlines()) == (2, [
        "nnrun: error: sbatch refused the sweep's jobs: sbatch: error: Invalid generic resource (gres) specification"])
    assert [p.relative_to(tmp_path) for p in (tmp_path / "experiments").rglob("*")] == [
        Path("experiments/p"), Path("experiments/p/multirun"), Path("experiments/p/multirun/2026-01-01_00-00-00")]
    for empty in (other, other.parent, other.parent.parent, tmp_path / "experiments"):
        empty.rmdir()
    assert nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "seed=0,1", "train.epochs=2"])[0] == 2
    assert not (tmp_path / "experiments").exists()

    # A sweep dir given again (one whose stacks were killed, say): what was there stays, the new job dir goes.
    reused = tmp_path / "reused"
    old_log = reused / ".submitit" / "123_0" / "123_0_0_log.err"
    old_job = reused / "0_exp_name=p,seed=0,train.epochs=2" / ".hydra"
    for made in (old_log.parent, old_job):
        made.mkdir(parents=True)
    old_log.write_text("the killed stack's traceback")
    (reused / "multirun.yaml").write_text("{}")
    monkeypatch.setenv("OTHER_JOB", str(reused / "9_lr=0.1"))
    assert nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "seed=0,1", "train.epochs=2", "exp_name=p",
                       f"hydra.sweep.dir={reused}"])[0] == 2
    assert old_log.read_text() == "the killed stack's traceback" and old_job.is_dir()
    assert sorted(p.name for p in reused.iterdir()) == [".submitit", "0_exp_name=p,seed=0,train.epochs=2",
                                                       "9_lr=0.1", "multirun.yaml"]
    monkeypatch.delenv("OTHER_JOB")

    # A sweep dir named by a link: the link and the dir it leads to stay, emptied of what the sweep made.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "seed=0,1", "hydra.sweep.dir=link"])[0] == 2
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []

    # The working dir named as the sweep dir stays (emptied); a job dir two levels down leaves neither level.
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "seed=0,1", "hydra.sweep.dir=.",
                       "hydra.sweep.subdir=a/${hydra.job.num}"])[0] == 2
    assert Path.cwd() == tmp_path / "here" and list(Path.cwd().iterdir()) == []


def test_a_resumed_sweep_that_sbatch_refuses_leaves_the_sweep_it_resumes_as_latest(tmp_path, nnrun_here, monkeypatch):
    """Its finished jobs were carried over (copied) into a new sweep dir before sbatch said no: that dir goes, so
    train.resume=latest still names the sweep that holds the checkpoints."""
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    sweep = ["-m", "seed=0,1", "train.epochs=3", "exp_name=r", "hydra/job_logging=none"]
    assert nnrun_here(["train", *sweep, "hydra/launcher=vectorized"])[0] == 0
    (first,) = (tmp_path / "experiments" / "r" / "multirun").iterdir()
    (run_dirs(first)[1] / "metrics.json").unlink()  # job 1 "never finished": it goes on, job 0 is carried over
    fake_sbatch(tmp_path, monkeypatch, "echo 'sbatch: error: invalid partition specified: x' >&2\nexit 1")
    code, _, err = nnrun_here(["train", *sweep, "hydra/launcher=vectorized_slurm", "train.resume=latest"])
    assert (code, err.strip().splitlines()[-1]) == (
        2, "nnrun: error: sbatch refused the sweep's jobs: sbatch: error: invalid partition specified: x"), err
    assert list((tmp_path / "experiments" / "r" / "multirun").iterdir()) == [first]


def test_vectorized_slurm_without_m_is_one_line_and_exit_2(tmp_path, nnrun_here, monkeypatch):
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    code, _, err = nnrun_here(["train", "hydra/launcher=vectorized_slurm", "seed=0"])
    assert code == 2
    assert err.strip().splitlines() == [
        "nnrun: error: hydra/launcher=vectorized_slurm submits the stacks of a sweep as SLURM jobs; add -m "
        "(nnrun train -m hydra/launcher=vectorized_slurm seed=0)"]
    assert not (tmp_path / "experiments").exists()
    # Printing the config runs nothing: it needs neither -m nor sbatch.
    monkeypatch.setenv("PATH", "")
    code, out, err = nnrun_here(["train", "hydra/launcher=vectorized_slurm", "--cfg", "hydra"])
    assert code == 0, err
    assert "nnrun.vectorized_slurm_launcher.VectorizedSlurmLauncher" in out


def test_vectorized_slurm_where_there_is_no_sbatch_is_one_line_and_exit_2(tmp_path, nnrun_here, monkeypatch):
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", "seed=0,1"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("nnrun: error: hydra/launcher='vectorized_slurm' is not allowed: SLURM's sbatch is not "
                           "on PATH here") and "hydra/launcher=vectorized" in line
    assert not (tmp_path / "experiments").exists()


def test_the_stacks_planned_for_slurm_are_the_engines_chunks_of_one_kind_and_start(tmp_path):
    """32 jobs of one kind, 8 a stack: 4 stacks in the jobs' order; another architecture is another stack."""
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun.vectorized_slurm_launcher import plan_stacks
    from nnrun import engine
    from nnrun.config import parse

    def job(tree: dict, name: str, seed: int, lr: float) -> engine.Job:  # composed once, per-model values set
        return engine.Job(parse({**tree, "seed": seed, "optimizer": {**tree["optimizer"], "lr": lr}}), tmp_path / name)

    narrow, wide = (OmegaConf.to_container(compose(o), resolve=True) for o in ([], ["model.hidden=[8]"]))
    jobs = [job(narrow, str(n), s, lr) for n, (lr, s) in enumerate((lr, s) for lr in (0.01, 0.1) for s in range(16))]
    wides = [job(wide, f"w{s}", s, 0.01) for s in range(3)]
    stacks = plan_stacks(jobs[:20] + wides + jobs[20:], max_models=8, memory_budget_mb=1024)
    assert [[j.run_dir.name for j in s] for s in stacks] == [
        [str(n) for n in range(i, i + 8)] for i in range(0, 32, 8)] + [["w0", "w1", "w2"]]


@pytest.mark.parametrize("settings, said", [
    (["hydra.launcher.timeout_min=0"], "hydra.launcher.timeout_min=0 is not allowed: an integer >= 1"),
    (["hydra.launcher.timeout_min=1"], "hydra.launcher.signal_delay_s=120 is not allowed: less than "
                                       "hydra.launcher.timeout_min x 60 (60 s)"),
    (["hydra.launcher.mem_gb=-1"], "hydra.launcher.mem_gb=-1 is not allowed: an integer >= 1 or null"),
    (["hydra.launcher.tasks_per_node=2"], "hydra.launcher.tasks_per_node=2 is not allowed: 1 (a stack trains in "
                                          "one process)"),
    (["hydra.launcher.max_num_timeout=3"], "hydra.launcher.max_num_timeout=3 is not allowed: 0 (a stack cut by "
                                           "its time limit saves its runs interrupted"),
])
def test_slurm_settings_that_make_no_sense_are_one_line_and_exit_2_before_any_job(settings, said, tmp_path,
                                                                                  nnrun_here, monkeypatch):
    needs_extra("submitit", "hydra_plugins.hydra_submitit_launcher")
    fake_sbatch(tmp_path, monkeypatch, "exit 1")  # pre-flight asks only that there is one
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized_slurm", *settings, "seed=0,1"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"nnrun: error: {said}"), line
    assert run_dirs(tmp_path) == []


def test_a_job_whose_data_cannot_be_read_where_stacks_are_planned_fails_alone(tmp_path, capsys):
    """plan_stacks, in the launching process: the job is failed (metrics.json, its log) and in no stack."""
    from conftest import parsed
    from hydra_plugins.nnrun.vectorized_slurm_launcher import plan_stacks
    from nnrun import engine

    rows = "x1,x2,y\n" + "".join(f"{a},{b},{a ^ b}\n" for a in (0, 1) for b in (0, 1)) * 3
    (tmp_path / "good.csv").write_text(rows)
    jobs = [engine.Job(parsed(["dataset=csv", f"dataset.path={tmp_path / name}", "train.epochs=2"]),
                       tmp_path / name[:4]) for name in ("good.csv", "gone.csv")]
    for job in jobs:
        job.run_dir.mkdir()
    assert plan_stacks(jobs, 256, 1024) == [[jobs[0]]]
    assert read_metrics(jobs[1].run_dir)["status"] == "failed" and not (jobs[0].run_dir / "metrics.json").exists()
    assert f"gone failed: dataset.path={tmp_path / 'gone.csv'}: no such file" in capsys.readouterr().err
