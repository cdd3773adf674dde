"""A stack of models trains each one exactly as its separate run (a stack of one): curves, statuses, files."""

from __future__ import annotations

import pytest
import torch

from conftest import parsed, train

from nnrun import checkpoint, engine, models, stacking
from nnrun.engine import Job

SMALL = ["train.epochs=24", "train.log_every=4"]
# One case per optimizer; between them every loss, dropout on and off, full batch and mini-batch.
CASES = {
    "sgd-bce-xor-full": (["optimizer=sgd", "loss=bce"],
                         [["optimizer.lr=0.5", "seed=0"], ["optimizer.lr=0.1", "seed=1", "model.init_std=0.5"],
                          ["optimizer.lr=1.0", "seed=2", "optimizer.weight_decay=0.01"]]),
    "momentum-mse-spirals-batch-dropout": (
        ["optimizer=momentum", "optimizer.nesterov=true", "loss=mse", "dataset=spirals", "dataset.n_samples=200",
         "model.hidden=[8,8]", "train.batch_size=32"],
        [["optimizer.lr=0.1", "seed=0", "model.dropout=0.2"], ["optimizer.lr=0.3", "seed=1"],
         ["optimizer.lr=0.05", "seed=2", "optimizer.momentum=0.5", "model.dropout=0.5"]]),
    "adagrad-ce-spirals3-batch": (
        ["optimizer=adagrad", "loss=cross_entropy", "dataset=spirals", "dataset.classes=3", "dataset.n_samples=150",
         "model.hidden=[8]", "train.batch_size=25"],
        [["optimizer.lr=0.1", "seed=0", "optimizer.lr_decay=0.01"], ["optimizer.lr=0.3", "seed=3"],
         ["optimizer.lr=0.05", "seed=4", "optimizer.initial_accumulator_value=0.1"]]),
    "adadelta-bce-circles-full-dropout": (
        ["optimizer=adadelta", "loss=bce", "dataset=circles", "dataset.n_samples=100", "model.hidden=[6]"],
        [["optimizer.lr=1.0", "seed=0", "model.dropout=0.3"], ["optimizer.lr=0.5", "seed=1", "optimizer.rho=0.5"]]),
    "adam-ce-gaussians-batch": (
        ["optimizer=adam", "loss=cross_entropy", "dataset=gaussians", "dataset.n_samples=120", "model.hidden=[5]",
         "train.batch_size=16", "train.log_steps=true"],
        [["optimizer.lr=0.01", "seed=0", "optimizer.weight_decay=0.01"], ["optimizer.lr=0.05", "seed=1"],
         ["optimizer.lr=0.02", "seed=2", "optimizer.betas=[0.5,0.9]"]]),
    "rmsprop-momentum-mse-xor-full": (
        ["optimizer=rmsprop", "optimizer.momentum=0.5", "loss=mse"],
        [["optimizer.lr=0.01", "seed=0"], ["optimizer.lr=0.05", "seed=5", "optimizer.alpha=0.9"]]),
}


@pytest.fixture
def curves(monkeypatch):
    """Every scalar any RunLogger writes, by run dir: {run_dir: {tag: {step: value}}}."""
    from nnrun.tensorboard_events import RunLogger

    seen: dict[str, dict[str, dict[int, float]]] = {}
    original = RunLogger.scalars

    def record(self, step, values):
        for tag, value in values.items():
            seen.setdefault(str(self.run_dir), {}).setdefault(tag, {})[step] = float(value)
        original(self, step, values)

    monkeypatch.setattr(RunLogger, "scalars", record)
    return seen


def stack_and_separate(base, variants, tmp_path):
    jobs = [Job(parsed(base + v), tmp_path / f"stacked{i}", base + v) for i, v in enumerate(variants)]
    stacked = engine.train_jobs(jobs)
    separate = [train(base + v, tmp_path / f"separate{i}") for i, v in enumerate(variants)]
    return stacked, separate


def assert_same_curves(curves, tmp_path, n):
    for i in range(n):
        stacked, separate = curves[str(tmp_path / f"stacked{i}")], curves[str(tmp_path / f"separate{i}")]
        assert set(stacked) == set(separate)
        for tag in separate:
            assert stacked[tag].keys() == separate[tag].keys(), tag
            for step, value in separate[tag].items():
                assert stacked[tag][step] == pytest.approx(value, abs=1e-5, rel=1e-5, nan_ok=True), (i, tag, step)


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_stacked_model_logs_the_curve_of_its_separate_run(case, curves, tmp_path):
    base, variants = CASES[case]
    stacked, separate = stack_and_separate(base + SMALL, variants, tmp_path)
    assert_same_curves(curves, tmp_path, len(variants))
    for s, r in zip(stacked, separate):
        assert (s.status, s.epochs_run, s.best_epoch) == (r.status, r.epochs_run, r.best_epoch)
        assert s.final == pytest.approx(r.final, abs=1e-5)


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_every_activation_trains_each_stacked_model_like_its_separate_run(activation, curves, tmp_path):
    base = ["dataset=circles", "dataset.n_samples=60", "model.hidden=[5,3]", f"activation={activation}",
            "train.epochs=12", "train.log_every=3", "train.batch_size=20"]
    variants = [["optimizer.lr=0.05", "seed=0"], ["optimizer.lr=0.01", "seed=1", "model.dropout=0.3"]]
    stacked, separate = stack_and_separate(base, variants, tmp_path)
    assert_same_curves(curves, tmp_path, len(variants))
    assert [s.final for s in stacked] == [pytest.approx(r.final, abs=1e-5) for r in separate]


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
@pytest.mark.parametrize("hidden", [[], [3], [4, 2]])
def test_the_stacked_forward_pass_is_each_plain_mlps(activation, hidden):
    """One stacked forward pass, and the plain nn.Module that checkpoint.pt loads into: the same logits."""
    mlps = [models.build(2, hidden, 3, activation, dropout, None, seed)
            for seed, dropout in ((0, 0.0), (1, 0.5), (2, 0.2))]
    stack = models.StackedMLP(mlps).eval()
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = stack(x)
        for k, mlp in enumerate(mlps):
            torch.testing.assert_close(logits[k], mlp.eval()(x), rtol=1e-6, atol=1e-6)
            names = list(mlp.state_dict())
            assert stack.state_dict_of(stack.flat[k], names).keys() == mlp.state_dict().keys()
            for key, value in stack.state_dict_of(stack.flat[k], names).items():
                assert value.equal(mlp.state_dict()[key])


def test_a_diverging_model_is_frozen_and_the_others_go_on_unaffected(curves, tmp_path):
    base = ["optimizer=sgd", "loss=bce", "train.epochs=30", "train.log_every=1", "model.hidden=[4]",
            "train.early_stopping.patience=5", "dataset=circles", "dataset.n_samples=80"]
    variants = [["optimizer.lr=0.5", "seed=0"], ["optimizer.lr=1e38", "seed=1"], ["optimizer.lr=2.0", "seed=2"]]
    stacked, separate = stack_and_separate(base, variants, tmp_path)
    assert [s.status for s in stacked] == [r.status for r in separate]
    assert stacked[1].status == "diverged"
    assert [s.epochs_run for s in stacked] == [r.epochs_run for r in separate]
    assert_same_curves(curves, tmp_path, len(variants))
    saved = checkpoint.load(tmp_path / "stacked1")
    assert all(torch.isfinite(t).all() for t in saved["model"].values())  # a diverged run saves no NaNs


def test_a_model_diverging_between_logged_epochs_changes_nothing_of_the_others(curves, tmp_path):
    """Its divergence is seen at once; the others are not evaluated for it, so their best epochs stay their own."""
    base = ["optimizer=sgd", "loss=bce", "dataset=gaussians", "dataset.n_samples=50", "dataset.noise=1.2",
            "model.hidden=[64,64]", "train.epochs=40", "train.log_every=39"]
    # The first one's val loss at epoch 5, where the second diverges, is below its values at epochs 1, 39 and 40.
    variants = [["optimizer.lr=0.5", "seed=1"], ["optimizer.lr=1e3", "seed=0"]]
    stacked, separate = stack_and_separate(base, variants, tmp_path)
    assert (stacked[1].status, stacked[1].epochs_run) == ("diverged", 5) and separate[0].best_epoch >= 39
    for got, alone in zip(stacked, separate):
        assert (got.status, got.epochs_run, got.best_epoch) == (alone.status, alone.epochs_run, alone.best_epoch)
        assert got.best_value == pytest.approx(alone.best_value, rel=1e-5, nan_ok=True)
    assert_same_curves(curves, tmp_path, len(variants))


def test_models_stop_early_each_at_its_own_epoch_with_their_best_weights(tmp_path):
    base = ["optimizer=adam", "dataset=spirals", "dataset.n_samples=120", "model.hidden=[8]", "train.epochs=60",
            "train.batch_size=16", "train.early_stopping.patience=3"]
    variants = [["optimizer.lr=0.3", "seed=0"], ["optimizer.lr=0.001", "seed=1"], ["optimizer.lr=0.1", "seed=2"]]
    stacked, separate = stack_and_separate(base, variants, tmp_path)
    assert [(s.status, s.epochs_run, s.best_epoch) for s in stacked] == \
        [(r.status, r.epochs_run, r.best_epoch) for r in separate]
    assert len({s.epochs_run for s in stacked}) > 1  # they did stop at different epochs
    for i in range(len(variants)):
        a, b = checkpoint.load(tmp_path / f"stacked{i}"), checkpoint.load(tmp_path / f"separate{i}")
        assert a.keys() == b.keys() and a["resume"].keys() == b["resume"].keys()
        assert a["epoch"] == b["epoch"] and a["status"] == b["status"] and a["spec"] == b["spec"]
        for key, value in b["model"].items():
            torch.testing.assert_close(a["model"][key], value, atol=1e-5, rtol=1e-5)
        assert a["resume"]["optimizer"]["state"].keys() == b["resume"]["optimizer"]["state"].keys()
        assert a["resume"]["rng"]["train"].equal(b["resume"]["rng"]["train"])


def test_the_stack_is_rebuilt_only_when_models_leave_it(tmp_path, monkeypatch):
    """Taking models out re-indexes the weights and optimizer state (and drops the cached views and per-step
    numbers); an evaluated epoch where no model ends must not: with early stopping every epoch is evaluated."""
    kept = []
    original = models.StackedMLP.keep
    monkeypatch.setattr(models.StackedMLP, "keep", lambda self, rows: (kept.append(len(rows)), original(self, rows)))
    base = ["optimizer=adam", "dataset=spirals", "dataset.n_samples=120", "model.hidden=[8]", "train.epochs=40",
            "train.batch_size=16", "train.early_stopping.patience=3", "train.log_every=1"]
    variants = [["optimizer.lr=0.3", "seed=0"], ["optimizer.lr=0.001", "seed=1"], ["optimizer.lr=0.1", "seed=2"]]
    jobs = [Job(parsed(base + v), tmp_path / f"stacked{i}", base + v) for i, v in enumerate(variants)]
    results = engine.train_jobs(jobs)
    left_early = sorted({r.epochs_run for r in results if r.status == "stopped_early"})
    assert left_early and len(kept) == len(left_early)  # once per epoch at which some model left, no more
    assert kept == sorted(kept, reverse=True) and kept[-1] >= 1


def test_jobs_share_a_stack_when_they_differ_only_in_per_model_values():
    key = stacking.batch_key(parsed(["optimizer.lr=0.1", "seed=0"]))
    for same in (["optimizer.lr=0.3", "seed=4"], ["model.dropout=0.5"], ["model.init_std=0.1"],
                 ["optimizer.weight_decay=0.1", "optimizer.betas=[0.5,0.9]"], ["exp_name=other"]):
        assert stacking.batch_key(parsed(same)) == key, same
    for different in (["model.hidden=[8]"], ["train.batch_size=2"], ["optimizer=sgd"], ["loss=mse"],
                      ["dataset=circles"], ["train.epochs=3"], ["activation=tanh"]):
        assert stacking.batch_key(parsed(different)) != key, different
    momentum = stacking.batch_key(parsed(["optimizer=momentum"]))
    assert stacking.batch_key(parsed(["optimizer=momentum", "optimizer.nesterov=true"])) != momentum


def test_the_memory_budget_caps_models_per_stack():
    from nnrun.data import load

    cfg = parsed(["dataset=spirals", "model.hidden=[32,32]"])
    per_model = stacking.bytes_per_model(cfg, load(cfg.dataset))
    assert stacking.models_per_stack(per_model, 10 * per_model, 256) == 10
    assert stacking.models_per_stack(per_model, 10 * per_model, 4) == 4
    assert stacking.models_per_stack(per_model, 1, 256) == 1


def test_the_open_file_limit_caps_models_per_stack(monkeypatch):
    # Each job's event file is open while its stack trains: a limit of 256 open files (macOS's default) holds
    # fewer models than the default max_models.
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, 1024))
    assert stacking.models_per_stack(1, 1 << 40, 256) == 256 - stacking.SPARE_FILES
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert stacking.models_per_stack(1, 1 << 40, 256) == 256
    assert [len(c) for c in stacking.chunks(list(range(1000)), 300)] == [300, 300, 300, 100]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stacked_models_match_their_separate_runs_on_cuda(curves, tmp_path):
    base, variants = CASES["momentum-mse-spirals-batch-dropout"]
    stacked, separate = stack_and_separate(base + SMALL + ["device=cuda"], variants, tmp_path)
    assert_same_curves(curves, tmp_path, len(variants))
    assert all(s.metrics["device"] == "cuda:0" for s in stacked)
