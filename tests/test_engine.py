"""The training loop: learning, determinism, early stopping, divergence, outputs on disk."""

import json
import math
import re
import signal

import pytest
import torch

from conftest import curve, events, parsed, read_metrics, train
from nnrun import checkpoint
from nnrun.predict import predict

SEPARABLE = ["dataset=gaussians", "dataset.n_samples=200", "dataset.noise=0.4", "model.hidden=[8]",
             "train.epochs=60", "train.log_every=1"]


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("momentum", 0.1), ("adagrad", 0.1), ("adadelta", 1.0),
                                          ("adam", 0.01), ("rmsprop", 0.01)])
def test_each_optimizer_reduces_the_loss(tmp_path, optimizer, lr):
    result = train([*SEPARABLE, f"optimizer={optimizer}", f"optimizer.lr={lr}"], tmp_path)
    losses = curve(tmp_path)
    assert result.status == "completed"
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])
    assert result.final["accuracy/val"] >= 0.9


@pytest.mark.parametrize("loss", ["bce", "mse", "cross_entropy"])
def test_each_loss_reduces_the_loss(tmp_path, loss):
    result = train([*SEPARABLE, f"loss={loss}"], tmp_path)
    losses = curve(tmp_path)
    assert losses[-1] < 0.7 * losses[0]
    assert result.final["accuracy/val"] >= 0.9


def test_same_seed_same_metrics_different_seed_different(tmp_path):
    overrides = ["dataset=spirals", "dataset.n_samples=200", "model.hidden=[8]", "model.dropout=0.2",
                 "train.epochs=20", "train.batch_size=16"]
    a = train([*overrides, "seed=3"], tmp_path / "a").metrics
    b = train([*overrides, "seed=3"], tmp_path / "b").metrics
    c = train([*overrides, "seed=4"], tmp_path / "c").metrics
    for m in (a, b, c):
        m.pop("wall_time_s"), m.pop("overrides")
    assert a == b
    assert a["final"] != c["final"]


def test_metrics_json_follows_the_contract(tmp_path):
    result = train(["train.epochs=5"], tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m) == {"status", "epochs_run", "best", "final", "wall_time_s", "device", "seed", "overrides"}
    assert m["status"] == "completed" and m["epochs_run"] == 5 and m["device"] == "cpu" and m["seed"] == 0
    assert set(m["best"]) == {"epoch", "loss/val"}
    assert set(m["final"]) == {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "accuracy/test"}
    assert m["overrides"] == ["train.epochs=5"]
    assert result.objective == m["best"]["loss/val"]


def test_tensorboard_has_the_contract_tags(tmp_path):
    result = train(["dataset=circles", "train.epochs=30", "train.log_every=10"], tmp_path)
    acc = events(tmp_path)
    tags = acc.Tags()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/val")] == [1, 10, 20, 30]
    # accuracy/test is one value at the end: a result (for the HParams table), not a one-point chart among the curves.
    assert "accuracy/test" not in tags["scalars"]
    (test_accuracy,) = acc.Scalars("result/accuracy/test")
    assert test_accuracy.value == pytest.approx(result.final["accuracy/test"], rel=1e-6)
    assert "pictures/decision_boundary" in tags["images"]
    assert "config/text_summary" in tags["tensors"]
    assert "custom_scalars__config__" in tags["tensors"]
    hparams = acc.PluginTagToContent("hparams")
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams)
    # The HParams columns are the keys as they are typed (optimizer.betas), and only those of this dataset.
    from tensorboard.plugins.hparams import metadata

    columns = set(metadata.parse_session_start_info_plugin_data(hparams[metadata.SESSION_START_INFO_TAG]).hparams)
    assert {"optimizer.name", "optimizer.lr", "optimizer.betas", "optimizer.eps", "optimizer.weight_decay",
            "dataset.name", "dataset.n_samples", "dataset.noise", "train.batch_size", "model.init_std"} <= columns
    assert not {c for c in columns if c.startswith("optimizer.params")} | columns & {
        "dataset.classes", "dataset.path", "dataset.target"}
    # Everything lives in the run's own dir: no timestamped sub-runs.
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []


def test_the_runs_log_ends_with_its_result_as_metrics_json_has_it(tmp_path):
    train(["train.epochs=5"], tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    (line,) = (tmp_path / "train.log").read_text().splitlines()
    final = ", ".join(f"{key} {value:.4g}" for key, value in m["final"].items())
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\]\[nnrun\]\[INFO\] - (.*)", line).group(1) == (
        f"completed after 5 epochs ({m['wall_time_s']} s on cpu): best loss/val {m['best']['loss/val']:.4g} at "
        f"epoch {m['best']['epoch']}; final {final}")


def test_a_log_line_for_a_run_dir_that_is_gone_is_left_out(tmp_path):
    from nnrun.metrics import log_line

    log_line(tmp_path / "gone", "completed")  # the fault being reported must not turn into another
    assert list(tmp_path.iterdir()) == []


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # Few noisy points and a wide net: val loss turns up while train loss goes on down.
    result = train(["dataset=gaussians", "dataset.n_samples=60", "dataset.noise=1.2", "model.hidden=[128,128]",
                    "optimizer.lr=0.01", "train.epochs=400", "train.early_stopping.patience=20"], tmp_path)
    assert result.status == "stopped_early"
    assert result.best_epoch < result.epochs_run < 400
    assert result.epochs_run == result.best_epoch + 20
    # The restored weights are the best epoch's: their val loss is the best one recorded.
    assert result.final["loss/val"] == pytest.approx(result.best_value, rel=1e-6)
    assert checkpoint.load(tmp_path)["epoch"] == result.best_epoch


def test_an_early_stopped_runs_curves_end_where_it_stopped_and_hold_its_best_point(tmp_path):
    """log_every=10, yet the curve reaches the epoch training stopped at, and the best epoch's loss/val (the
    weights early stopping goes back to) is a point on it; the progress bar ends at epochs_run."""
    import io

    from rich.console import Console

    from nnrun import engine

    cfg = parsed(["dataset=gaussians", "dataset.n_samples=60", "dataset.noise=1.2", "model.hidden=[128,128]",
                  "optimizer.lr=0.01", "train.epochs=400", "train.early_stopping.patience=17",
                  "train.log_every=10"])
    screen = io.StringIO()
    result = engine.train(cfg, tmp_path, console=Console(file=screen, width=120, force_terminal=False))
    assert result.status == "stopped_early" and result.epochs_run % 10 != 0
    val = {e.step: e.value for e in events(tmp_path).Scalars("loss/val")}
    assert max(val) == result.epochs_run
    assert val[result.best_epoch] == pytest.approx(result.best_value)
    assert min(val.values()) == pytest.approx(result.best_value)
    assert {1, *range(10, result.epochs_run, 10)} <= set(val)
    assert f"{result.epochs_run}/400" in screen.getvalue()


def test_divergence_is_a_result_with_null_losses_and_finite_checkpoint(tmp_path):
    result = train(["optimizer=sgd", "optimizer.lr=1e30", "loss=mse", "train.epochs=50", "train.log_every=1",
                    "dataset=gaussians", "dataset.n_samples=50"], tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert result.status == "diverged" and m["status"] == "diverged"
    assert m["final"]["loss/train"] is None and m["final"]["loss/val"] is None
    assert m["epochs_run"] < 50
    weights = checkpoint.load(tmp_path)["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())


BLOWS_UP = ["optimizer=sgd", "optimizer.lr=1e3", "loss=bce", "dataset=gaussians", "dataset.n_samples=50",
            "model.hidden=[8,8]", "train.epochs=40"]  # finite for 3 epochs, then inf logits


def test_a_run_diverges_where_its_loss_blows_up_not_at_the_next_logged_epoch(tmp_path, monkeypatch):
    """Whatever log_every is, the epoch after a step's loss or the weights stop being finite ends the run, and its
    checkpoint holds the weights of the epoch before it, saying which."""
    every = train([*BLOWS_UP, "train.log_every=1"], tmp_path / "every")
    rarely = train([*BLOWS_UP, "train.log_every=30"], tmp_path / "rarely")
    assert every.status == rarely.status == "diverged"
    assert every.epochs_run == 4 and rarely.epochs_run in (4, 5)  # an evaluation sees inf logits an epoch sooner
    saved = checkpoint.load(tmp_path / "rarely")
    assert saved["epoch"] == rarely.epochs_run - 1
    logged = [e.step for e in events(tmp_path / "rarely").Scalars("loss/train")]
    assert logged == [1, rarely.epochs_run]  # the first epoch, and the one it ended at
    # The same run stopped by a signal right after epoch epochs_run - 1 holds those weights.
    _fake_signals(monkeypatch, 2 * (rarely.epochs_run - 1))  # full batch: a look before and after each epoch's step
    from nnrun import engine

    with pytest.raises(engine.RunInterrupted):
        train([*BLOWS_UP, "train.log_every=30"], tmp_path / "stopped")
    stopped = checkpoint.load(tmp_path / "stopped")
    assert stopped["epoch"] == rarely.epochs_run - 1
    for key, weights in saved["model"].items():
        assert torch.isfinite(weights).all() and torch.equal(weights, stopped["model"][key]), key


def test_a_run_that_blows_up_in_its_first_step_keeps_its_initial_weights_as_epoch_0(tmp_path):
    result = train(["optimizer=sgd", "optimizer.lr=1e30", "train.epochs=50", "train.log_every=25"], tmp_path)
    saved, fresh = checkpoint.load(tmp_path), parsed(["optimizer=sgd", "optimizer.lr=1e30"])
    from nnrun.data import load
    from nnrun.engine import network
    from nnrun.losses import LOSSES

    initial = network(fresh, load(fresh.dataset), LOSSES[fresh.loss]).state_dict()
    assert (result.status, result.epochs_run, saved["epoch"]) == ("diverged", 1, 0)
    assert all(torch.equal(initial[key], saved["model"][key]) for key in initial)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_mini_batches_and_single_points_train(tmp_path, batch_size):
    result = train([*SEPARABLE[:-2], "train.epochs=10", f"train.batch_size={batch_size}"], tmp_path)
    assert result.final["accuracy/val"] >= 0.9


def test_checkpoint_predicts_like_the_trained_model(tmp_path):
    train(["+exp=xor_relu"], tmp_path)
    payload = checkpoint.load(tmp_path)
    proba = predict(payload, [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert [round(p[1]) for p in proba] == [0, 1, 1, 0]
    assert {"optimizer", "epochs_done", "rng", "early_stopping"} <= set(payload["resume"])


class SignalAfter(list):
    """A stand-in for the engine's received-signals list: empty until `steps` checks have passed."""

    def __init__(self, steps: int):
        super().__init__()
        self.left = steps

    def __bool__(self):
        self.left -= 1
        if self.left < 0 and not len(self):
            self.append(2)  # SIGINT
        return len(self) > 0


def _fake_signals(monkeypatch, steps):
    from contextlib import contextmanager

    from nnrun import engine

    @contextmanager
    def fake():
        yield SignalAfter(steps)

    monkeypatch.setattr(engine, "stop_signals", fake)


def test_interrupt_saves_checkpoint_and_metrics_then_raises(tmp_path, monkeypatch):
    from nnrun import engine

    _fake_signals(monkeypatch, 1)  # Ctrl-C during the first step (the loop looks before it, then after it)
    with pytest.raises(engine.RunInterrupted):
        train(["train.epochs=100"], tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "interrupted" and m["epochs_run"] == 0
    saved = checkpoint.load(tmp_path)["resume"]
    assert saved["partial"]["epoch"] == 1 and saved["step"] == 1
    assert math.isfinite(m["final"]["loss/train"])


@pytest.mark.parametrize("batch,checks", [("train.batch_size=16", 138), ("train.batch_size=null", 38),
                                          ("train.batch_size=null", 39)])
def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch, batch, checks):
    overrides = ["dataset=spirals", "dataset.n_samples=200", "model.hidden=[16]", "model.dropout=0.2",
                 "train.epochs=30", "train.early_stopping.patience=50", batch, "seed=5"]
    whole = train(overrides, tmp_path / "whole")
    # Stop inside an epoch (mini-batch), after a full-batch step, or at an epoch boundary.
    _fake_signals(monkeypatch, checks)
    from nnrun import engine

    with pytest.raises(engine.RunInterrupted):
        train(overrides, tmp_path / "first")
    assert json.loads((tmp_path / "first" / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()
    resumed = train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "second")
    a, b = checkpoint.load(tmp_path / "whole"), checkpoint.load(tmp_path / "second")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
        assert torch.equal(a["resume"]["model"][key], b["resume"]["model"][key]), key
    assert resumed.metrics["final"] == whole.metrics["final"]
    assert resumed.best_epoch == whole.best_epoch and resumed.epochs_run == whole.epochs_run == 30


def test_resume_refuses_another_architecture(tmp_path):
    from nnrun.config import ConfigError

    train(["train.epochs=2"], tmp_path / "a")
    with pytest.raises(ConfigError, match="is a run of another model or optimizer"):
        train(["train.epochs=2", "model.hidden=[8]", f"train.resume={tmp_path / 'a'}"], tmp_path / "b")


def test_resume_refuses_other_data_and_fewer_epochs_than_were_trained(tmp_path):
    from nnrun.config import UsageError

    train(["dataset=spirals", "train.epochs=5"], tmp_path / "a")
    circles = "data: dataset=spirals (here circles), dataset.n_samples=600 (here 400), dataset.classes=2 (here null); "
    for changed, said in ((["dataset=circles"], circles + "resume it with its data"),
                          (["dataset=spirals", "dataset.noise=0.2"], "other data: dataset.noise=0.05 (here 0.2); ")):
        with pytest.raises(UsageError, match=re.escape(said)):
            train([*changed, "train.epochs=10", f"train.resume={tmp_path / 'a'}"], tmp_path / "b")
    with pytest.raises(UsageError, match="train.epochs=3 is below the 5 epochs that train.resume="):
        train(["dataset=spirals", "train.epochs=3", f"train.resume={tmp_path / 'a'}"], tmp_path / "c")
    going_on = train(["dataset=spirals", "train.epochs=7", f"train.resume={tmp_path / 'a'}"], tmp_path / "d")
    assert going_on.epochs_run == 7


def test_periodic_checkpoints_during_training(tmp_path, monkeypatch):
    from nnrun import checkpoint as ckpt

    saved = []
    real = ckpt.save
    monkeypatch.setattr(ckpt, "save", lambda d, p: saved.append(p["status"]) or real(d, p))
    train(["train.epochs=10", "train.checkpoint_every=4"], tmp_path)
    assert saved == ["running", "running", "completed"]


def test_a_crash_mid_write_leaves_the_old_metrics(tmp_path, monkeypatch):
    from nnrun import metrics

    metrics.write_metrics(tmp_path, {"status": "completed"})

    def broken(handle):
        handle.write('{"status": "fail')
        raise OSError("disk full")

    with pytest.raises(OSError):
        metrics.atomic_write(tmp_path / "metrics.json", broken)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_unwritable_or_full_output_fails_before_training(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from nnrun.config import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="writable"):
        train(["train.epochs=2"], blocker / "run")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(ConfigError, match="MiB free"):
        train(["train.epochs=2"], tmp_path / "full")
    assert not (tmp_path / "full" / "metrics.json").exists()


@pytest.mark.cuda
def test_cuda_run_trains_on_the_gpu_and_is_deterministic(tmp_path):
    overrides = ["+exp=xor_relu", "device=cuda", "model.dropout=0.1", "train.batch_size=2"]
    a = train(overrides, tmp_path / "a")
    b = train(overrides, tmp_path / "b")
    assert a.metrics["device"] == "cuda:0" and a.status == "completed"
    assert a.final["accuracy/train"] == 1.0
    assert a.final == b.final
    assert predict(checkpoint.load(tmp_path / "a"), [[1, 0]])[0][1] > 0.5


@pytest.mark.cuda
def test_cuda_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    from nnrun import engine

    overrides = ["dataset=spirals", "dataset.n_samples=200", "model.hidden=[16]", "model.dropout=0.2",
                 "train.epochs=20", "train.batch_size=16", "device=cuda"]
    whole = train(overrides, tmp_path / "whole")
    _fake_signals(monkeypatch, 101)
    with pytest.raises(engine.RunInterrupted):
        train(overrides, tmp_path / "first")
    monkeypatch.undo()
    resumed = train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "second")
    assert resumed.final == whole.final


def test_predict_reads_points_from_a_csv(tmp_path, capsys):
    from nnrun.predict import main as predict_main

    train(["+exp=xor_relu"], tmp_path / "run")
    points = tmp_path / "points.csv"
    points.write_text("x2,x1\n0,1\n1,1\n")
    assert predict_main([str(tmp_path / "run"), "--csv", str(points)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("x1=1, x2=0: P(0) = ") and lines[0].endswith("-> 1")
    assert lines[1].endswith("-> 0")
    assert predict_main([str(tmp_path / "run"), "--csv", str(tmp_path / "none.csv")]) == 2
    assert predict_main([str(tmp_path / "run"), "1"]) == 2
    assert "2 numbers, one per feature (x1, x2)" in capsys.readouterr().err


def test_resuming_a_run_that_restored_its_best_weights_continues_from_its_last_step(tmp_path):
    # Early stopping on but never triggered: the run ends restoring its best (early) epoch, yet going on
    # from it must continue from the last step, as an uninterrupted longer run does.
    overrides = ["dataset=gaussians", "dataset.n_samples=60", "dataset.noise=1.2", "model.hidden=[128,128]",
                 "optimizer.lr=0.01", "train.early_stopping.patience=1000"]
    first = train([*overrides, "train.epochs=40"], tmp_path / "first")
    assert first.best_epoch < first.epochs_run == 40
    saved = checkpoint.load(tmp_path / "first")
    assert any(not torch.equal(saved["model"][k], saved["resume"]["model"][k]) for k in saved["model"])
    train([*overrides, "train.epochs=50", f"train.resume={tmp_path / 'first'}"], tmp_path / "resumed")
    train([*overrides, "train.epochs=50"], tmp_path / "whole")
    a, b = checkpoint.load(tmp_path / "resumed"), checkpoint.load(tmp_path / "whole")
    for key in a["resume"]["model"]:
        assert torch.equal(a["resume"]["model"][key], b["resume"]["model"][key]), key


def test_resuming_a_run_that_stopped_early_ends_where_it_stopped(tmp_path):
    overrides = ["dataset=gaussians", "dataset.n_samples=60", "dataset.noise=1.2", "model.hidden=[64,64]",
                 "train.epochs=200", "train.early_stopping.patience=5"]
    first = train(overrides, tmp_path / "first")
    assert first.status == "stopped_early" and first.epochs_run < 200
    again = train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "again")
    assert (again.status, again.epochs_run, again.best_epoch, again.final) == \
        (first.status, first.epochs_run, first.best_epoch, first.final)
    a, b = checkpoint.load(tmp_path / "first"), checkpoint.load(tmp_path / "again")
    assert all(torch.equal(a["resume"]["model"][k], b["resume"]["model"][k]) for k in a["resume"]["model"])
    # With more patience it goes on from where it stopped.
    longer = train([*overrides[:-1], "train.early_stopping.patience=50", f"train.resume={tmp_path / 'first'}"],
                   tmp_path / "longer")
    assert longer.epochs_run > first.epochs_run


def test_an_interrupted_run_logs_its_last_epoch_and_its_resumption_its_first(tmp_path, monkeypatch):
    """The first and the last epoch a run trains are on its curves, also when a signal ends it or it resumes."""
    from nnrun import engine

    overrides = ["dataset=gaussians", "dataset.n_samples=60", "train.epochs=40", "train.log_every=10"]
    _fake_signals(monkeypatch, 2 * 15)  # full batch: stopped before epoch 16's step
    with pytest.raises(engine.RunInterrupted):
        train(overrides, tmp_path / "first")
    monkeypatch.undo()
    stopped = read_metrics(tmp_path / "first")
    assert (stopped["status"], stopped["epochs_run"]) == ("interrupted", 15)
    last = events(tmp_path / "first").Scalars("loss/train")
    assert [e.step for e in last] == [1, 10, 15]
    assert last[-1].value == pytest.approx(stopped["final"]["loss/train"])
    train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "second")
    assert [e.step for e in events(tmp_path / "second").Scalars("loss/train")] == [16, 20, 30, 40]


def test_each_run_of_a_sweep_times_its_own_training(tmp_path):
    """A stack's wall time is its runs': a job of 1 epoch trained after a long stack is not charged for it."""
    from conftest import train_stacked

    long, short = train_stacked([(["dataset=spirals", "model.hidden=[64,64]", "train.epochs=300"], tmp_path / "a"),
                                 (["dataset=spirals", "model.hidden=[64,64]", "train.epochs=1"], tmp_path / "b")])
    assert long.epochs_run == 300 and short.epochs_run == 1
    assert short.metrics["wall_time_s"] < long.metrics["wall_time_s"] / 4


def _signals_from(monkeypatch, received):
    from contextlib import contextmanager

    from nnrun import engine

    @contextmanager
    def fake():
        yield received

    monkeypatch.setattr(engine, "stop_signals", fake)


class SignalOnce(list):
    """A stand-in for the engine's received-signals list: SIGTERM arrives once `path` exists."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def __bool__(self):
        if not len(self) and self.path.exists():
            self.append(signal.SIGTERM)
        return len(self) > 0


def test_a_signal_once_every_run_has_ended_leaves_the_results_as_they_are(tmp_path, monkeypatch):
    from contextlib import contextmanager

    from nnrun import engine

    @contextmanager
    def signal_after_training():
        received = []
        yield received
        received.append(signal.SIGINT)  # Ctrl-C as the last run has just been saved

    monkeypatch.setattr(engine, "stop_signals", signal_after_training)
    result = train(["train.epochs=3"], tmp_path)  # no RunInterrupted
    assert result.status == "completed" and read_metrics(tmp_path)["status"] == "completed"


def test_a_signal_between_stacks_interrupts_only_the_runs_it_cut(tmp_path, monkeypatch):
    from nnrun import engine

    def two_stacks(under):  # two kinds of model, trained one after the other; SIGTERM once the first is saved
        _signals_from(monkeypatch, SignalOnce(under / "first" / "metrics.json"))
        return [engine.Job(parsed(["train.epochs=3"]), under / "first"),
                engine.Job(parsed(["train.epochs=3", "model.hidden=[8]"]), under / "second")]

    jobs = two_stacks(tmp_path / "a")
    with pytest.raises(engine.RunInterrupted) as stopped:
        engine.train_jobs(jobs)
    assert stopped.value.signum == signal.SIGTERM
    assert [read_metrics(job.run_dir)["status"] for job in jobs] == ["completed", "interrupted"]
    results = engine.train_jobs(two_stacks(tmp_path / "b"), raise_interrupt=False)
    assert [r.status for r in results] == ["completed", "interrupted"]


def test_run_interrupted_names_the_dir_that_resumes_the_run_or_its_whole_sweep(tmp_path):
    from nnrun import engine

    sweep_dir = tmp_path / "sweep"
    job_dir = sweep_dir / "0_seed=0"
    job_dir.mkdir(parents=True)
    (sweep_dir / "multirun.yaml").write_text("{}")
    stopped = engine.RunInterrupted(job_dir, signal.SIGTERM)
    assert (stopped.run_dir, stopped.resume_dir, stopped.signum) == (job_dir, sweep_dir, signal.SIGTERM)
    assert str(stopped) == f"interrupted by SIGTERM; results saved in {sweep_dir}"
    assert engine.RunInterrupted(tmp_path / "run", signal.SIGINT).resume_dir == tmp_path / "run"


def test_a_single_run_says_where_it_resumes_and_a_sweep_job_leaves_it_to_the_sweep(tmp_path, monkeypatch,
                                                                                    capsys):
    from nnrun import engine

    overrides = ["dataset=spirals", "dataset.n_samples=200", "train.batch_size=16", "train.epochs=4"]
    _fake_signals(monkeypatch, 20)  # inside the second epoch
    with pytest.raises(engine.RunInterrupted):
        train(overrides, tmp_path / "first")
    monkeypatch.undo()
    saved = checkpoint.load(tmp_path / "first")["resume"]
    assert saved["partial"] is not None
    capsys.readouterr()
    single = train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "single")
    assert capsys.readouterr().out == (f"nnrun: resuming {tmp_path / 'first'} after epoch {saved['epochs_done']} "
                                       f"(inside epoch {saved['partial']['epoch']})\n")
    job = engine.Job(parsed(overrides), tmp_path / "job", resume_from=tmp_path / "first", in_sweep=True)
    (swept,) = engine.train_jobs([job])
    assert capsys.readouterr().out == ""
    assert single.final == swept.final and single.status == "completed"


def test_a_resumed_run_stopped_before_its_first_step_keeps_its_place_inside_the_epoch(tmp_path, monkeypatch):
    from nnrun import engine

    overrides = ["dataset=spirals", "dataset.n_samples=200", "train.batch_size=16", "train.epochs=4"]
    _fake_signals(monkeypatch, 20)
    with pytest.raises(engine.RunInterrupted):
        train(overrides, tmp_path / "first")
    _fake_signals(monkeypatch, 0)  # Ctrl-C before the resumed run's first step
    with pytest.raises(engine.RunInterrupted):
        train([*overrides, f"train.resume={tmp_path / 'first'}"], tmp_path / "second")
    first, second = (checkpoint.load(tmp_path / name)["resume"] for name in ("first", "second"))
    assert (second["epochs_done"], second["step"]) == (first["epochs_done"], first["step"])
    assert {k: second["partial"][k] for k in ("epoch", "next_start")} == \
        {k: first["partial"][k] for k in ("epoch", "next_start")}
    assert torch.equal(second["partial"]["order"], first["partial"]["order"])
