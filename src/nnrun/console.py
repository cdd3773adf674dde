"""Terminal output with rich: the table at the end of a run, progress bars (a run's epochs, a sweep's phases), a
sweep job's line, the sweep's summary, and the one line of bad input.

Paths and commands are printed with `soft_wrap=True`: rich then never breaks them inside a word, so a path
copied from a narrow terminal, or read from a pipe, is whole (the terminal itself may still fold a long line).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from nnrun.metrics import FINAL_KEYS, STATUSES

STATUS_STYLE = {"completed": "green", "stopped_early": "cyan", "diverged": "yellow", "interrupted": "magenta",
                "failed": "red"}


class PipeConsole(Console):
    """rich's Console for output that may go into a pipe that closes (`nnrun report DIR | head -1`): there rich
    exits 1 (`on_broken_pipe`, made to be overridden); this raises BrokenPipeError, which `cli.run` ends as Unix
    tools end, quietly."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def print_run(result, cfg, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{cfg.exp_name}: {result.status}", title_style=STATUS_STYLE.get(result.status, ""))
    # One column per final value of metrics.json: the test split has an accuracy there, no loss, and a grid of
    # metric × split would leave that cell empty.
    for key in FINAL_KEYS:
        table.add_column(key.replace("/", "\n"), justify="right")
    table.add_row(*(_fmt(result.final.get(key)) for key in FINAL_KEYS))
    console.print(table)
    console.print(f"epochs run {result.epochs_run}, best {result.monitor} {_fmt(result.best_value)} at epoch "
                  f"{result.best_epoch}, {result.metrics['wall_time_s']:.2f} s on {result.metrics['device']}")
    if result.status == "diverged":  # found at the end of the epoch it happened in: the last epoch run
        lr = cfg.optimizer.lr
        hint = (f"diverged: the loss became inf/NaN in epoch {result.epochs_run}; a smaller learning rate "
                f"(optimizer.lr={lr / 10:g}, a tenth of {lr:g}) is the usual cure")
        console.print(Text(hint, style=STATUS_STYLE["diverged"]), soft_wrap=True)
    _print_line(console, "run dir:", str(result.run_dir))


def print_job_line(result, console: Console | None = None) -> None:
    """One line for a finished sweep job (an engine.RunResult): status, its numbers, its run dir (`shown_path`)."""
    numbers = (f"  epochs {result.epochs_run}  best {result.monitor} {_fmt(result.best_value)}  final loss/val "
               f"{_fmt(result.final.get('loss/val'))} accuracy/val {_fmt(result.final.get('accuracy/val'))}  ")
    line = Text.assemble((f"{result.status:<13}", STATUS_STYLE.get(result.status, "")), numbers,
                         str(shown_path(result.run_dir)))
    (console or Console()).print(line, soft_wrap=True)


def shown_path(path) -> Path:
    """`path` as a user in the working dir would type it: relative when below that dir, else absolute."""
    where, here = Path(path).absolute(), Path.cwd()
    return where.relative_to(here) if where != here and where.is_relative_to(here) else where


def _print_line(console: Console, label: str, text: str) -> None:
    """`label text` on a line of its own, never broken inside `text` (a path or a command to copy)."""
    console.print(Text.assemble(f"{label} ", text), soft_wrap=True)


def print_sweep_summary(sweep_dir: str, statuses: Iterable[str], n_jobs: int, console: Console | None = None,
                        best_trial: str | None = None) -> None:
    """Jobs by status (diverged is a result, failed a fault), then where to look next."""
    console = console or Console()
    counts = Counter(statuses)
    table = Table("status", Column("jobs", justify="right"), title=f"sweep: {n_jobs} jobs")
    for status in STATUSES:  # completed, diverged and failed always show (a 0 there is news too)
        if counts.get(status) or status in ("completed", "diverged", "failed"):
            table.add_row(f"[{STATUS_STYLE[status]}]{status}[/]", str(counts[status]))
    console.print(table)
    if best_trial:
        _print_line(console, "optuna:", best_trial)
    _print_line(console, "sweep dir:", sweep_dir)
    _print_line(console, "compare:  ", f"tensorboard --logdir {sweep_dir}")
    _print_line(console, "table:    ", f"nnrun report {sweep_dir}")


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, then exit (2 = bad input). HYDRA_FULL_ERROR=1 keeps the traceback."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1" and sys.exc_info()[0] is not None:
        raise
    print(f"nnrun: error: {message}", file=sys.stderr)
    sys.exit(code)


class ProgressBar:
    """A rich progress bar without rich's refresh thread (it would take the GIL from the work): `update` redraws,
    at most every `every` seconds and at the end. Not `enabled`: it shows nothing."""

    def __init__(self, description: str, total: int, console: Console | None = None, *, done: int = 0,
                 note: str = "", transient: bool = False, every: float = 0.25, enabled: bool = True):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console,
                            transient=transient, auto_refresh=False) if enabled else None
        self.description, self.total, self.done, self.note = description, total, done, note
        self.every, self.drawn_at = every, 0.0

    def __enter__(self) -> "ProgressBar":
        if self.bar is not None:
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=self.total, completed=self.done, note=self.note)
        return self

    def update(self, completed: int, note: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, note=self.note if note is None else note)
            now = time.monotonic()
            if now - self.drawn_at > self.every or completed == self.total:
                self.bar.refresh()
                self.drawn_at = now

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.refresh()
            self.bar.__exit__(*exc)


class Phase(ProgressBar):
    """A sweep's phase over its jobs (checking them, setting them up): a progress bar on a terminal; when the
    output is piped, a line as it starts, one every PLAIN_EVERY_S seconds, and one as it ends."""

    PLAIN_EVERY_S = 5.0

    def __init__(self, doing: str, done: str, total: int, console: Console | None = None):
        self.console = console or Console()
        super().__init__(f"nnrun: {doing}", total, self.console, note="jobs", transient=True, every=0.1,
                         enabled=self.console.is_terminal)
        self.doing, self.past, self.count = doing, done, 0

    def __enter__(self) -> "Phase":
        self.began = self.said = time.monotonic()
        if self.bar is None:
            self.console.print(f"nnrun: {self.doing} {plural(self.total, 'job')}")
        return super().__enter__()

    def advance(self) -> None:
        self.count += 1
        self.update(self.count)
        if self.bar is None and time.monotonic() - self.said > self.PLAIN_EVERY_S:
            self.console.print(f"nnrun: {self.doing}: {self.count}/{self.total} jobs")
            self.said = time.monotonic()

    def __exit__(self, kind, *rest) -> None:
        super().__exit__(kind, *rest)
        if kind is None:
            self.console.print(f"nnrun: {self.past} {plural(self.count, 'job')} in "
                               f"{time.monotonic() - self.began:.2f} s")


def plural(n: int, word: str) -> str:
    """'1 job', '3 jobs'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def counted(statuses: Iterable[str]) -> str:
    """'3 completed, 1 diverged': how many of each, in order of first appearance."""
    return ", ".join(f"{n} {status}" for status, n in Counter(statuses).items())
