"""The `nnrun` command: dispatches to `train` (Hydra), `predict` and `report`; help without importing torch."""

from __future__ import annotations

import gc
import importlib
import os
import shlex
import signal
import sys

from nnrun import __version__

USAGE = """\
usage: nnrun <command> [args...]

Train small neural networks the way an introductory deep-learning lecture teaches them.

commands:
  train [overrides...]        train one network; Hydra overrides pick dataset, model, activation, loss, optimizer
  train -m [overrides...]     a sweep: one run per combination (e.g. optimizer.lr=0.001,0.01,0.1 seed=0,1,2)
  report DIR                  a table (and plot) of every run under DIR, seeds grouped as mean ± std
  predict RUN_DIR x1 x2 ...   predictions of a trained run for one point (or --csv FILE for many)

examples:
  nnrun train +exp=xor_relu
  nnrun train dataset=spirals model.hidden=[32,32] optimizer=sgd optimizer.lr=0.1
  nnrun train -m optimizer.lr=0.001,0.01,0.1 seed=0,1,2
  nnrun train --help          config groups and the composed config
  nnrun train --cfg job       print the composed config without training
  eval "$(nnrun -sc install=bash)"   tab completion for bash

Runs land in experiments/<exp_name>/; see them with: tensorboard --logdir experiments
"""

COMMANDS = ("train", "report", "predict")
# Hydra's flags of `nnrun train` that run no job: no pre-flight check of the overrides, and no torch.
INFO_FLAGS = {"--shell-completion", "--hydra-help", "--info", "--version"}


def _run_train(args: list[str]) -> int:
    # Here, not at the top: the schema's dataclasses cost `nnrun --help` more than the rest of it together.
    from nnrun.app import TrainTask, register_resolvers, train_help, train_task
    from nnrun.config import ConfigError
    from nnrun.preflight import check, read_overrides, split_args

    try:
        flags, overrides = split_args(args)
        runs_a_job = not (INFO_FLAGS | {"--cfg"}) & flags.keys()  # --cfg is checked (what it prints must be valid)
        # --cfg, a completion of hydra.run.dir= and the like name a run dir as they print it: nothing is made.
        register_resolvers(make_run_dir=runs_a_job)
        if INFO_FLAGS & flags.keys():
            read_overrides(None, overrides)  # nothing runs, but Hydra would still trip over an unreadable line
        else:
            check(args, TrainTask().check)  # a job's config read as the task reads it (a CSV file's classes too)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"nnrun: error: {exc}", file=sys.stderr)
        return 2
    if "--help" in flags:  # the config a sweep's values are set on
        print(train_help([o.input_line for o in read_overrides(None, overrides) if not o.is_sweep_override()]), end="")
        return 0
    if runs_a_job:
        import_torch()
    # Hydra reads sys.argv; keep argv[0] (the program name, used by its completion script).
    sys.argv = [sys.argv[0], *args]
    # A sweep's callback ends the process with 1 when a job failed, after the summary (sys.exit); nnrun's sweeper
    # ignores Ctrl-C once every job has ended, so that the summary is whole: the handler is put back here.
    handler = signal.getsignal(signal.SIGINT)
    try:
        train_task()
    except SystemExit as exc:  # bad input found inside Hydra (2), a sweep with a failed job (1)
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KeyboardInterrupt as exc:  # engine.RunInterrupted, or Ctrl-C before training (see interrupted)
        print(interrupted(exc, args), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, handler)
    return 0


def interrupted(exc: KeyboardInterrupt, args: list[str]) -> str:
    """What Ctrl-C (or SIGTERM) leaves: what was saved where, and this command line with
    train.resume=<the run or sweep dir> to go on; with nothing saved yet, the command that starts it again."""
    from nnrun.console import shown_path  # rich; and nnrun.sweep, Hydra: neither is for `nnrun --help`
    from nnrun.sweep import without_resume

    resume_dir = getattr(exc, "resume_dir", None)
    if resume_dir is None:
        return ("nnrun: interrupted before any training; nothing was saved\n"
                f"to start again: {shlex.join(['nnrun', 'train', *args])}")
    shown = shown_path(resume_dir)
    return (f"nnrun: interrupted by {signal.Signals(getattr(exc, 'signum', signal.SIGINT)).name}; results saved in "
            f"{shown}\nto go on: {shlex.join(['nnrun', 'train', *without_resume(args), 'train.resume=' + str(shown)])}")


def import_torch() -> None:
    """Import torch with the garbage collector paused, then freeze its million objects (`gc.freeze`): each full
    collection a sweep's configs set off would walk them (a tenth of a 64-job sweep of tiny networks' time)."""
    if "torch" in sys.modules:
        return
    gc.collect()  # what came before (the checks' configs) is freed, not frozen
    gc.disable()
    try:
        import torch  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def _completion(args: list[str]) -> int:
    """`nnrun -sc install=bash` and the queries its script sends: completion is for `nnrun train`'s keys."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if any(a.startswith("query=") for a in args) and words:
        rest = words[1:]
        if not rest or (len(rest) == 1 and not line.endswith(" ")):  # still typing the command itself
            print(" ".join(c for c in COMMANDS if c.startswith(rest[0] if rest else "")))
            return 0
        if rest[0] != "train":
            return 0
        os.environ["COMP_LINE"] = line.replace(" train", "", 1)
    return _run_train(args)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print(f"nnrun {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion"):
        return _completion(args)
    command, rest = args[0], args[1:]
    if command == "train":
        return _run_train(rest)
    if command in COMMANDS:  # predict, report: nnrun.<command>.main
        return importlib.import_module(f"nnrun.{command}").main(rest)
    from nnrun.config import closest

    print(f"nnrun: error: unknown command {command!r}: choose one of {', '.join(COMMANDS)}"
          f"{closest(command, COMMANDS)}\nrun 'nnrun --help' for usage", file=sys.stderr)
    return 2


def run() -> None:
    """The `nnrun` program. Output into a pipe that closed (`nnrun report DIR | head -1`) ends it quietly, as
    Unix tools end: no traceback, exit 141 (128 + SIGPIPE), what a shell reports for them. So does Ctrl-C where
    no run handles it (while nnrun starts, checks a command line, reports or predicts): exit 130."""
    try:
        code = main()
        sys.stdout.flush()  # here, not at exit: a closed pipe found there would print a traceback after all
    except KeyboardInterrupt:
        print("nnrun: interrupted", file=sys.stderr)
        code = 130  # 128 + SIGINT
    except BrokenPipeError:
        # Python flushes stdout once more when it exits; what is left in its buffer has nowhere to go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE
    sys.exit(code)
