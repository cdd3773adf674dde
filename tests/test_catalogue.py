"""The lecture's claims, one test per experiment of conf/exp/: each trains the experiment and checks its numbers.

Runs train in this process through Hydra's compose API (fast); sweeps train each combination of the exp file's
own `hydra.sweeper.params` in stacks, as the vectorized launcher does, so the test checks exactly what
`nnrun train -m +exp=<name>` runs. A few tests go
through the real CLI, and those and the sweeps of six runs or more are marked slow.

Each test also renders its row of README.md's lecture table ("what we measured") from the numbers it trained,
at the rounding the table shows, and fails when README says otherwise: the message is the row as it should read.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from conftest import REPO, compose, curve, images, parsed, read_metrics, run_dirs, run_nnrun, train, train_stacked
from nnrun.data import load

EXP_DIR = REPO / "conf" / "exp"
README = REPO / "README.md"
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
    """Train every job of `exp`'s sweep in-process, in stacks as `hydra/launcher=vectorized` trains them (each
    job's numbers are its run alone's); {job overrides joined by ' ': RunResult}."""
    jobs = sweep_jobs(exp)
    trained = train_stacked([([f"+exp={exp}", *job], tmp_path / str(i)) for i, job in enumerate(jobs)])
    return {" ".join(job): result for job, result in zip(jobs, trained)}


def untrained(overrides: list[str]) -> dict[str, float]:
    """Loss and accuracy on each split of the network a run of `overrides` starts with (same data split, same
    initial weights): what `nnrun report --metric untrained/...` shows."""
    from nnrun.report import untrained as untrained_metrics

    return untrained_metrics(parsed(overrides))


def readme_measured(exp: str) -> str:
    """The "what we measured" cell of README.md's lecture table in the row of `exp`."""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| `{exp}` |"):
            return line.strip().strip("|").split(" | ")[-1].strip()
    raise AssertionError(f"README.md's lecture table has no row for {exp}")


def assert_readme_says(exp: str, measured: str, part: str = "all") -> None:
    """README's row of `exp` reads `measured` (part="all"), or begins or ends with it ("start", "end": a row
    whose numbers come from two tests, one of them slow)."""
    cell = readme_measured(exp)
    agrees = {"all": cell == measured, "start": cell.startswith(measured), "end": cell.endswith(measured)}[part]
    assert agrees, f"README.md's row for {exp} disagrees with what was measured; it should read ({part}):\n{measured}"


def units(hidden) -> str:
    """[32, 32] -> '2×32', [4] -> '4'."""
    hidden = list(hidden)
    return str(hidden[0]) if len(hidden) == 1 else f"{len(hidden)}×{hidden[0]}" if len(set(hidden)) == 1 \
        else "-".join(map(str, hidden))


def test_every_experiment_composes_with_its_claim_and_name():
    for exp in CATALOGUE:
        text = (EXP_DIR / f"{exp}.yaml").read_text()
        assert text.startswith("# @package _global_"), exp
        assert "claim" in text, f"{exp}.yaml should state the lecture's claim it shows"
        assert compose([f"+exp={exp}"]).exp_name == exp


def test_xor_perceptron_cannot_separate(tmp_path):
    """The unit ends at P(1) = 0.5 on every point, to seven decimals: which side of 0.5 each point falls on, and
    so the accuracy, is float rounding (0.50 on one machine, 0.25 on another). README quotes the range."""
    from nnrun import checkpoint
    from nnrun.predict import predict

    result = train(["+exp=xor_perceptron"], tmp_path)
    accuracy, loss = result.final["accuracy/train"], result.final["loss/train"]
    assert 0.25 <= accuracy <= 0.75
    assert loss == pytest.approx(math.log(2), abs=0.01)
    # What `nnrun predict RUN_DIR x1 x2` prints for the four points.
    p1 = {f"{proba[1]:.4f}" for proba in predict(checkpoint.load(tmp_path), [[0, 0], [0, 1], [1, 0], [1, 1]])}
    assert_readme_says("xor_perceptron",
                       f"loss {loss:.3f} = ln 2 after {result.epochs_run} epochs: the unit hedges, "
                       f"P(1) = {' / '.join(sorted(p1))} on all four points (`nnrun predict`), so float rounding "
                       "decides each point's class: accuracy 0.25 to 0.75 by machine [ln 2 ± 0.01, accuracy ≤ 0.75]")


def test_xor_sigmoid_hidden_layer_solves_xor(tmp_path):
    result = train(["+exp=xor_sigmoid"], tmp_path)
    assert result.final["accuracy/train"] == 1.0
    assert_readme_says("xor_sigmoid", f"accuracy {result.final['accuracy/train']:.2f}, loss "
                                      f"{result.final['loss/train']:.3f} "
                                      f"({units(parsed(['+exp=xor_sigmoid']).model.hidden)} hidden units) [1.0]")


def test_xor_relu_hidden_layer_solves_xor_and_draws_the_three_panels(tmp_path):
    result = train(["+exp=xor_relu"], tmp_path)
    assert result.final["accuracy/train"] == 1.0
    found = images(tmp_path)
    # The data never change: one original-data picture; the hidden space at every image epoch (first, last).
    assert [(e.step, e.width, e.height) for e in found["pictures/xor_1_original_data"]] == [(1, 200, 200)]
    for tag in ("pictures/xor_2_hidden_space", "pictures/xor_3_linear_classification"):
        assert [(e.step, e.width, e.height) for e in found[tag]] == [(1, 200, 200), (500, 200, 200)], tag
    assert_readme_says("xor_relu", f"accuracy {result.final['accuracy/train']:.2f}, loss "
                                   f"{result.final['loss/train']:.3f}; the three panels in IMAGES › pictures "
                                   "(`xor_1`…`xor_3`) [1.0, images 200×200].", part="start")


@pytest.mark.slow
def test_xor_relu_two_units_die_more_often_than_four(tmp_path):
    """Seeds 0-7 with 4 and with 2 hidden ReLUs: with two, a dead unit leaves too few to separate XOR."""
    seeds = range(8)
    runs = [(["+exp=xor_relu", f"model.hidden=[{hidden}]", f"seed={seed}", "train.image_every=0"],
             tmp_path / f"{hidden}_{seed}") for hidden in (4, 2) for seed in seeds]
    trained = iter(train_stacked(runs))
    solved = {hidden: [seed for seed in seeds if next(trained).final["accuracy/train"] == 1.0] for hidden in (4, 2)}
    assert len(solved[4]) > len(solved[2])
    two = f"only for seed {solved[2][0]}" if len(solved[2]) == 1 else f"for {len(solved[2])} of them"
    assert_readme_says("xor_relu", f" 4 units solve it for {len(solved[4])} of seeds 0–{seeds[-1]}, 2 units "
                                   f"{two} (dead ReLUs) [4 > 2]", part="end")


def test_pass_fail_untrained_predicts_badly_trained_predicts_well(tmp_path):
    from nnrun import checkpoint
    from nnrun.predict import format_prediction, predict

    before = untrained(["+exp=pass_fail"])["accuracy/test"]
    result = train(["+exp=pass_fail"], tmp_path)
    after = result.final["accuracy/test"]
    assert after >= 0.9
    assert before < 0.8 and after - before >= 0.2
    payload = checkpoint.load(tmp_path)
    (proba,) = predict(payload, [[4, 5]])
    line = format_prediction(payload["feature_names"], [4, 5], payload["class_names"], proba)
    assert_readme_says("pass_fail", f"test accuracy {before:.2f} untrained → {after:.3f} trained; `{line}` "
                                    "[≥ 0.9, untrained < 0.8, +0.2]")


@pytest.mark.slow
def test_pass_fail_trained_run_predicts_through_the_cli(tmp_path):
    done = run_nnrun(["train", "+exp=pass_fail", "train.epochs=100"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "experiments" / "pass_fail")
    predicted = run_nnrun(["predict", str(run_dir), "4", "5"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    # What the command prints is the trained run's prediction: its checkpoint, read back here, says the same.
    from nnrun import checkpoint
    from nnrun.predict import format_prediction, predict

    payload = checkpoint.load(run_dir)
    (proba,) = predict(payload, [[4, 5]])
    assert predicted.stdout.strip() == format_prediction(payload["feature_names"], [4, 5], payload["class_names"],
                                                         proba)


def test_linear_activations_give_linear_decisions(tmp_path):
    val = {job: r.final["accuracy/val"] for job, r in run_sweep("linear_vs_nonlinear", tmp_path).items()}
    assert set(val) == {"activation=linear", "activation=relu", "activation=tanh"}
    assert val["activation=linear"] <= 0.65
    assert val["activation=relu"] >= 0.95 and val["activation=tanh"] >= 0.95
    cfg = parsed(["+exp=linear_vs_nonlinear"])
    assert_readme_says("linear_vs_nonlinear",
                       f"{cfg.dataset.name}, {units(cfg.model.hidden)} units, val accuracy: "
                       + ", ".join(f"{job.split('=')[1]} {accuracy:.2f}" for job, accuracy in val.items())
                       + " [linear ≤ 0.65, others ≥ 0.95]")


@pytest.mark.slow  # seven runs
def test_lr_sweep_too_small_stuck_too_large_overshoots_middle_converges(tmp_path):
    results = run_sweep("lr_sweep", tmp_path)
    lrs = sorted(results, key=lambda job: float(job.split("=")[1]))
    initial = untrained(["+exp=lr_sweep"])["loss/train"]  # every lr starts from these weights
    smallest, largest = results[lrs[0]], results[lrs[-1]]
    fell = (initial - smallest.final["loss/train"]) / initial
    assert fell < 0.10
    assert largest.status == "diverged" or largest.final["loss/train"] >= initial
    best = min(lrs, key=lambda job: results[job].final["loss/val"] if results[job].final["loss/val"] is not None
               else math.inf)
    assert best not in (lrs[0], lrs[-1])

    def shown(job: str) -> str:
        result, lr = results[job], f"{float(job.split('=')[1]):g}"
        text = f"{lr}: {result.final['loss/train']:.3f}" if result.status != "diverged" else f"{lr}: diverged"
        if job == best:
            return f"**{text}** (val loss {result.final['loss/val']:.3f})"
        if job == lrs[0]:
            return f"{text} (falls {100 * fell:.1f} %)"
        return f"{text} (above the start)" if job == lrs[-1] and result.status != "diverged" else text

    cfg = parsed(["+exp=lr_sweep"])
    assert_readme_says("lr_sweep", f"plain {cfg.optimizer.name.upper()} on {cfg.dataset.name}, initial loss "
                                   f"{initial:.3f}. Final train loss by lr: " + ", ".join(map(shown, lrs))
                       + " [smallest falls < 10 %, largest ≥ initial, best val loss strictly inside]")


@pytest.mark.slow  # six runs
def test_optimizers_all_six_run_and_adam_solves_spirals(tmp_path):
    results = run_sweep("optimizers", tmp_path)
    names = {job.split("=")[1] for job in results}
    assert names == {"sgd", "momentum", "adagrad", "adadelta", "adam", "rmsprop"}
    assert all(r.status == "completed" for r in results.values())
    assert results["optimizer=adam"].final["accuracy/val"] >= 0.95
    # The lecture's claim: every adaptive method gets further than plain SGD in the same steps. Each ends below
    # two thirds of SGD's val loss (measured: at most 0.126 against 0.328), a margin no machine's rounding
    # crosses; the order among the five is closer and is what README's row reports, not the claim.
    sgd = results["optimizer=sgd"].final["loss/val"]
    adaptive = {job: r.final["loss/val"] for job, r in results.items() if job != "optimizer=sgd"}
    assert all(loss < 2 / 3 * sgd for loss in adaptive.values()), (sgd, adaptive)
    ranking = sorted(results, key=lambda job: results[job].final["loss/val"])
    assert ranking[-1] == "optimizer=sgd"
    shown = {"sgd": "SGD", "momentum": "momentum", "adagrad": "Adagrad", "adadelta": "Adadelta", "adam": "Adam",
             "rmsprop": "RMSProp"}
    cfg = parsed(["+exp=optimizers"])
    assert_readme_says("optimizers", f"{cfg.dataset.name}, {cfg.train.epochs} epochs, ranked by val loss: "
                       + ", ".join(f"{shown[job.split('=')[1]]} {results[job].final['loss/val']:.3f}"
                                   for job in ranking)
                       + f"; val accuracy {results['optimizer=adam'].final['accuracy/val']:.3f} for Adam (SGD "
                         f"{results['optimizer=sgd'].final['accuracy/val']:.3f}) [all six complete, Adam ≥ 0.95]")


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
    one, mini, full = (curve(jobs[name], "loss/step") for name in ("0_train.batch_size=1", "1_train.batch_size=32",
                                                                    "2_train.batch_size=null"))
    assert len(one) > len(mini) > len(full)
    assert step_to_step_variance(one) > step_to_step_variance(mini)
    assert_readme_says("batch_size", f"variance of the step-to-step change of `loss/step`: batch 1: "
                                     f"{step_to_step_variance(one):.2g} ({len(one)} steps), batch 32: "
                                     f"{step_to_step_variance(mini):.2g} ({len(mini)} steps), full batch: "
                                     f"{len(full)} smooth steps [1 > 32]")


def test_capacity_tiny_net_underfits_huge_net_overfits(tmp_path):
    results = run_sweep("capacity", tmp_path)
    tiny, ideal, huge = (results[f"model.hidden={h}"].final for h in ("[1]", "[16]", "[128,128]"))
    assert tiny["loss/train"] >= 0.5
    assert huge["accuracy/train"] - huge["accuracy/val"] >= 0.15
    assert ideal["loss/val"] < min(tiny["loss/val"], huge["loss/val"])

    def accuracies(final) -> str:
        return f"{final['accuracy/train']:.2f}/{final['accuracy/val']:.2f}"

    data = load(parsed(["+exp=capacity"]).dataset)
    assert_readme_says("capacity", f"{len(data.train)} noisy spiral points ({len(data.val)} held out). 1 unit: train "
                                   f"loss {tiny['loss/train']:.2f}, accuracy {accuracies(tiny)} (train/val); "
                                   f"16 units: {accuracies(ideal)}, lowest val loss {ideal['loss/val']:.2f}; "
                                   f"2×128: {accuracies(huge)}, val loss {huge['loss/val']:.2f} "
                                   "[tiny train loss ≥ 0.5, huge gap ≥ 0.15, 16 units lowest val loss]")


@pytest.mark.slow  # nine runs
def test_dropout_narrows_the_train_val_gap(tmp_path):
    results = run_sweep("dropout_ablation", tmp_path)

    def mean_gap(p: str) -> float:
        gaps = [r.final["accuracy/train"] - r.final["accuracy/val"] for job, r in results.items()
                if f"model.dropout={p} " in job + " "]
        assert len(gaps) == 3
        return sum(gaps) / len(gaps)

    assert mean_gap("0.5") < mean_gap("0.0")
    cfg = parsed(["+exp=dropout_ablation"])
    data = load(cfg.dataset)
    assert_readme_says("dropout_ablation",
                       f"{len(data.train)} overlapping Gaussian points ({len(data.val)} held out), "
                       f"{units(cfg.model.hidden)} units, mean train − val accuracy gap over seeds 0–2: "
                       + ", ".join(f"p = {float(p):g}: {mean_gap(p):.3f}" for p in ("0.0", "0.2", "0.5"))
                       + " [0.5 < 0]")


def test_early_stopping_stops_at_the_lowest_val_loss(tmp_path):
    result = train(["+exp=early_stopping"], tmp_path)
    cfg = parsed(["+exp=early_stopping"])
    assert result.status == "stopped_early"
    assert result.epochs_run < cfg.train.epochs
    assert result.best_epoch < result.epochs_run
    # The restored weights are those of the best epoch: their val loss is the best one seen.
    assert result.final["loss/val"] == pytest.approx(result.best_value, rel=1e-5)
    assert_readme_says("early_stopping",
                       f"patience {cfg.train.early_stopping.patience}: stopped at epoch {result.epochs_run} of "
                       f"{cfg.train.epochs}, best epoch {result.best_epoch}; the restored weights have val loss "
                       f"{result.final['loss/val']:.3f} = the best seen [stopped early, best < run, restored = best]")


def test_spirals_deep_net_fits_a_non_linear_boundary(tmp_path):
    two = train(["+exp=spirals"], tmp_path / "two")
    assert two.final["accuracy/val"] >= 0.95
    three = train(["+exp=spirals", "dataset.classes=3", "loss=cross_entropy"], tmp_path / "three")
    assert three.final["accuracy/val"] >= 0.9
    patience = parsed(["+exp=spirals"]).train.early_stopping.patience
    assert_readme_says("spirals", f"val accuracy {two.final['accuracy/val']:.3f} (2 classes, best epoch "
                                  f"{two.best_epoch}), {three.final['accuracy/val']:.3f} (3 classes, best epoch "
                                  f"{three.best_epoch}); early stopping with patience {patience} keeps the best "
                                  "val epoch [≥ 0.95, ≥ 0.9]")
