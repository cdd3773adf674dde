"""Faults lose nothing: a real Ctrl-C or SIGTERM saves and exits 130; `train.resume=latest` continues."""

import json
import os
import signal

import pytest

from conftest import interrupt_when, run_dirs, start

# A checkpoint after every epoch: the first one on disk says the run has trained an epoch, at once (its
# TensorBoard points reach the disk only every few seconds, seconds the run would train on for nothing); the one
# the signal saves says so in its status.
LONG_RUN = ["train", "dataset=spirals", "dataset.n_samples=200", "model.hidden=[16]", "train.batch_size=8",
            "train.checkpoint_every=1", "train.epochs=100000", "train.log_every=5"]


def training(tmp_path):
    """Whether the run has trained an epoch: its first checkpoint is on disk (saved whole, by a rename)."""
    return any((tmp_path / "experiments").rglob("checkpoint.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_metrics_and_exits_130(tmp_path, signum, nnrun_here):
    from nnrun import checkpoint

    code, out, err = interrupt_when(start(LONG_RUN, tmp_path), lambda: training(tmp_path), signum)
    assert code == 130, err
    (run_dir,) = run_dirs(tmp_path / "experiments")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_run"] >= 1
    assert (run_dir / "checkpoint.pt").stat().st_size > 0
    saved = checkpoint.load(run_dir)  # the signal's checkpoint, not the last epoch's periodic one ("running")
    assert saved["status"] == "interrupted" and saved["resume"]["epochs_done"] == metrics["epochs_run"]
    assert "interrupted by" in err and "Traceback" not in err
    if signum == signal.SIGINT:
        # Resume the newest run for a few more epochs, in this process: the signal was the new process's part.
        more = metrics["epochs_run"] + 3
        code, out, err = nnrun_here([*LONG_RUN[:-2], f"train.epochs={more}", "train.resume=latest"])
        assert code == 0, err
        # `latest` is the interrupted run, and it goes on from where it was saved.
        shown = run_dir.relative_to(tmp_path)  # as the user would type it, from the working dir
        assert out.startswith(f"nnrun: resuming {shown} after epoch {metrics['epochs_run']}"), out
        newest = [d for d in run_dirs(tmp_path / "experiments") if d != run_dir]
        assert json.loads((newest[0] / "metrics.json").read_text())["epochs_run"] == more


def test_resume_latest_without_runs_is_bad_input(nnrun_here):
    code, _, err = nnrun_here(["train", "train.resume=latest"])
    assert code == 2 and err.count("\n") == 1, err
    assert "train.resume=latest finds no run to resume" in err and "leave out train.resume" in err, err


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    import torch

    from nnrun import checkpoint

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"model": Payload(), "spec": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_predict_on_a_malicious_checkpoint_is_one_line_exit_2(tmp_path, nnrun_here):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"model": Payload(), "spec": {}}, tmp_path / "checkpoint.pt")
    code, _, err = nnrun_here(["predict", str(tmp_path), "1", "2"])
    assert code == 2 and "refused to load" in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("nnrun: "), err


def test_a_target_in_yaml_is_never_imported(nnrun_here):
    code, _, err = nnrun_here(["train", "--cfg", "job", "+model._target_=os.system"])
    assert code == 2
    assert "model._target_" in err


@pytest.mark.parametrize("content", [b"hello\n", b'{"status": "completed"}', b"PK\x03\x04 cut short"])
def test_a_file_that_is_no_checkpoint_is_one_line_and_exit_2_and_leaves_no_run(tmp_path, nnrun_here, content):
    """A text file, a metrics.json, a cut-short archive: predict and resume each say so in one line."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.pt").write_bytes(content)
    code, _, err = nnrun_here(["predict", "old", "1", "0"])
    assert (code, err.count("\n")) == (2, 1), err
    assert "old/checkpoint.pt: not a checkpoint (torch.save's zip archive)" in err
    code, _, err = nnrun_here(["train", "train.epochs=2", "train.resume=old"])
    assert (code, err.count("\n")) == (2, 1), err
    assert "not a checkpoint" in err
    assert not (tmp_path / "experiments").exists()  # the refused run's dir is gone


def test_a_metrics_json_of_something_else_is_no_result(tmp_path):
    from nnrun.metrics import read_metrics

    (tmp_path / "metrics.json").write_text("[]")
    assert read_metrics(tmp_path) is None
