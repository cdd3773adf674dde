"""`nnrun report DIR`: the comparison table, report.csv and report.png over a small sweep built in-process."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import into_closed_pipe, read_metrics
from nnrun import report

BASE = ["dataset=xor", "model.hidden=[4]", "train.epochs=20", "train.log_every=5"]

# The module's tests on one xdist worker (addopts: --dist loadgroup): the sweep they share is trained once, not
# once per worker, and one worker imports matplotlib (report.png), which no other test does in-process.
pytestmark = pytest.mark.xdist_group("report")


def lay_out_jobs(runs: list[tuple[list[str], Path]]) -> list:
    """(overrides, run dir) pairs as Hydra's multirun lays them out (.hydra/overrides.yaml, .hydra/config.yaml),
    trained in-process as `conftest.train_stacked` trains them, in as few stacks as they allow (each run's
    numbers its own, as tests/test_stacking.py checks), each config composed once; returns their configs."""
    from omegaconf import OmegaConf

    from conftest import compose
    from nnrun import engine
    from nnrun.config import parse

    jobs = []
    for overrides, run_dir in runs:
        composed = compose(overrides)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(composed))
        jobs.append(engine.Job(parse(composed), run_dir, overrides=list(overrides)))
    engine.train_jobs(jobs)
    return [job.cfg for job in jobs]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """lr ∈ {0.001, 0.1} × seed ∈ {0, 1}: four xor runs of 20 epochs, in job dirs named as Hydra's multirun
    names them."""
    root = tmp_path_factory.mktemp("sweep")
    grid = [[f"optimizer.lr={lr}", f"seed={seed}"] for lr in ("0.001", "0.1") for seed in ("0", "1")]
    lay_out_jobs([(BASE + overrides, root / f"{num}_{','.join(overrides)}") for num, overrides in enumerate(grid)])
    return root


def run_report(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "200")
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_groups_seeds_as_mean_and_std_sorted_by_monitor(sweep, capsys, monkeypatch):
    code, out, _ = run_report([sweep, "--no-plot"], capsys, monkeypatch)
    assert code == 0
    assert "4 runs in 2 groups of seeds (mean±std), sorted by best loss/val" in out
    assert "seeds" in out and "completed×2" in out
    # lr=0.1 learns xor in 20 epochs, lr=0.001 barely moves: the better group comes first.
    assert out.index("│ 0.1 ") < out.index("│ 0.001 ")
    fast = [read_metrics(d)["best"]["loss/val"] for d in sorted(sweep.glob("*optimizer.lr=0.1,*"))]
    expected = f"{statistics.fmean(fast):.4f}±{statistics.stdev(fast):.4f}"
    assert expected in out


def test_report_writes_one_csv_row_per_run_and_a_png(sweep, tmp_path, capsys, monkeypatch):
    code, out, _ = run_report([sweep, "--out", tmp_path], capsys, monkeypatch)
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(rows) == 4
    assert {"optimizer.lr", "seed", "status", "best_epoch", "best loss/val", "final accuracy/test"} <= set(rows[0])
    assert [r["optimizer.lr"] for r in rows] == ["0.1", "0.1", "0.001", "0.001"]  # best first
    png = tmp_path / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_varying_keys_leave_out_what_every_run_shares(sweep):
    runs = [report.read_run(d) for d in report.find_run_dirs(sweep)]
    assert report.varying_keys(runs) == ["optimizer.lr", "seed"]
    assert report.numeric_keys(runs, ["optimizer.lr", "seed"]) == ["optimizer.lr"]


def test_report_reads_curves_from_the_event_file(sweep):
    run = report.read_run(sorted(sweep.iterdir())[0])
    steps = [step for step, _ in run.scalars()["loss/val"]]
    assert steps == [1, 5, 10, 15, 20]
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= set(run.scalars())


def test_report_shows_failed_and_unfinished_runs(sweep, tmp_path, capsys, monkeypatch):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(sweep, mixed)
    runs = sorted(mixed.glob("[0-9]*"))
    # A job still going: .hydra/ and events, no metrics.json yet.
    (runs[0] / "metrics.json").unlink()
    # A job that failed mid-run: the engine wrote status failed with null metrics.
    failed = json.loads((runs[1] / "metrics.json").read_text())
    failed.update(status="failed", final={k: None for k in failed["final"]},
                  best={"epoch": 0, "loss/val": None})
    (runs[1] / "metrics.json").write_text(json.dumps(failed))
    # A job that died before its first epoch: only .hydra/.
    (mixed / "9_optimizer.lr=1.0,seed=0" / ".hydra").mkdir(parents=True)
    (mixed / "9_optimizer.lr=1.0,seed=0" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["optimizer.lr=1.0", "seed=0"]))

    code, out, _ = run_report([mixed], capsys, monkeypatch)
    assert code == 0
    assert "5 runs" in out
    assert "unfinished" in out and "failed" in out
    rows = {Path(r["run_dir"]).name: r for r in csv.DictReader((mixed / "report.csv").open())}
    assert rows[runs[0].name]["status"] == "unfinished"
    assert rows[runs[0].name]["best_epoch"] != ""  # taken from the event file
    assert rows[runs[1].name]["status"] == "failed" and rows[runs[1].name]["best loss/val"] == ""
    assert rows["9_optimizer.lr=1.0,seed=0"]["status"] == "unfinished"
    assert (mixed / "report.png").exists()


def test_report_on_a_dir_without_runs_says_so_and_exits_2(tmp_path, capsys, monkeypatch):
    code, out, err = run_report([tmp_path], capsys, monkeypatch)
    assert code == 2
    assert err.strip().count("\n") == 0 and "no runs under" in err
    assert not (tmp_path / "report.csv").exists()


def test_report_on_a_missing_dir_exits_2(tmp_path, capsys, monkeypatch):
    code, _, err = run_report([tmp_path / "nope"], capsys, monkeypatch)
    assert code == 2 and "is not a directory" in err

def hand_run(overrides: dict[str, str], status: str, best: float | None, final: float | None,
             curve: list[float] = ()) -> report.Run:
    """A Run as read_run would make it, without training."""
    finals = {"loss/train": final, "loss/val": final, "accuracy/train": None if final is None else 0.9876,
              "accuracy/val": None if final is None else 0.9512, "accuracy/test": None if final is None else 0.9433}
    return report.Run(Path("/runs") / ",".join(f"{k}={v}" for k, v in overrides.items()), overrides, status,
                      "loss/val", 100, 42, best, finals, {"loss/val": list(enumerate(curve, start=1))})


@pytest.fixture
def lr_sweep_groups():
    """Two optimizers × three lrs × three seeds: statuses mixed, lr = 100 diverged, an Optuna-long lr."""
    runs = []
    for lr in ("0.0013", "100", "0.044303752452182690"):
        for optimizer in ("momentum", "adam"):
            for seed in range(3):
                overrides = {"optimizer": optimizer, "optimizer.lr": lr, "seed": str(seed)}
                if lr == "100":
                    runs.append(hand_run(overrides, "diverged", 299283936.0 + seed, None))
                else:
                    runs.append(hand_run(overrides, "stopped_early" if seed else "completed",
                                         0.0013 + 0.0001 * seed, 0.0014 + 0.0002 * seed))
    keys = report.varying_keys(runs)
    return report.sort_groups(report.group_by_seed(runs, keys), "loss/val"), keys


def render(groups, keys, width: int, **kwargs) -> str:
    import io

    from rich.console import Console

    console = Console(width=width, file=io.StringIO(), color_system=None)
    report.print_table(groups, keys, "loss/val", "18 runs", console=console, **kwargs)
    return console.file.getvalue()


@pytest.mark.parametrize("width", [80, 100])
def test_report_at_80_columns_keeps_every_status_override_and_number_whole(lr_sweep_groups, width):
    out = render(*lr_sweep_groups, width=width)
    assert "…" not in out
    assert all(len(line) <= width for line in out.splitlines())
    for whole in ("stopped_early×2", "completed×1", "diverged×3", "momentum", "adam", "0.0013", "0.0443", "100",
                  "0.0014±0.0001", "2.993e+08±1.0000", "0.9512±0.0000"):
        assert whole in out, whole
    assert "left out to fit" in out and "--wide shows every column" in out


def test_report_wide_shows_every_column_whole(lr_sweep_groups):
    out = render(*lr_sweep_groups, width=80, wide=True)
    assert "…" not in out and "left out" not in out
    for whole in ("seeds", "epoch", "accuracy/test", "0.9433±0.0000", "0.0016±0.0002",
                  "stopped_early×2 completed×1"):
        assert whole in out, whole


def test_report_cli_at_80_columns_leaves_columns_out_and_wide_brings_them_back(sweep, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert report.main([str(sweep), "--no-plot"]) == 0
    narrow = capsys.readouterr().out
    assert "…" not in narrow and "left out to fit 80 columns" in narrow
    assert report.main([str(sweep), "--no-plot", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "…" not in wide and "accuracy/test" in wide and "left out" not in wide


def test_report_plot_log_scales_losses_that_span_decades():
    quiet = [hand_run({"optimizer.lr": lr}, "completed", 0.01, 0.01, curve=[0.5, 0.05, 0.01])
             for lr in ("0.01", "0.1")]
    loud = hand_run({"optimizer.lr": "100"}, "completed", 10.0, 10.0, curve=[30.0, 12.0, 10.0])
    spread = report.plot([*quiet, loud], ["optimizer.lr"], "loss/val")
    close = report.plot(quiet, ["optimizer.lr"], "loss/val")
    try:
        assert [ax.get_yscale() for ax in spread.axes] == ["log", "log"]  # curves, and best vs lr
        assert [ax.get_yscale() for ax in close.axes] == ["linear", "linear"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(spread)
        plt.close(close)


def test_report_reads_a_finished_run_from_its_metrics_json_alone(sweep, tmp_path):
    """The event file is read only when a curve is drawn; the overrides come from metrics.json too."""
    import shutil

    job = tmp_path / "job"
    shutil.copytree(sorted(sweep.iterdir())[0], job)
    (job / ".hydra" / "overrides.yaml").unlink()
    run = report.read_run(job)
    assert run.curves is None
    assert run.overrides == report.parse_overrides([*BASE, "optimizer.lr=0.001", "seed=0"])
    assert run.best == read_metrics(job)["best"]["loss/val"]
    assert [step for step, _ in run.scalars()["loss/val"]] == [1, 5, 10, 15, 20]  # on demand


def test_report_plot_reads_the_curves_of_the_best_runs_only(tmp_path):
    runs = [hand_run({"optimizer.lr": str(i)}, "completed", i, i) for i in range(1, 31)]
    for run in runs:
        run.curves = None  # unread: reading it would look for an event file under /runs
    drawn = runs[:report.MAX_CURVES]
    for run in drawn:
        run.curves = {"loss/val": [(1, 1.0), (2, 0.5)]}
    figure = report.plot(runs, ["optimizer.lr"], "loss/val")
    try:
        assert all(run.curves is None for run in runs[report.MAX_CURVES:])
        assert figure.axes[0].get_title() == f"loss/val (the best {report.MAX_CURVES} of 30 runs)"
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def experiments_groups():
    """Runs of every lecture experiment, as `nnrun report experiments/` sees them: each sets its own keys, so
    the overrides that vary are many."""
    runs = []
    for exp, overrides in [
            ("lr_sweep", {"optimizer.lr": "0.398107"}), ("lr_sweep", {"optimizer.lr": "0.00631"}),
            ("optimizers", {"optimizer": "rmsprop"}), ("capacity", {"model.hidden": "[128,128]"}),
            ("dropout_ablation", {"model.dropout": "0.5", "seed": "2"}),
            ("batch_size", {"train.batch_size": "null"}),
            ("linear_vs_nonlinear", {"activation": "leaky_relu"}),
            ("spirals", {"dataset.classes": "3", "loss": "cross_entropy", "train.early_stopping.patience": "100"}),
            ("spirals_optuna", {"optimizer.lr": "0.0044303752452182690", "model.dropout": "0.2",
                                "activation": "tanh"})]:
        runs.append(hand_run({"exp": exp, **overrides}, "stopped_early", 0.2345, 0.3456))
    keys = report.varying_keys(runs)
    return report.sort_groups(report.group_by_seed(runs, keys), "loss/val"), keys


@pytest.mark.parametrize("width", [80, 120])
def test_report_over_all_experiments_fits_the_terminal_with_every_override_whole(width):
    groups, keys = experiments_groups()
    assert len(keys) >= 10
    out = render(groups, keys, width=width)
    assert all(len(line) <= width for line in out.splitlines()), max(len(line) for line in out.splitlines())
    for whole in ("exp=lr_sweep", "optimizer.lr=0.398", "optimizer.lr=0.00631", "model.hidden=[128,128]",
                  "train.early_stopping.patience=100", "loss=cross_entropy", "0.2345", "stopped_early"):
        assert whole in out, whole
    assert "overrides stacked in one column to fit" in out


def test_report_narrower_than_any_table_prints_a_block_per_row():
    groups, keys = experiments_groups()
    out = render(groups, keys, width=40)
    lines = out.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert "1. exp=lr_sweep" in lines[1]
    assert "   train.early_stopping.patience=100" in lines
    assert "   status stopped_early" in out and "best loss/val 0.2345" in out


def test_report_override_values_share_one_format_with_significant_digits():
    assert report.override_texts(["0.00631", "0.003162", "0.398107"]) == ["0.00631", "0.00316", "0.398"]
    # As typed where nothing needs rounding; whole numbers stay whole; values that differ stay different.
    assert report.override_texts(["1e-4", "0.001", "0.1", "10"]) == ["1e-4", "0.001", "0.1", "10"]
    assert report.override_texts(["100", "0.044303752452182690", "relu"]) == ["100", "0.0443", "relu"]
    assert report.override_texts(["0.123456", "0.123457"]) == ["0.123456", "0.123457"]
    assert report.override_texts(["12345", "7"]) == ["12345", "7"]


def test_report_labels_group_means_and_counts_in_words(lr_sweep_groups):
    groups, keys = lr_sweep_groups
    runs = [run for group in groups for run in group.runs]
    assert report.title(runs, groups, "loss/val") == "18 runs in 6 groups of seeds (mean±std), sorted by best loss/val"
    assert report.title(runs[:1], groups[:1], "loss/val") == "1 run, sorted by best loss/val"
    out = render(groups, keys, width=200, wide=True)
    assert "42±0" in out  # the best epoch of a group: a mean, shown as one


def test_report_plot_log_axis_stops_where_the_losses_stop_mattering():
    solved = [hand_run({"optimizer.lr": lr}, "completed", 1e-47, 1e-47, curve=[0.69, 1e-3, 1e-20, 1e-47])
              for lr in ("0.1", "1")]
    stuck = hand_run({"optimizer.lr": "1e-4"}, "completed", 0.68, 0.68, curve=[0.69, 0.685, 0.68, 0.68])
    figure = report.plot([*solved, stuck], ["optimizer.lr"], "loss/val")
    try:
        curves = figure.axes[0]
        assert curves.get_yscale() == "log"
        assert curves.get_ylim()[0] == pytest.approx(0.69e-6)  # six decades below where training starts
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)


def test_report_metric_picks_the_columns_shown(sweep, capsys, monkeypatch):
    code, out, _ = run_report([sweep, "--no-plot", "--metric", "loss/train", "--metric", "accuracy/train"],
                              capsys, monkeypatch)
    assert code == 0
    assert "loss/train" in out and "accuracy/train" in out and "accuracy/test" not in out
    fast = [read_metrics(d)["final"]["loss/train"] for d in sorted(sweep.glob("*optimizer.lr=0.1,*"))]
    assert f"{statistics.fmean(fast):.4f}±{statistics.stdev(fast):.4f}" in out
    code, _, err = run_report([sweep, "--metric", "loss/tset"], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("nnrun: error: report: --metric='loss/tset' is not allowed") and "accuracy/test" in err


def test_report_shows_the_untrained_test_accuracy_next_to_the_trained_one(tmp_path, capsys, monkeypatch):
    """The pass_fail claim: an untrained net predicts badly, the trained one well. Both numbers in one table."""
    overrides = ["+exp=pass_fail", "train.epochs=60"]
    run_dir = tmp_path / "run"
    (cfg,) = lay_out_jobs([(overrides, run_dir)])
    code, out, _ = run_report([run_dir, "--metric", "untrained/accuracy/test", "--metric", "accuracy/test"],
                              capsys, monkeypatch)
    assert code == 0
    before = report.untrained(cfg)["accuracy/test"]
    after = read_metrics(run_dir)["final"]["accuracy/test"]
    assert before < 0.8 <= after
    assert "1 run, sorted by best loss/val" in out
    (row,) = [line for line in out.splitlines() if "completed" in line]
    assert f"{before:.4f}" in row and f"{after:.4f}" in row
    assert "untrained" in out and "accuracy/test" in out
    with (run_dir / "report.csv").open() as handle:
        (line,) = csv.DictReader(handle)
    assert float(line["untrained accuracy/test"]) == pytest.approx(before)


def write_run(run_dir: Path, overrides: list[str], status: str, best: float, mtime: float) -> Path:
    """A run dir as the engine leaves it, metrics.json alone, written at `mtime`."""
    import os

    from nnrun.metrics import build_metrics, write_metrics

    run_dir.mkdir(parents=True)
    path = write_metrics(run_dir, build_metrics(
        status=status, epochs_run=20, best_epoch=20, best_value=best, monitor="loss/val", final={"loss/val": best},
        wall_time_s=1.0, device="cpu", seed=0, overrides=overrides))
    os.utime(path, (mtime, mtime))
    return run_dir


def test_report_counts_a_resumed_sweep_job_and_its_interrupted_original_as_one_run(tmp_path, capsys, monkeypatch):
    """Seeds 0 and 1, interrupted while seed 1 trained, then resumed into a second sweep dir (train.resume is no
    setting): seed 0 carried over as it was, seed 1 trained to the end. Two seeds, not four."""
    multirun = tmp_path / "multirun"
    first, second = multirun / "2026-01-01_00-00-00", multirun / "2026-01-02_00-00-00"
    write_run(first / "0_seed=0", ["optimizer.lr=0.1", "seed=0"], "completed", 0.10, 1_000)
    write_run(first / "1_seed=1", ["optimizer.lr=0.1", "seed=1"], "interrupted", 0.90, 2_000)
    resume = f"train.resume={first}"
    write_run(second / "0_seed=0", ["optimizer.lr=0.1", "seed=0", resume], "completed", 0.10, 1_000)  # carried over
    write_run(second / "1_seed=1", ["optimizer.lr=0.1", "seed=1", resume], "completed", 0.30, 3_000)
    code, out, _ = run_report([multirun, "--no-plot"], capsys, monkeypatch)
    assert code == 0
    assert "2 runs in 1 group of seeds (mean±std), sorted by best loss/val" in out
    (row,) = [line for line in out.splitlines() if "completed" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:2] == ["2", "completed×2"] and "interrupted" not in out
    assert f"{statistics.fmean([0.1, 0.3]):.4f}±{statistics.stdev([0.1, 0.3]):.4f}" in row
    assert "(2 older runs of the same settings left out; report.csv lists every run)" in out
    rows = list(csv.DictReader((multirun / "report.csv").open()))
    assert sorted(Path(r["run_dir"]).relative_to(multirun).as_posix() for r in rows) == [
        "2026-01-01_00-00-00/0_seed=0", "2026-01-01_00-00-00/1_seed=1",
        "2026-01-02_00-00-00/0_seed=0", "2026-01-02_00-00-00/1_seed=1"]


def test_report_shows_the_newest_of_five_reruns_of_one_command_as_one_run(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    for n, best in enumerate([0.5, 0.4, 0.3, 0.2, 0.25]):  # the last written, not the best, is the newest
        write_run(runs / f"2026-01-0{n + 1}_00-00-00", ["optimizer.lr=0.1", "seed=0"], "completed", best,
                  1_000 * (n + 1))
    code, out, _ = run_report([runs, "--no-plot"], capsys, monkeypatch)
    assert code == 0
    assert "1 run, sorted by best loss/val" in out and "seeds" not in out and "±" not in out
    (row,) = [line for line in out.splitlines() if "completed" in line]
    assert "0.2500" in row and "completed×" not in row
    assert "(4 older runs of the same settings left out; report.csv lists every run)" in out
    assert len(list(csv.DictReader((runs / "report.csv").open()))) == 5


def test_report_keeps_runs_on_two_data_files_apart(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    write_run(runs / "0_good", ["dataset=csv", "dataset.path=/data/good.csv"], "completed", 0.1, 1_000)
    write_run(runs / "1_other", ["dataset=csv", "dataset.path=/data/other.csv"], "completed", 0.3, 2_000)
    code, out, _ = run_report([runs, "--no-plot", "--wide"], capsys, monkeypatch)
    assert code == 0 and "2 runs, sorted by best loss/val" in out and "older run" not in out
    assert "/data/good.csv" in out and "/data/other.csv" in out
    assert [row["dataset.path"] for row in csv.DictReader((runs / "report.csv").open())] == [
        "/data/good.csv", "/data/other.csv"]


def test_report_without_repeats_says_nothing_of_them(sweep, capsys, monkeypatch):
    code, out, _ = run_report([sweep, "--no-plot"], capsys, monkeypatch)
    assert code == 0 and "older run" not in out


@pytest.mark.slow
def test_report_into_a_closed_pipe_ends_quietly(sweep, tmp_path):
    done = into_closed_pipe(["report", str(sweep), "--no-plot", "--out", str(tmp_path)], cwd=tmp_path)
    assert (done.returncode, done.stderr) == (141, "")
    assert len(list(csv.DictReader((tmp_path / "report.csv").open()))) == 4  # written before the table


# The CLI path after a real `nnrun train -m` is checked in test_sweeps.py (one sweep serves both).
