"""`nnrun predict`: every class's probability by name (text labels too), from a run dir or an experiment dir."""

from __future__ import annotations

import os
import re

import pytest

from conftest import into_closed_pipe, run_dirs, run_nnrun, train
from nnrun import checkpoint
from nnrun.predict import format_prediction
from nnrun.predict import main as predict_main


def grades_csv(path):
    """Pass when hours > 5; the labels are words."""
    path.write_text("hours,lectures,result\n" + "".join(
        f"{h},{(3 * h) % 7},{'pass' if h > 5 else 'fail'}\n" for h in range(11) for _ in range(4)))
    return path


def test_numeric_labels_show_every_class_probability_and_the_label():
    line = format_prediction(["x1", "x2"], [1, 0], ["0", "1"], [0.2, 0.8])
    assert line == "x1=1, x2=0: P(0) = 0.2000, P(1) = 0.8000 -> 1"


def test_text_labels_train_and_predict_by_name(tmp_path, capsys):
    data = grades_csv(tmp_path / "grades.csv")
    train(["dataset=csv", f"dataset.path={data}", "model.hidden=[4]", "optimizer=adam", "optimizer.lr=0.05",
           "train.epochs=150"], tmp_path / "run")
    assert checkpoint.load(tmp_path / "run")["class_names"] == ["fail", "pass"]
    assert predict_main([str(tmp_path / "run"), "9", "2"]) == 0
    assert predict_main([str(tmp_path / "run"), "1", "3"]) == 0
    busy, idle = capsys.readouterr().out.splitlines()
    pattern = r"hours=\d, lectures=\d: P\(fail\) = ([0-9.]+), P\(pass\) = ([0-9.]+) -> (\w+)"
    fail, passed, label = re.fullmatch(pattern, busy).groups()
    fail2, _, label2 = re.fullmatch(pattern, idle).groups()
    assert label == "pass" and float(passed) > 0.5 and float(fail) + float(passed) == pytest.approx(1, abs=2e-4)
    assert label2 == "fail" and float(fail2) > 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One xor run's checkpoint payload, to lay out as runs of an experiment."""
    root = tmp_path_factory.mktemp("xor")
    train(["+exp=xor_relu", "train.epochs=200"], root)
    return checkpoint.load(root)


def lay_out(payload, run_dir, names, mtime):
    run_dir.mkdir(parents=True)
    path = checkpoint.save(run_dir, {**payload, "class_names": names})
    os.utime(path, (mtime, mtime))


def test_an_experiment_dir_means_its_newest_run(trained, tmp_path, capsys):
    exp = tmp_path / "experiments" / "xor_relu"
    lay_out(trained, exp / "runs" / "2026-01-02_00-00-00", ["new0", "new1"], 2_000_000_000)
    lay_out(trained, exp / "runs" / "2026-01-01_00-00-00", ["old0", "old1"], 1_000_000_000)
    lay_out(trained, exp / "multirun" / "2026-01-03_00-00-00" / "0_seed=1", ["job0", "job1"], 3_000_000_000)
    assert predict_main([str(exp), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> new1") and "P(new0) = " in out
    assert f"using {exp / 'runs' / '2026-01-02_00-00-00'}" in err


def test_an_experiment_dir_with_only_a_sweep_means_its_newest_job(trained, tmp_path, capsys):
    exp = tmp_path / "experiments" / "sweep_only"
    lay_out(trained, exp / "multirun" / "2026-01-03_00-00-00" / "1_seed=1", ["late0", "late1"], 3_000_000_000)
    lay_out(trained, exp / "multirun" / "2026-01-03_00-00-00" / "0_seed=0", ["early0", "early1"], 2_000_000_000)
    (exp / "multirun" / "2026-01-04_00-00-00" / "0_seed=0").mkdir(parents=True)  # a job that never saved
    assert predict_main([str(exp), "1", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("-> late1")


def test_an_experiments_runs_or_multirun_folder_means_its_newest_run_there(trained, tmp_path, capsys):
    exp = tmp_path / "experiments" / "xor_relu"
    lay_out(trained, exp / "runs" / "2026-01-02_00-00-00", ["run0", "run1"], 3_000_000_000)
    lay_out(trained, exp / "multirun" / "2026-01-03_00-00-00" / "0_seed=0", ["early0", "early1"], 1_000_000_000)
    lay_out(trained, exp / "multirun" / "2026-01-03_00-00-00" / "1_seed=1", ["late0", "late1"], 2_000_000_000)
    assert predict_main([str(exp / "multirun"), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> late1")
    assert f"using {exp / 'multirun' / '2026-01-03_00-00-00' / '1_seed=1'}" in err
    assert predict_main([str(exp / "runs"), "1", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("-> run1")


@pytest.mark.parametrize("args,said", [
    (["predict"], "predict: the following arguments are required: run_dir (see nnrun predict --help)"),
    (["predict", "x", "--csv"], "predict: argument --csv: expected one argument (see nnrun predict --help)"),
    (["report"], "report: the following arguments are required: DIR (see nnrun report --help)"),
    (["report", ".", "--bogus"], "report: unrecognized arguments: --bogus (see nnrun report --help)")])
def test_a_command_line_argparse_refuses_is_one_line_and_exit_2(args, said, capsys):
    from nnrun.cli import main

    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    assert (exited.value.code, out, err) == (2, "", f"nnrun: error: {said}\n")


def test_a_dir_without_runs_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "experiments" / "empty" / "runs" / "2026-01-01_00-00-00").mkdir(parents=True)
    assert predict_main([str(tmp_path / "experiments" / "empty"), "1", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnrun: error: ")
    assert "no run here" in err and "experiment dir" in err
    assert predict_main([str(tmp_path / "nope"), "1", "0"]) == 2
    assert "no such run dir" in capsys.readouterr().err


def test_a_text_value_in_a_points_csv_names_row_and_column(trained, tmp_path, capsys):
    lay_out(trained, tmp_path / "run", ["0", "1"], 1_000_000_000)
    points = tmp_path / "points.csv"
    points.write_text("x1,x2\n1,0\n1,high\n")
    assert predict_main([str(tmp_path / "run"), "--csv", str(points)]) == 2
    err = capsys.readouterr().err
    assert err == f"nnrun: error: {points}: row 3, column 'x2': 'high' is not a number\n"


@pytest.mark.slow
def test_text_label_csv_through_the_cli_and_predict_on_the_experiment(tmp_path):
    data = grades_csv(tmp_path / "grades.csv")
    done = run_nnrun(["train", "dataset=csv", f"dataset.path={data}", "exp_name=grades", "train.epochs=100",
                      "optimizer=adam", "optimizer.lr=0.05"], tmp_path)
    assert done.returncode == 0, done.stderr
    (run_dir,) = run_dirs(tmp_path / "experiments" / "grades")
    predicted = run_nnrun(["predict", "experiments/grades", "9", "2"], tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert re.fullmatch(r"hours=9, lectures=2: P\(fail\) = [0-9.]+, P\(pass\) = [0-9.]+ -> pass\n",
                        predicted.stdout), predicted.stdout
    assert run_dir.name in predicted.stderr


def test_excel_csv_with_a_bom_trains_and_a_semicolon_points_file_predicts(tmp_path, capsys):
    """Training data saved by Excel (BOM, commas), points saved elsewhere (no BOM, semicolons): the names match."""
    data = tmp_path / "grades.csv"
    data.write_text("\ufeff" + grades_csv(tmp_path / "plain.csv").read_text(), encoding="utf-8")
    train(["dataset=csv", f"dataset.path={data}", "model.hidden=[4]", "optimizer=adam", "optimizer.lr=0.05",
           "train.epochs=150"], tmp_path / "run")
    assert checkpoint.load(tmp_path / "run")["feature_names"] == ["hours", "lectures"]
    points = tmp_path / "points.csv"
    points.write_text("lectures;hours\n2;9\n3;1\n")
    assert predict_main([str(tmp_path / "run"), "--csv", str(points)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in out] == ["hours=9, lectures=2", "hours=1, lectures=3"]
    assert out[0].endswith("-> pass") and out[1].endswith("-> fail")


def lay_out_job(payload, job_dir, name: str, status: str, best: float | None, mtime: float = 1_000_000_000,
                final: float | None = None, monitor: str = "loss/val"):
    """A sweep job as the engine leaves it: checkpoint.pt (its class names say which job answered) and
    metrics.json with its best `monitor` and the final one, that of the weights checkpoint.pt holds (the best,
    as restore_best leaves them, unless `final` says otherwise)."""
    from nnrun.metrics import build_metrics, write_metrics

    lay_out(payload, job_dir, [f"{name}0", f"{name}1"], mtime)
    final = best if final is None and status != "diverged" else final
    write_metrics(job_dir, build_metrics(status=status, epochs_run=200, best_epoch=100, best_value=best,
                                         monitor=monitor, final={monitor: final}, wall_time_s=1.0, device="cpu",
                                         seed=0, overrides=[f"optimizer.lr={name}"]))


@pytest.fixture
def lr_sweep(trained, tmp_path):
    """experiments/lr/multirun/<time>/ with four jobs: the newest is not the best, and the one with the lowest
    best loss/val diverged afterwards (its checkpoint holds its last finite weights, not its best)."""
    sweep = tmp_path / "experiments" / "lr" / "multirun" / "2026-01-03_00-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    lay_out_job(trained, sweep / "0_optimizer.lr=0.01", "slow", "completed", 0.30)
    lay_out_job(trained, sweep / "1_optimizer.lr=0.1", "good", "completed", 0.05)
    lay_out_job(trained, sweep / "2_optimizer.lr=10", "wild", "diverged", 0.01)
    lay_out_job(trained, sweep / "3_optimizer.lr=0.001", "newest", "completed", 0.60, mtime=2_000_000_000)
    (sweep / "4_optimizer.lr=100").mkdir()  # a job that failed before it saved anything
    return sweep


def test_a_sweep_dir_means_its_best_job_and_says_which(lr_sweep, capsys):
    assert predict_main([str(lr_sweep), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> good1")
    assert err == (f"nnrun: predict: using {lr_sweep / '1_optimizer.lr=0.1'} (the best of 4 jobs by final "
                   "loss/val: 0.0500, completed)\n")


def test_a_sweep_dir_without_multirun_yaml_is_a_sweep_dir_too(lr_sweep, capsys):
    """Optuna's sweeper writes no multirun.yaml: a dir of experiments/<exp>/multirun/ is a sweep all the same."""
    (lr_sweep / "multirun.yaml").unlink()
    assert predict_main([str(lr_sweep), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> good1") and "(the best of 4 jobs by final loss/val: 0.0500, completed)" in err


def test_best_on_an_experiment_dir_takes_its_best_run_not_its_newest(lr_sweep, trained, capsys):
    exp = lr_sweep.parents[1]
    lay_out_job(trained, exp / "runs" / "2026-01-04_00-00-00", "single", "stopped_early", 0.02, 3_000_000_000)
    assert predict_main([str(exp), "1", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("-> single1")  # the newest
    assert predict_main([str(exp), "--best", "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> single1") and "the best of 5 runs by final loss/val: 0.0200" in err
    lay_out_job(trained, exp / "runs" / "2026-01-05_00-00-00", "late", "completed", 0.9, 4_000_000_000)
    assert predict_main([str(exp), "--best", "1", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("-> single1")


def test_a_sweep_dir_means_the_job_whose_saved_weights_are_best_not_the_best_it_once_saw(trained, tmp_path, capsys):
    """Without restore_best a checkpoint holds the last epoch's weights: lr=10 once reached val loss 0.6006, but
    the weights it saved score 1.04, worse than lr=0.01's 0.65. predict hands out the better saved weights."""
    sweep = tmp_path / "experiments" / "lr2" / "multirun" / "2026-01-03_00-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    lay_out_job(trained, sweep / "0_optimizer.lr=10", "wild", "completed", 0.6006, final=1.04)
    lay_out_job(trained, sweep / "1_optimizer.lr=0.01", "steady", "completed", 0.6006 + 0.04, final=0.65)
    assert predict_main([str(sweep), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith("-> steady1")
    assert err == (f"nnrun: predict: using {sweep / '1_optimizer.lr=0.01'} (the best of 2 jobs by final "
                   "loss/val: 0.6500, completed)\n")


def test_a_sweep_dir_monitoring_accuracy_means_the_highest_final_accuracy(trained, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    lay_out_job(trained, sweep / "0_optimizer.lr=10", "peaked", "completed", 0.99, final=0.60,
                monitor="accuracy/val")
    lay_out_job(trained, sweep / "1_optimizer.lr=1", "kept", "stopped_early", 0.90, final=0.90,
                monitor="accuracy/val")
    lay_out_job(trained, sweep / "2_optimizer.lr=0.1", "low", "completed", 0.70, final=0.70, monitor="accuracy/val")
    lay_out_job(trained, sweep / "3_optimizer.lr=99", "broke", "diverged", 0.95, final=0.95, monitor="accuracy/val")
    assert predict_main([str(sweep), "0", "0"]) == 0
    assert capsys.readouterr().err.endswith(" (the best of 4 jobs by final accuracy/val: 0.9000, stopped_early)\n")


@pytest.mark.parametrize("values,said", [
    (["nan", "0"], "x1=nan"), (["inf", "0"], "x1=inf"), (["1", "-inf"], "x2=-inf"), (["1e400", "0"], "x1=1e400"),
    (["0", "1e39"], "x2=1e39")])  # finite as a double, inf in the float32 the network computes in
def test_a_non_finite_feature_value_is_one_line_and_exit_2(trained, tmp_path, capsys, values, said):
    lay_out(trained, tmp_path / "run", ["0", "1"], 1_000_000_000)
    assert predict_main([str(tmp_path / "run"), "--", *values]) == 2  # --: argparse reads -inf as an option
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"nnrun: error: cannot predict from {' '.join(values)!r}: {said} is not a finite number")


@pytest.mark.parametrize("cell", ["nan", "inf", "-1e400", "3.5e38"])
def test_a_non_finite_cell_in_a_points_csv_names_row_and_column(trained, tmp_path, capsys, cell):
    lay_out(trained, tmp_path / "run", ["0", "1"], 1_000_000_000)
    points = tmp_path / "points.csv"
    points.write_text(f"x1,x2\n1,0\n0,{cell}\n")
    assert predict_main([str(tmp_path / "run"), "--csv", str(points)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"nnrun: error: {points}: row 3, column 'x2': {cell} is not a finite number")


def test_a_point_and_a_csv_together_is_one_line_and_exit_2(trained, tmp_path, capsys):
    lay_out(trained, tmp_path / "run", ["0", "1"], 1_000_000_000)
    points = tmp_path / "points.csv"
    points.write_text("x1,x2\n1,0\n")
    for argv in (["--csv", str(points), "1", "2"], ["1", "--csv", str(points)]):
        assert predict_main([str(tmp_path / "run"), *argv]) == 2
        assert capsys.readouterr() == ("", "nnrun: error: give one point's values or --csv FILE, not both\n")


def test_a_diverged_run_says_so_before_its_probabilities(lr_sweep, capsys):
    wild = lr_sweep / "2_optimizer.lr=10"
    payload = checkpoint.load(wild)
    checkpoint.save(wild, {**payload, "status": "diverged"})
    assert predict_main([str(wild), "1", "0"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"nnrun: predict: warning: {wild} diverged (its loss became inf or NaN)")
    assert out.strip().endswith("-> wild1")


@pytest.mark.slow
def test_predict_into_a_closed_pipe_ends_quietly(trained, tmp_path):
    lay_out(trained, tmp_path / "run", ["0", "1"], 1_000_000_000)
    points = tmp_path / "points.csv"
    points.write_text("x1,x2\n" + "1,0\n" * 5000)
    done = into_closed_pipe(["predict", str(tmp_path / "run"), "--csv", str(points)], cwd=tmp_path)
    assert (done.returncode, done.stderr) == (141, "")
