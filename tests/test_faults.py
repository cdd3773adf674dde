"""Faults lose nothing: a real Ctrl-C or SIGTERM saves and exits 130; `train.resume=latest` continues."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import SRC, run_dirs, run_nnrun

LONG_RUN = ["train", "dataset=spirals", "dataset.n_samples=200", "model.hidden=[16]", "train.batch_size=8",
            "train.epochs=100000", "train.log_every=5"]


def _start_and_signal(tmp_path, signum):
    proc = subprocess.Popen([sys.executable, "-m", "nnrun", *LONG_RUN], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # Wait until training has started (the first TensorBoard point is written at epoch 1).
    while time.monotonic() < deadline:
        events = list((tmp_path / "experiments").rglob("events.out.tfevents*"))
        if events and events[0].stat().st_size > 2000:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_metrics_and_exits_130(tmp_path, signum):
    code, out, err = _start_and_signal(tmp_path, signum)
    assert code == 130, err
    (run_dir,) = run_dirs(tmp_path / "experiments")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_run"] >= 1
    assert (run_dir / "checkpoint.pt").stat().st_size > 0
    assert "interrupted by" in err and "Traceback" not in err
    if signum == signal.SIGINT:
        # Resume the newest run for a few more epochs.
        more = metrics["epochs_run"] + 3
        resumed = run_nnrun([*LONG_RUN[:-2], f"train.epochs={more}", "train.resume=latest"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming {run_dir}" in resumed.stdout.replace("\n", "") or "resuming" in resumed.stdout
        newest = [d for d in run_dirs(tmp_path / "experiments") if d != run_dir]
        assert json.loads((newest[0] / "metrics.json").read_text())["epochs_run"] == more


@pytest.mark.slow
def test_resume_latest_without_runs_is_bad_input(tmp_path):
    out = run_nnrun(["train", "train.resume=latest"], tmp_path)
    assert out.returncode == 2 and "no checkpoint under" in out.stderr


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


@pytest.mark.slow
def test_predict_on_a_malicious_checkpoint_is_one_line_exit_2(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"model": Payload(), "spec": {}}, tmp_path / "checkpoint.pt")
    out = run_nnrun(["predict", str(tmp_path), "1", "2"], tmp_path)
    assert out.returncode == 2 and "refused to load" in out.stderr and "Traceback" not in out.stderr


def test_a_target_in_yaml_is_never_imported(tmp_path, capsys):
    from nnrun.cli import main

    try:
        code = main(["train", "--cfg", "job", "+model._target_=os.system"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "model._target_" in capsys.readouterr().err
