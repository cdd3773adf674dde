"""`nnrun predict`: every class's probability by name (text labels too), from a run dir or an experiment dir."""

from __future__ import annotations

import os
import re

import pytest

from conftest import run_dirs, run_nnrun, train
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
