"""A sweep stopped with Ctrl-C goes on with the same command plus train.resume=latest (or the sweep dir), under
both launchers: finished jobs are carried over untrained, the others resume from their checkpoints, and every
job ends as it would have without the interruption. Resuming another sweep is bad input."""

from __future__ import annotations

import json

import pytest

from conftest import assert_same_results, interrupt_when, read_metrics, results, run_dirs, start, summary_count

# The first job stops early within a few dozen epochs, the second trains on to the end.
SWEEP = ["optimizer.lr=3.0,0.01", "train.epochs=2000", "train.early_stopping.patience=20", "train.log_every=500",
         "train.checkpoint_every=500"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["vectorized", "basic"])
def test_an_interrupted_sweep_resumes_to_the_results_of_an_uninterrupted_one(launcher, tmp_path, nnrun_here):
    args = ["train", "-m", f"hydra/launcher={launcher}", *SWEEP]
    code, _, err = nnrun_here([*args, "exp_name=whole"])  # in this process; the cut needs a new one
    assert code == 0, err
    (whole_dir,) = (tmp_path / "experiments" / "whole" / "multirun").iterdir()

    experiment = tmp_path / "experiments" / "cut" / "multirun"
    if launcher == "vectorized":  # both train as one stack: stop it once the second has a checkpoint
        ready = lambda: list(experiment.glob("*/1_*/checkpoint.pt"))  # noqa: E731
    else:  # one job after another: stop the second while it trains (the first has finished)
        ready = lambda: list(experiment.glob("*/1_*/events.out.tfevents.*"))  # noqa: E731
    code, out, err = interrupt_when(start([*args, "exp_name=cut"], tmp_path), ready)
    assert code == 130, err
    (cut_dir,) = experiment.iterdir()
    statuses = [m.get("status") if m else None for m in (read_metrics(d) if (d / "metrics.json").exists()
                                                          else None for d in run_dirs(cut_dir))]
    assert statuses == ["stopped_early", "interrupted"], statuses

    code, _, err = nnrun_here([*args, "exp_name=cut", "train.resume=latest"])
    assert code == 0, err
    new_dir = max(experiment.iterdir())
    assert new_dir != cut_dir
    # The finished job's metrics.json is the cut sweep's, copied (wall time and all); the other one trained on.
    cut, now = results(cut_dir), results(new_dir)
    assert [cut[key]["status"] for key in cut if now[key] == cut[key]] == ["stopped_early"]
    assert_same_results(results(new_dir), results(whole_dir))


def test_resuming_a_sweep_with_other_values_is_one_line_and_exit_2(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "-m", "optimizer.lr=0.1,0.2", "seed=0", "train.epochs=2", "exp_name=s",
                               "hydra/job_logging=none"])
    assert code == 0, err
    for other in (["optimizer.lr=0.1,0.3", "seed=0"], ["optimizer.lr=0.1,0.2", "seed=1"],
                  ["optimizer.lr=0.1,0.2", "seed=0", "model.hidden=[8]"]):
        code, _, err = nnrun_here(["train", "-m", *other, "train.epochs=2", "exp_name=s", "train.resume=latest"])
        assert code == 2, err
        assert err.strip().count("\n") == 0 and "train.resume" in err, err
        assert "a sweep goes on with the command line it was started with" in err
    assert len(list((tmp_path / "experiments" / "s" / "multirun").iterdir())) == 1  # nothing ran


def test_resuming_a_sweep_when_there_is_none_is_one_line_and_exit_2(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "-m", "seed=0,1", "train.resume=latest"])
    assert code == 2 and "train.resume=latest finds no sweep to resume" in err, err
    code, _, err = nnrun_here(["train", "-m", "seed=0,1", f"train.resume={tmp_path}"])
    assert code == 2 and f"train.resume={tmp_path} is not a sweep dir" in err, err


def test_latest_is_the_newest_other_sweep_by_its_second_then_its_number(tmp_path):
    from nnrun.sweep import resume_sweep_dir

    sweeps = tmp_path / "experiments" / "s" / "multirun"
    for name in ("2026-01-02_03-04-05_10", "2026-01-02_03-04-05_9", "2026-01-02_03-04-05", "2026-01-01_23-59-59_11"):
        (sweeps / name).mkdir(parents=True)
        (sweeps / name / "multirun.yaml").write_text("{}\n")
    assert resume_sweep_dir("s", "latest", sweeps / "2026-01-02_03-04-06", tmp_path).name == "2026-01-02_03-04-05_10"
    newest = sweeps / "2026-01-02_03-04-05_10"
    assert resume_sweep_dir("s", "latest", newest, tmp_path).name == "2026-01-02_03-04-05_9"


def test_a_sweep_over_exp_name_is_one_sweep_and_goes_on_from_latest(tmp_path, nnrun_here):
    """Its jobs are in the sweep's dir, under the sweep's experiment (default), and `latest` is found there."""
    args = ["train", "-m", "hydra/launcher=vectorized", "exp_name=a,b", "train.epochs=2", "hydra/job_logging=none"]
    code, out, err = nnrun_here(args)
    assert code == 0 and summary_count(out, "completed") == 2, err
    (sweep,) = (tmp_path / "experiments" / "default" / "multirun").iterdir()
    assert [d.name for d in run_dirs(sweep)] == ["0_exp_name=a,train.epochs=2", "1_exp_name=b,train.epochs=2"]
    assert sorted(p.name for p in (tmp_path / "experiments").iterdir()) == ["default"]
    code, out, err = nnrun_here([*args, "train.resume=latest"])
    assert code == 0 and summary_count(out, "completed") == 2, err
    assert f"nnrun: resuming the sweep {sweep.relative_to(tmp_path)}: 2 finished jobs carried over" in out
    resumed = max((tmp_path / "experiments" / "default" / "multirun").iterdir())
    assert resumed != sweep and results(resumed) == results(sweep)


def test_a_relative_train_resume_is_read_where_nnrun_was_started_also_under_hydra_job_chdir(tmp_path, nnrun_here):
    """The `to go on` line names the sweep or run dir relative to the working dir; a job in its own dir reads it
    from there too."""
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none", "train.epochs=2"]
    assert nnrun_here(["train", "-m", *quiet, "seed=0,1", "exp_name=sw"])[0] == 0
    (sweep,) = (tmp_path / "experiments" / "sw" / "multirun").iterdir()
    code, out, err = nnrun_here(["train", "-m", *quiet, "seed=0,1", "exp_name=sw", "hydra.job.chdir=true",
                                 f"train.resume={sweep.relative_to(tmp_path)}"])
    assert code == 0, err
    assert out.startswith(f"nnrun: resuming the sweep {sweep.relative_to(tmp_path)}: 2 finished jobs carried over")
    assert nnrun_here(["train", *quiet, "exp_name=one"])[0] == 0
    (run,) = (tmp_path / "experiments" / "one" / "runs").iterdir()
    code, out, err = nnrun_here(["train", *quiet[:2], "train.epochs=3", "exp_name=one", "hydra.job.chdir=true",
                                 f"train.resume={run.relative_to(tmp_path)}"])
    assert code == 0, err
    assert out.startswith(f"nnrun: resuming {run} after epoch 2")  # from inside its own run dir: shown whole


@pytest.mark.parametrize("swept", ["train.resume=foo,bar", "train.resume=choice(latest,x)"])
def test_a_swept_train_resume_is_one_line_and_exit_2_before_any_job(swept, tmp_path, nnrun_here):
    code, out, err = nnrun_here(["train", "-m", swept, "train.epochs=2"])
    assert (code, err) == (2, f"nnrun: error: {swept} sweeps train.resume: a sweep goes on as a whole, from one "
                              "sweep dir or from latest (each job from its namesake there)\n")
    assert not (tmp_path / "experiments").exists()


def test_a_resumed_sweep_stopped_while_setting_up_goes_on_from_the_sweep_it_resumed(tmp_path, nnrun_here):
    """Sweep A: job 0 finished, job 1 stopped with its checkpoint. Sweep B resumed A and was stopped while it set
    its jobs up: job 0 carried over, job 1 set up but never trained. Going on from B, as its Ctrl-C line says,
    job 1 goes on from its checkpoint in A, not from the start."""
    import shutil

    from omegaconf import OmegaConf

    from conftest import events

    args = ["train", "-m", "hydra/job_logging=none", "hydra/hydra_logging=none", "seed=0,1", "train.epochs=4"]
    assert nnrun_here(args)[0] == 0
    multirun = tmp_path / "experiments" / "default" / "multirun"
    (a,) = multirun.iterdir()
    jobs = run_dirs(a)
    stopped = read_metrics(jobs[1])
    (jobs[1] / "metrics.json").write_text(json.dumps({**stopped, "status": "interrupted"}))
    b = multirun / f"{a.name}_1"  # after A, before the sweep that goes on
    saved = OmegaConf.load(a / "multirun.yaml")
    saved.hydra.overrides.task.append("train.resume=latest")
    b.mkdir()
    OmegaConf.save(saved, b / "multirun.yaml")
    shutil.copytree(jobs[0], b / jobs[0].name)
    (b / jobs[1].name / ".hydra").mkdir(parents=True)
    shutil.copy(jobs[1] / ".hydra" / "overrides.yaml", b / jobs[1].name / ".hydra")
    code, out, err = nnrun_here([*args, f"train.resume={b.relative_to(tmp_path)}"])
    assert code == 0, err
    assert out.startswith(f"nnrun: resuming the sweep {b.relative_to(tmp_path)}: 1 finished job carried over, 1 "
                          "going on from its checkpoint")
    (c,) = set(multirun.iterdir()) - {a, b}
    resumed = run_dirs(c)[1]
    assert read_metrics(resumed)["status"] == "completed" and read_metrics(resumed)["epochs_run"] == 4
    assert "loss/train" not in events(resumed).Tags()["scalars"]  # all 4 epochs were done in A
