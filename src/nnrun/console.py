"""Terminal output with rich: the table at the end of a run and the summary at the end of a sweep."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"completed": "green", "stopped_early": "cyan", "diverged": "yellow", "interrupted": "magenta",
                "failed": "red"}


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def print_run(result, cfg, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{cfg.exp_name}: {result.status}", title_style=STATUS_STYLE.get(result.status, ""))
    table.add_column("metric")
    for split in ("train", "val", "test"):
        table.add_column(split, justify="right")
    final = result.final
    table.add_row("loss", _fmt(final.get("loss/train")), _fmt(final.get("loss/val")), "")
    table.add_row("accuracy", _fmt(final.get("accuracy/train")), _fmt(final.get("accuracy/val")),
                  _fmt(final.get("accuracy/test")))
    console.print(table)
    console.print(f"epochs run {result.epochs_run}, best {result.monitor} {_fmt(result.best_value)} at epoch "
                  f"{result.best_epoch}, {result.metrics['wall_time_s']:.2f} s on {result.metrics['device']}")
    console.print(f"run dir: {result.run_dir}")


def print_sweep_summary(sweep_dir: str, statuses: Iterable[str], n_jobs: int, console: Console | None = None,
                        best_trial: str | None = None) -> None:
    """Jobs by status (diverged is a result, failed a fault), then where to look next."""
    console = console or Console()
    counts = Counter(statuses)
    table = Table(title=f"sweep: {n_jobs} jobs")
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for status in ("completed", "stopped_early", "diverged", "interrupted", "failed"):
        # completed, diverged and failed always show (a 0 there is news too); the rest when they happen.
        if counts.get(status) or status in ("completed", "diverged", "failed"):
            table.add_row(f"[{STATUS_STYLE[status]}]{status}[/]", str(counts[status]))
    console.print(table)
    if best_trial:
        console.print(f"optuna: {best_trial}")
    console.print(f"sweep dir: {sweep_dir}   compare: tensorboard --logdir {sweep_dir}   "
                  f"table: nnrun report {sweep_dir}")
