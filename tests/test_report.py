"""`nnrun report DIR`: the comparison table, report.csv and report.png over a small sweep built in-process."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import read_metrics, train
from nnrun import report

BASE = ["dataset=xor", "model.hidden=[4]", "train.epochs=20", "train.log_every=5"]


def fake_sweep_job(sweep: Path, num: int, overrides: list[str]) -> Path:
    """A job dir laid out as Hydra's multirun makes it (.hydra/overrides.yaml, config.yaml), trained in-process."""
    from conftest import compose
    from omegaconf import OmegaConf

    run_dir = sweep / f"{num}_{','.join(overrides)}"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = compose(BASE + overrides)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    train(BASE + overrides, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """lr ∈ {0.001, 0.1} × seed ∈ {0, 1}: four xor runs of 20 epochs (about a second in all)."""
    root = tmp_path_factory.mktemp("sweep")
    num = 0
    for lr in ("0.001", "0.1"):
        for seed in ("0", "1"):
            fake_sweep_job(root, num, [f"optimizer.lr={lr}", f"seed={seed}"])
            num += 1
    return root


def run_report(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", "200")
    code = report.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_groups_seeds_as_mean_and_std_sorted_by_monitor(sweep, capsys, monkeypatch):
    code, out, _ = run_report([sweep, "--no-plot"], capsys, monkeypatch)
    assert code == 0
    assert "4 runs, sorted by best loss/val" in out
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
    steps = [step for step, _ in run.curves["loss/val"]]
    assert steps == [1, 5, 10, 15, 20]
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= set(run.curves)


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
    finals = {"loss/train": final, "loss/val": final, "accuracy/val": None if final is None else 0.9512,
              "accuracy/test": None if final is None else 0.9433}
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


# The CLI path after a real `nnrun train -m` is checked in test_sweeps.py (one sweep serves both).
