"""What a run and a sweep print at the end: every path and command whole at any width, a diverged run
explained, one line per sweep job."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from nnrun import console
from nnrun.engine import RunResult

JOB_DIR = Path("experiments/default/multirun/2026-11-27_01-46-42/0_optimizer.lr=0.1,model.hidden=[32,32],seed=0")


def narrow(width: int = 40) -> Console:
    return Console(width=width, file=io.StringIO(), color_system=None)


def result(status: str = "completed", best: float | None = 0.0123, final_loss: float | None = 0.0125,
           final_accuracy: float | None = 0.975, epochs: int = 200) -> RunResult:
    final = {"loss/train": final_loss, "loss/val": final_loss, "accuracy/train": final_accuracy,
             "accuracy/val": final_accuracy, "accuracy/test": final_accuracy}
    metrics = {"status": status, "epochs_run": epochs, "wall_time_s": 1.5, "device": "cpu"}
    return RunResult(run_dir=JOB_DIR, status=status, epochs_run=epochs, best_epoch=150, monitor="loss/val",
                     best_value=best, final=final, metrics=metrics)


def cfg(lr: float = 0.5):
    return SimpleNamespace(exp_name="default", optimizer=SimpleNamespace(lr=lr))


def test_diverged_run_says_so_and_suggests_a_tenth_of_the_lr():
    out = narrow(200)
    diverged = result("diverged", best=299283936.0, final_loss=None, final_accuracy=None, epochs=11)
    console.print_run(diverged, cfg(lr=3.0), console=out)
    text = out.file.getvalue()
    assert "diverged: the loss became inf/NaN in epoch 11" in text
    assert "a smaller learning rate (optimizer.lr=0.3, a tenth of 3) is the usual cure" in text


def test_completed_run_has_no_divergence_hint():
    out = narrow(200)
    console.print_run(result(), cfg(), console=out)
    assert "inf/NaN" not in out.file.getvalue() and "learning rate" not in out.file.getvalue()


def test_run_dir_line_is_never_broken_inside_the_path():
    out = narrow(30)
    console.print_run(result("diverged", best=1e8, final_loss=None, final_accuracy=None), cfg(), console=out)
    lines = out.file.getvalue().splitlines()
    assert f"run dir: {JOB_DIR}" in lines
    assert any("(optimizer.lr=0.05, a tenth of 0.5)" in line for line in lines)


def test_sweep_footer_puts_each_command_whole_on_its_own_line():
    out = narrow(30)
    sweep = "experiments/default/multirun/2026-11-27_01-46-42"
    console.print_sweep_summary(sweep, ["completed", "diverged"], 2, console=out,
                                best_trial="best value 0.9700 with optimizer.lr=0.01")
    lines = [line.strip() for line in out.file.getvalue().splitlines()]
    assert f"sweep dir: {sweep}" in lines
    assert f"compare:   tensorboard --logdir {sweep}" in lines
    assert f"table:     nnrun report {sweep}" in lines
    assert "optuna: best value 0.9700 with optimizer.lr=0.01" in lines


def test_job_line_is_one_line_with_status_epochs_best_final_and_run_dir():
    out = narrow(40)
    console.print_job_line(result(), console=out)
    lines = out.file.getvalue().splitlines()
    assert len(lines) == 1
    (line,) = lines
    assert line.startswith("completed ")
    assert "epochs 200" in line and "best loss/val 0.0123" in line
    assert "final loss/val 0.0125 accuracy/val 0.9750" in line
    assert line.endswith(str(JOB_DIR))


def test_job_line_of_a_failed_job_shows_dashes_and_colours_its_status():
    out = Console(width=300, file=io.StringIO(), color_system="truecolor", force_terminal=True)
    console.print_job_line(result("failed", best=None, final_loss=None, final_accuracy=None, epochs=0),
                           console=out)
    text = out.file.getvalue()
    assert text.count("\n") == 1
    assert "\x1b[31mfailed" in text  # red
    assert "best loss/val —" in text and "final loss/val — accuracy/val —" in text


def test_run_table_shows_every_final_value_and_no_empty_cell():
    out = narrow(80)
    console.print_run(result(), cfg(), console=out)
    lines = out.file.getvalue().splitlines()
    (values,) = [line for line in lines if "0.0125" in line]
    assert [cell.strip() for cell in values.strip("│").split("│")] == ["0.0125", "0.0125", "0.9750", "0.9750",
                                                                       "0.9750"]
    assert all(len(line) <= 80 for line in lines if not line.startswith("run dir:"))
