"""`nnrun train -m`: job dirs named from overrides, the end-of-sweep summary, failures that stay local to one job,
and Hydra's real launchers and sweeper (joblib, submitit_local, optuna), each run small."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from conftest import needs_extra, only_sweep_dir, read_metrics, run_dirs, run_nnrun, summary_count

TINY = ["dataset=xor", "model.hidden=[4]", "train.epochs=10", "train.log_every=5"]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # Hydra's own log lines, in-process


def test_sqlite_path_reads_optuna_storage_urls():
    from nnrun.sweep import sqlite_path

    assert sqlite_path("sqlite:///experiments/s/optuna.db") == Path("experiments/s/optuna.db")
    assert sqlite_path("sqlite:////abs/optuna.db") == Path("/abs/optuna.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://host/db") is None and sqlite_path(None) is None


@pytest.mark.slow
def test_sweep_names_job_dirs_from_overrides_summarises_and_reports(tmp_path):
    proc = run_nnrun(["train", "-m", *TINY, "exp_name=sw", "optimizer.lr=0.01,0.1", "seed=0,1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = only_sweep_dir(tmp_path, "sw")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", sweep_dir.name)
    names = [d.name for d in run_dirs(sweep_dir)]
    # Hydra's override_dirname: the job's overrides sorted by key, joined by commas.
    assert names == [f"{n}_dataset=xor,exp_name=sw,model.hidden=[4],optimizer.lr={lr},seed={seed},"
                     "train.epochs=10,train.log_every=5"
                     for n, (lr, seed) in enumerate([("0.01", 0), ("0.01", 1), ("0.1", 0), ("0.1", 1)])]
    for job in run_dirs(sweep_dir):
        assert read_metrics(job)["status"] == "completed"
        # One event file in the job's own dir, and no sub-dirs: one run (and one HParams row) per job.
        assert len(list(job.glob("events.out.tfevents.*"))) == 1
        assert [p.name for p in job.iterdir() if p.is_dir()] == [".hydra"]
    assert "sweep: 4 jobs" in proc.stdout
    assert summary_count(proc.stdout, "completed") == 4 and summary_count(proc.stdout, "failed") == 0
    assert f"tensorboard --logdir {sweep_dir.relative_to(tmp_path)}" in proc.stdout.replace("\n", "")

    shown = run_nnrun(["report", str(sweep_dir)], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "4 runs" in shown.stdout and "completed×2" in shown.stdout
    assert (sweep_dir / "report.csv").exists() and (sweep_dir / "report.png").exists()


def test_one_failing_job_does_not_stop_the_others_and_the_sweep_exits_1(tmp_path, monkeypatch, nnrun_here):
    """Three csv jobs in one in-process sweep: one fine, one whose file is missing (read from the job's own dir,
    hydra.job.chdir, so found only when the job loads it), one that crashes mid-training. The others finish, the
    summary counts two failed, and the sweep exits 1 (a fault) after it."""
    from hydra.core.hydra_config import HydraConfig

    from nnrun import engine

    rows = "x1,x2,y\n" + "".join(f"{a},{b},{a ^ b}\n" for a in (0, 1) for b in (0, 1)) * 3
    (tmp_path / "good.csv").write_text(rows)
    (tmp_path / "good2.csv").write_text(rows)
    real_evaluate = engine.evaluate

    def evaluate_crashing_in_job_2(*args, **kwargs):
        if HydraConfig.get().job.num == 2:
            raise RuntimeError("simulated fault mid-run")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", evaluate_crashing_in_job_2)
    code, out, err = nnrun_here(["train", "-m", *QUIET, "dataset=csv", "train.epochs=5", "exp_name=fail",
                                 "hydra.job.chdir=true",
                                 f"dataset.path={tmp_path / 'good.csv'},missing.csv,{tmp_path / 'good2.csv'}"])
    assert code == 1, err
    jobs = run_dirs(only_sweep_dir(tmp_path, "fail"))
    assert len(jobs) == 3
    assert read_metrics(jobs[0])["status"] == "completed"
    assert read_metrics(jobs[1])["status"] == "failed" and read_metrics(jobs[1])["epochs_run"] == 0
    assert read_metrics(jobs[2])["status"] == "failed"
    assert "job 1 failed: dataset.path=" in err and "/missing.csv: no such file" in err
    assert "job 2 failed: RuntimeError: simulated fault mid-run" in err
    assert summary_count(out, "completed") == 1 and summary_count(out, "failed") == 2
    # Each job's log ends with its result, and a failed job's with why.
    logs = [[line.split("] - ", 1)[1] for line in (job / "train.log").read_text().splitlines()] for job in jobs]
    assert logs[0][-1].startswith("completed after 5 epochs (") and "accuracy/test 1" in logs[0][-1]
    said = next(line for line in err.splitlines() if "job 1 failed: " in line).split("job 1 failed: ", 1)[1]
    assert logs[1] == [f"failed: {said}"]
    assert logs[2][-2].startswith("failed after ") and logs[2][-1] == "failed: RuntimeError: simulated fault mid-run"


@pytest.mark.parametrize("launcher,subdir", [("vectorized", []),
                                             ("basic", ["hydra.sweep.subdir=job/${hydra.job.num}"])])
def test_a_job_whose_data_is_missing_in_its_own_dir_fails_alone(launcher, subdir, tmp_path, nnrun_here):
    """Under hydra.job.chdir a relative data path is the job's to read: one job fails, the other trains, and the
    summary (job dirs at any depth) counts both, then the sweep exits 1."""
    rows = "x1,x2,y\n" + "".join(f"{a},{b},{a ^ b}\n" for a in (0, 1) for b in (0, 1)) * 3
    (tmp_path / "good.csv").write_text(rows)
    code, out, err = nnrun_here(["train", "-m", *QUIET, f"hydra/launcher={launcher}", *subdir, "dataset=csv",
                                 "train.epochs=5", "exp_name=alone", "hydra.job.chdir=true",
                                 f"dataset.path={tmp_path / 'good.csv'},missing.csv"])
    assert code == 1, err
    jobs = run_dirs(only_sweep_dir(tmp_path, "alone"))
    assert [read_metrics(job)["status"] for job in jobs] == ["completed", "failed"]
    assert "/missing.csv: no such file" in err
    assert summary_count(out, "completed") == 1 and summary_count(out, "failed") == 1
    assert (jobs[1] / "train.log").read_text().rstrip().endswith("/missing.csv: no such file")


# Two jobs of one stack: lr 0.01 trains, lr 1e30 diverges.
DIVERGING = ["optimizer=sgd", "loss=mse", "dataset=gaussians", "dataset.n_samples=50", "train.epochs=20",
             "optimizer.lr=0.01,1e30"]
STATUSES = ("completed", "stopped_early", "diverged", "interrupted", "failed")


def job_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.split(" ", 1)[0] in STATUSES]


@pytest.mark.parametrize("launcher", ["basic", "vectorized"])
def test_a_sweep_prints_one_line_per_job_then_the_summary_and_a_diverged_job_exits_0(launcher, tmp_path,
                                                                                     nnrun_here):
    code, out, err = nnrun_here(["train", "-m", *QUIET, f"hydra/launcher={launcher}", "exp_name=lines", *DIVERGING])
    assert code == 0, err  # diverged is a result
    jobs = run_dirs(only_sweep_dir(tmp_path, "lines"))
    lines = job_lines(out)
    assert [(line.split()[0], line.endswith(job.name)) for line, job in zip(lines, jobs)] == [
        ("completed", True), ("diverged", True)]
    assert len(lines) == 2 and "epochs 20" in lines[0] and "final loss/val" in lines[0]
    assert lines[0].endswith(f"  {jobs[0].relative_to(tmp_path)}")  # the dir as the summary shows the sweep's
    # Before the summary: no table and no progress bar per job, its line only (and the stacks' lines).
    before = [line for line in out.split("sweep: 2 jobs")[0].splitlines() if line.strip()]
    assert [line for line in before if not line.startswith("nnrun: ")] == lines
    assert summary_count(out, "completed") == 1 and summary_count(out, "diverged") == 1


def test_a_vectorized_sweep_with_failed_jobs_exits_1_after_the_summary(tmp_path, monkeypatch, nnrun_here):
    from nnrun import engine

    def crash(*args, **kwargs):
        raise RuntimeError("simulated fault mid-run")

    monkeypatch.setattr(engine, "evaluate", crash)
    code, out, err = nnrun_here(["train", "-m", *QUIET, "hydra/launcher=vectorized", "exp_name=vfail", *TINY,
                                 "seed=0,1"])
    assert code == 1
    assert [line.split()[0] for line in job_lines(out)] == ["failed", "failed"]
    assert summary_count(out, "failed") == 2 and "simulated fault mid-run" in err


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_two_worker_processes_and_a_failed_one_exits_1_after_the_summary(tmp_path):
    needs_extra("hydra_plugins.hydra_joblib_launcher")
    (tmp_path / "good.csv").write_text("x1,x2,y\n" + "".join(f"{a},{b},{a ^ b}\n" for a in (0, 1) for b in (0, 1)) * 3)
    # The missing file is read from the job's own dir (hydra.job.chdir): found missing only when the job starts.
    proc = run_nnrun(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "dataset=csv",
                      "train.epochs=5", "exp_name=jl", "hydra.job.chdir=true",
                      f"dataset.path={tmp_path / 'good.csv'},missing.csv"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    jobs = run_dirs(only_sweep_dir(tmp_path, "jl"))
    assert [read_metrics(j)["status"] for j in jobs] == ["completed", "failed"]
    assert summary_count(proc.stdout, "completed") == 1 and summary_count(proc.stdout, "failed") == 1


@pytest.mark.slow
def test_submitit_local_launcher_runs_two_jobs(tmp_path):
    needs_extra("hydra_plugins.hydra_submitit_launcher")
    proc = run_nnrun(["train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *TINY,
                      "exp_name=sl", "optimizer.lr=0.01,0.1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep_dir = only_sweep_dir(tmp_path, "sl")
    jobs = run_dirs(sweep_dir)
    assert [read_metrics(j)["status"] for j in jobs] == ["completed", "completed"]
    assert (sweep_dir / ".submitit").is_dir()  # the jobs went through submitit, not the basic launcher
    assert summary_count(proc.stdout, "completed") == 2


@pytest.mark.slow
def test_optuna_search_maximises_val_accuracy_and_resumes_from_sqlite_with_new_points(tmp_path):
    """The study lives in SQLite: the same command again adds trials to it, at points the first run did not
    try; each trial's value is its run's best accuracy/val; alembic's set-up lines stay quiet."""
    needs_extra("optuna", "hydra_plugins.hydra_optuna_sweeper")
    import optuna

    small = ["+hparams_search=spirals_optuna", "dataset.n_samples=100", "model.hidden=[4]", "train.epochs=5"]
    first = run_nnrun(["train", "-m", *small, "hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "experiments" / "spirals_optuna" / "optuna.db"
    assert db.exists()
    assert "optuna: best value" in first.stdout

    resumed = run_nnrun(["train", "-m", *small, "hydra.sweeper.n_trials=2"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for proc in (first, resumed):
        assert "alembic" not in proc.stdout + proc.stderr
    study = optuna.load_study(study_name="spirals_optuna", storage=f"sqlite:///{db}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    params = [t.params for t in trials]
    assert not any(p in params[:2] for p in params[2:]), params
    assert f"optimizer.lr={params[2]['optimizer.lr']}" in resumed.stdout  # what the second run's first job ran
    # Each trial's value is the best accuracy/val its run reached, as its metrics.json says.
    jobs = run_dirs(tmp_path / "experiments" / "spirals_optuna" / "multirun")
    assert len(jobs) == 4
    bests = sorted(read_metrics(j)["best"]["accuracy/val"] for j in jobs)
    assert sorted(t.value for t in trials) == pytest.approx(bests)
    assert all("hparams_search" not in j.name for j in jobs)


def ask_and_tell(study, n: int, tell: bool = True) -> list[dict]:
    """n trials of a toy objective over nnrun's search space (not `tell`: left running); their params."""
    for _ in range(n):
        trial = study.ask()
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        dropout = trial.suggest_float("model.dropout", 0.0, 0.5)
        trial.suggest_categorical("activation", ["relu", "tanh"])
        if tell:
            study.tell(trial, lr + dropout)
    return [t.params for t in study.get_trials()[-n:]]


def test_a_resumed_optuna_study_explores_new_points_and_stays_reproducible(tmp_path):
    """The same seed in every invocation replays the same random start-up proposals; the resumable sampler's
    stream starts at seed + the trials already stored, so a second invocation proposes new points, and the same
    starting study gives the same ones."""
    needs_extra("optuna")
    import shutil

    import optuna

    from nnrun.sweep import resumable_tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def study(db: Path, sampler):
        return optuna.create_study(study_name="s", storage=f"sqlite:///{db}", sampler=sampler,
                                   direction="maximize", load_if_exists=True)

    db, copy, plain = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "plain.db"
    first = ask_and_tell(study(db, resumable_tpe_sampler(seed=0)), 3)
    # The first invocation is plain TPE with the configured seed.
    assert ask_and_tell(study(plain, optuna.samplers.TPESampler(seed=0)), 3) == first
    # ...which, resumed, repeats itself: the bug this sampler exists for.
    assert ask_and_tell(study(plain, optuna.samplers.TPESampler(seed=0)), 3) == first
    shutil.copy(db, copy)

    second = ask_and_tell(study(db, resumable_tpe_sampler(seed=0)), 3)
    assert not any(p in first for p in second)
    assert len({p["optimizer.lr"] for p in first + second}) == 6
    assert ask_and_tell(study(copy, resumable_tpe_sampler(seed=0)), 3) == second
    # Two sweeps on one study at once: the second starts while the first's trial runs, and draws other points.
    together = tmp_path / "together.db"
    running = ask_and_tell(study(together, resumable_tpe_sampler(seed=0)), 1, tell=False)
    assert running == first[:1] and ask_and_tell(study(together, resumable_tpe_sampler(seed=0)), 1) != running


def test_sweep_over_an_unknown_key_fails_before_any_job_with_one_line(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "-m", *TINY, "exp_name=bad", "optimizer.lrr=0.1,0.2"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "optimizer.lrr" in err
    assert run_dirs(tmp_path) == []


def test_sweep_over_a_value_of_the_wrong_type_fails_before_any_job_with_one_line(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "-m", *TINY, "exp_name=bad", "seed=0,1", "train.epochs=10,ten"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "train.epochs" in err
    assert run_dirs(tmp_path) == []


def test_submitit_slurm_launcher_config_composes():
    """No SLURM here to run on; at least `hydra/launcher=submitit_slurm` resolves with nnrun's config."""
    needs_extra("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"


@pytest.mark.parametrize("direction, worst", [("maximize", float("-inf")), ("minimize", float("inf")),
                                              ("Direction.maximize", float("-inf"))])
def test_a_failed_trial_scores_the_worst_value_so_an_optuna_search_goes_on(direction, worst):
    """Optuna's tell() raises on NaN (what a failed job returns), which would end the whole search."""
    from omegaconf import OmegaConf

    from nnrun.engine import RunResult
    from nnrun.sweep import objective

    optimising = OmegaConf.create({"sweeper": {"direction": direction}})
    fine = RunResult(None, "completed", 1, 1, "accuracy/val", 0.75, {}, {})
    assert objective(None, optimising) == worst and objective(fine, optimising) == 0.75
    # The basic sweeper keeps NaN: nothing optimises over it.
    assert math.isnan(objective(None, OmegaConf.create({"sweeper": {}})))
