"""Ctrl-C says how to go on: the command line typed, with train.resume set to the run dir (a single run) or the
sweep dir (a sweep resumes as a whole), quoted for the shell; that command finishes the work."""

from __future__ import annotations

import shlex
import signal

import pytest

from conftest import interrupt_when, read_metrics, run_dirs, start

# Long enough to be interrupted: the signal goes when the first run's event file appears, and the run then has
# 100 epochs to train (1,500 steps, most of a second of CPU) before it would end; with the cores oversubscribed
# the signal still lands within its first epoch or two. Short, as the resumed run trains the rest. The brackets
# need quoting in a shell.
RUN = ["dataset=spirals", "dataset.n_samples=200", "model.hidden=[16]", "train.batch_size=8", "train.epochs=100"]


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [[], ["-m", "hydra/launcher=basic", "optimizer.lr=0.01,0.02"],
                                   ["-m", "hydra/launcher=vectorized", "optimizer.lr=0.01,0.02"]],
                         ids=["single_run", "basic_sweep", "vectorized_sweep"])
def test_ctrl_c_prints_the_command_that_goes_on_and_it_completes_the_work(sweep, tmp_path, nnrun_here):
    typed = ["train", *sweep, *RUN]
    # Ctrl-C as soon as the first run writes its event file (its signal handler is on).
    code, _, err = interrupt_when(start(typed, tmp_path),
                                  lambda: list((tmp_path / "experiments").rglob("events.out.tfevents*")))
    assert code == 130, err
    (line,) = [line for line in err.splitlines() if line.startswith("to go on: ")]
    command = line.removeprefix("to go on: ")
    (resume_dir,) = {*run_dirs(tmp_path / "experiments")} if not sweep else \
        {job.parent for job in run_dirs(tmp_path / "experiments")}
    resume = f"train.resume={resume_dir.relative_to(tmp_path)}"
    assert command == shlex.join(["nnrun", *typed, resume])
    assert "'model.hidden=[16]'" in command  # quoted for the shell

    program, *args = shlex.split(command)  # what the shell makes of it
    assert program == "nnrun"
    code, out, err = nnrun_here(args)  # in this process: the exit and the signals were the new process's part
    assert code == 0, err
    assert out.startswith("nnrun: resuming"), out  # from the interrupted run's checkpoint, not from the start
    finished = [d for d in run_dirs(tmp_path / "experiments") if resume_dir not in (d, d.parent)]
    assert len(finished) == (2 if sweep else 1)
    assert all(read_metrics(d)["status"] == "completed" and read_metrics(d)["epochs_run"] == 100 for d in finished)


def test_an_interrupted_resumed_sweep_says_to_resume_the_new_sweep_not_the_old(tmp_path, monkeypatch):
    from nnrun import cli, engine

    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "experiments" / "x" / "multirun" / "2026-01-01_00-00-00"
    job_dir = sweep_dir / "0_seed=0"
    job_dir.mkdir(parents=True)
    (sweep_dir / "multirun.yaml").write_text("{}")
    typed = ["-m", "seed=0,1", "train.resume=experiments/x/multirun/old", "a=b c"]
    said = cli.interrupted(engine.RunInterrupted(job_dir, signal.SIGTERM), typed).splitlines()
    assert said == ["nnrun: interrupted by SIGTERM; results saved in experiments/x/multirun/2026-01-01_00-00-00",
                    "to go on: nnrun train -m seed=0,1 'a=b c' train.resume=experiments/x/multirun/2026-01-01_00-00-00"]


def test_ctrl_c_before_anything_trained_says_how_to_start_again():
    from nnrun import cli

    said = cli.interrupted(KeyboardInterrupt(), ["-m", "seed=0,1", "model.hidden=[4]"]).splitlines()
    assert said == ["nnrun: interrupted before any training; nothing was saved",
                    "to start again: nnrun train -m seed=0,1 'model.hidden=[4]'"]
