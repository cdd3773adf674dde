"""The lecture's claims, one test per experiment of conf/exp/: each trains the experiment and checks its numbers.

Runs train in this process through Hydra's compose API (fast); sweeps train each combination of the exp file's
own `hydra.sweeper.params`, so the test checks exactly what `nnrun train -m +exp=<name>` runs. A few slow
tests go through the real CLI.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
from conftest import REPO, compose, parsed, read_metrics, run_dirs, run_nnrun, train

EXP_DIR = REPO / "conf" / "exp"
CATALOGUE = ("xor_perceptron", "xor_sigmoid", "xor_relu", "pass_fail", "linear_vs_nonlinear", "lr_sweep",
             "optimizers", "batch_size", "capacity", "dropout_ablation", "early_stopping", "spirals")


def sweep_jobs(exp: str) -> list[list[str]]:
    """The override lists of each job that `nnrun train -m +exp=<exp>` runs, parsed as Hydra's sweeper does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = OmegaConf.load(EXP_DIR / f"{exp}.yaml").hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in overrides]
    return [list(job) for job in itertools.product(*axes)]


def run_sweep(exp: str, tmp_path: Path) -> dict[str, object]:
    """Train every job of `exp`'s sweep in-process; {job overrides joined by ' ': RunResult}."""
    results = {}
    for i, job in enumerate(sweep_jobs(exp)):
        results[" ".join(job)] = train([f"+exp={exp}", *job], tmp_path / str(i))
    return results


def untrained(overrides: list[str]):
    """(model, loss, data) exactly as a run of `overrides` starts: same data split, same initial weights."""
    from nnrun import losses, models
    from nnrun.data import load

    cfg = parsed(overrides)
    data = load(cfg.dataset)
    loss = losses.LOSSES[cfg.loss]
    model = models.build(data.n_features, cfg.model.hidden, loss.n_outputs(data.n_classes), cfg.activation,
                         cfg.model.dropout, cfg.model.init_std, cfg.seed)
    return model, loss, data


def test_every_experiment_composes_with_its_claim_and_name():
    for exp in CATALOGUE:
        text = (EXP_DIR / f"{exp}.yaml").read_text()
        assert text.startswith("# @package _global_"), exp
        assert "claim" in text, f"{exp}.yaml should state the lecture's claim it shows"
        assert compose([f"+exp={exp}"]).exp_name == exp


def test_xor_perceptron_cannot_separate(tmp_path):
    result = train(["+exp=xor_perceptron"], tmp_path)
    assert result.final["accuracy/train"] <= 0.75
    assert result.final["loss/train"] == pytest.approx(math.log(2), abs=0.01)


def test_xor_sigmoid_hidden_layer_solves_xor(tmp_path):
    result = train(["+exp=xor_sigmoid"], tmp_path)
    assert result.final["accuracy/train"] == 1.0


def test_xor_relu_hidden_layer_solves_xor_and_draws_the_three_panels(tmp_path):
    from test_pictures import images

    result = train(["+exp=xor_relu"], tmp_path)
    assert result.final["accuracy/train"] == 1.0
    found = images(tmp_path)
    # The data never change: one original-data picture; the hidden space at every image epoch (first, last).
    assert [(e.step, e.width, e.height) for e in found["pictures/xor_1_original_data"]] == [(1, 200, 200)]
    for tag in ("pictures/xor_2_hidden_space", "pictures/xor_3_linear_classification"):
        assert [(e.step, e.width, e.height) for e in found[tag]] == [(1, 200, 200), (500, 200, 200)], tag


def test_pass_fail_untrained_predicts_badly_trained_predicts_well(tmp_path):
    from nnrun.engine import evaluate

    model, loss, data = untrained(["+exp=pass_fail"])
    ((before_loss, before_accuracy),) = evaluate(model, loss, data.test)
    result = train(["+exp=pass_fail"], tmp_path)
    assert result.final["accuracy/test"] >= 0.9
    assert before_accuracy < 0.8 and result.final["accuracy/test"] - before_accuracy >= 0.2


@pytest.mark.slow
def test_pass_fail_trained_run_predicts_through_the_cli(tmp_path):
    done = run_nnrun(["train", "+exp=pass_fail", "train.epochs=100"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "experiments" / "pass_fail")
    predicted = run_nnrun(["predict", str(run_dir), "4", "5"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    match = re.search(r"P\(pass\) = ([0-9.]+)", predicted.stdout)
    assert match and 0.0 <= float(match.group(1)) <= 1.0, predicted.stdout


def test_linear_activations_give_linear_decisions(tmp_path):
    val = {job: r.final["accuracy/val"] for job, r in run_sweep("linear_vs_nonlinear", tmp_path).items()}
    assert set(val) == {"activation=linear", "activation=relu", "activation=tanh"}
    assert val["activation=linear"] <= 0.65
    assert val["activation=relu"] >= 0.95 and val["activation=tanh"] >= 0.95


def test_lr_sweep_too_small_stuck_too_large_overshoots_middle_converges(tmp_path):
    results = run_sweep("lr_sweep", tmp_path)
    lrs = sorted(results, key=lambda job: float(job.split("=")[1]))
    model, loss, data = untrained(["+exp=lr_sweep"])
    initial = loss.fn(model(data.train.x), data.train.y).item()  # every lr starts from these weights
    smallest, largest = results[lrs[0]], results[lrs[-1]]
    assert (initial - smallest.final["loss/train"]) / initial < 0.10
    assert largest.status == "diverged" or largest.final["loss/train"] >= initial
    best = min(lrs, key=lambda job: results[job].final["loss/val"] if results[job].final["loss/val"] is not None
               else math.inf)
    assert best not in (lrs[0], lrs[-1])


def test_optimizers_all_six_run_and_adam_solves_spirals(tmp_path):
    results = run_sweep("optimizers", tmp_path)
    names = {job.split("=")[1] for job in results}
    assert names == {"sgd", "momentum", "adagrad", "adadelta", "adam", "rmsprop"}
    assert all(r.status == "completed" for r in results.values())
    assert results["optimizer=adam"].final["accuracy/val"] >= 0.95
    # The ranking the README reports: by final val loss.
    ranking = sorted(results, key=lambda job: results[job].final["loss/val"])
    print("optimizers by loss/val:", [(j, round(results[j].final["loss/val"], 3)) for j in ranking])


def step_losses(run_dir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars("loss/step")]


def step_to_step_variance(losses: list[float]) -> float:
    """Variance of the change in loss from one step to the next: the noise of the gradient steps."""
    import statistics

    return statistics.pvariance([b - a for a, b in zip(losses, losses[1:])])


@pytest.mark.slow
def test_batch_size_one_point_per_step_is_noisier_than_a_mini_batch(tmp_path):
    """Through the real CLI, `nnrun train -m +exp=batch_size`: one job dir per batch size, named from it."""
    done = run_nnrun(["train", "-m", "+exp=batch_size"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (sweep,) = (tmp_path / "experiments" / "batch_size" / "multirun").iterdir()
    jobs = {d.name: d for d in sweep.iterdir() if d.is_dir()}
    assert set(jobs) == {"0_train.batch_size=1", "1_train.batch_size=32", "2_train.batch_size=null"}
    assert all(read_metrics(d)["status"] == "completed" for d in jobs.values())
    one, mini = step_losses(jobs["0_train.batch_size=1"]), step_losses(jobs["1_train.batch_size=32"])
    assert len(one) > len(mini) > len(step_losses(jobs["2_train.batch_size=null"]))
    assert step_to_step_variance(one) > step_to_step_variance(mini)


def test_capacity_tiny_net_underfits_huge_net_overfits(tmp_path):
    results = run_sweep("capacity", tmp_path)
    tiny, ideal, huge = (results[f"model.hidden={h}"].final for h in ("[1]", "[16]", "[128,128]"))
    assert tiny["loss/train"] >= 0.5
    assert huge["accuracy/train"] - huge["accuracy/val"] >= 0.15
    assert ideal["loss/val"] < min(tiny["loss/val"], huge["loss/val"])


def test_dropout_narrows_the_train_val_gap(tmp_path):
    results = run_sweep("dropout_ablation", tmp_path)

    def mean_gap(p: str) -> float:
        gaps = [r.final["accuracy/train"] - r.final["accuracy/val"] for job, r in results.items()
                if f"model.dropout={p} " in job + " "]
        assert len(gaps) == 3
        return sum(gaps) / len(gaps)

    assert mean_gap("0.5") < mean_gap("0.0")


def test_early_stopping_stops_at_the_lowest_val_loss(tmp_path):
    result = train(["+exp=early_stopping"], tmp_path)
    epochs = compose(["+exp=early_stopping"]).train.epochs
    assert result.status == "stopped_early"
    assert result.epochs_run < epochs
    assert result.best_epoch < result.epochs_run
    # The restored weights are those of the best epoch: their val loss is the best one seen.
    assert result.final["loss/val"] == pytest.approx(result.best_value, rel=1e-5)


def test_spirals_deep_net_fits_a_non_linear_boundary(tmp_path):
    two = train(["+exp=spirals"], tmp_path / "two")
    assert two.final["accuracy/val"] >= 0.95
    three = train(["+exp=spirals", "dataset.classes=3", "loss=cross_entropy"], tmp_path / "three")
    assert three.final["accuracy/val"] >= 0.9
