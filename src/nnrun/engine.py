"""The training loop: setup, loop over epochs and batches, evaluate, log, early-stop, checkpoint, finish.

One loop for every run. It trains a stack of K >= 1 networks of one shape (`models.StackedMLP`), each with its
own seed, optimizer numbers, early stopping, TensorBoard events, checkpoint.pt and metrics.json: `nnrun train`
is a stack of one, and the vectorized launcher hands `train_jobs` a whole sweep, which it trains in as few
stacks as the jobs allow. Every rule (when to evaluate and log, early stopping and restore_best, divergence,
Ctrl-C, checkpoints, resume) is written once, here, and applies to each model on its own.

Data stays as tensors on the device (no DataLoader: the lecture's data fits in memory many times over). A step
is the stack's forward pass, `backward()` of the sum of the models' losses (the models share no weights, so
each one's gradient is its own) and one optimizer step for all of them.
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from nnrun import checkpoint, losses, metrics, models, optim, stacking
from nnrun.config import ConfigError, EarlyStoppingConfig, TrainConfig, check_loss_fits
from nnrun.data import Dataset, load
from nnrun.pictures import Pictures

# Statuses of a run that is over: a sweep resumed with train.resume carries such a job over, untrained.
FINISHED = ("completed", "stopped_early", "diverged")


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped training; metrics.json and checkpoint.pt of every unfinished run are written.

    The message ends with the command that goes on from there: the `nnrun train` command line typed, with
    train.resume set to `resume_dir`: the run dir, or for a sweep (its dir, or a job's in it) the sweep dir, since
    a sweep resumes as a whole (each job from the job with the same overrides; finished ones are carried over).
    """

    def __init__(self, run_dir: Path, signum: int):
        self.run_dir, self.signum = run_dir, signum
        run_dir = Path(run_dir)
        # A sweep dir holds Hydra's multirun.yaml (what train.resume takes for a sweep, see nnrun.sweep).
        self.resume_dir = run_dir.parent if (run_dir.parent / "multirun.yaml").is_file() else run_dir
        super().__init__(f"interrupted by {signal.Signals(signum).name}; results saved in {run_dir}\n"
                         f"to go on: {self.resume_command()}")

    def resume_command(self) -> str:
        """`nnrun train` with the arguments it was started with (cli.train_args; any train.resume replaced),
        quoted for the shell, then train.resume=<resume_dir>: relative when below the working dir."""
        import shlex

        from nnrun import cli
        from nnrun.console import shown_path

        resume = f"train.resume={shown_path(self.resume_dir)}"
        if cli.train_args is None:  # not started by `nnrun train` in this process (a launcher's worker, a test)
            return f"nnrun train <the same arguments> {shlex.quote(resume)}"
        kept = [arg for arg in cli.train_args if arg.split("=", 1)[0].lstrip("+~") != "train.resume"]
        return shlex.join(["nnrun", "train", *kept, resume])


@dataclass
class RunResult:
    run_dir: Path
    status: str
    epochs_run: int
    best_epoch: int
    monitor: str
    best_value: float | None
    final: dict[str, float | None]
    metrics: dict[str, Any] = field(repr=False)

    @property
    def objective(self) -> float:
        """What a sweeper optimises: the best monitored value (NaN when there is none)."""
        return float("nan") if self.best_value is None else self.best_value

    @classmethod
    def read(cls, run_dir: Path, monitor: str) -> "RunResult":
        """The result a finished run dir holds (its metrics.json)."""
        saved = metrics.read_metrics(run_dir)
        if saved is None:
            raise ConfigError("train.resume", str(run_dir), "a run dir with a readable metrics.json")
        best = saved.get("best", {})
        return cls(Path(run_dir), saved["status"], saved["epochs_run"], best.get("epoch", 0), monitor,
                   best.get(monitor), saved["final"], saved)


@dataclass
class Job:
    """One run to train: its validated config, its run dir, and where it stands."""

    cfg: TrainConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    config_yaml: str = ""
    # The run dir that train.resume names for this job (see `find_resume_dir`); None: train from the start.
    resume_from: Path | None = None
    in_sweep: bool = False  # a sweep's job: resuming it from a finished one carries that one's results over


def resolve_device(name: str) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ConfigError("device", "cuda", "CUDA is not available on this machine; use device=auto or device=cpu")
    return torch.device("cuda:0" if available else "cpu")


class EarlyStopping:
    """Tracks the best value of `monitor`; says stop after `patience` evaluations without improvement."""

    def __init__(self, cfg: EarlyStoppingConfig):
        self.cfg = cfg
        self.sign = -1.0 if cfg.maximize else 1.0  # compare as "smaller is better"
        self.best_value: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record one evaluation; True when it is a new best (by more than min_delta)."""
        if not math.isfinite(value):
            self.bad_epochs += 1
            return False
        if self.best_value is None or self.sign * value < self.sign * self.best_value - self.cfg.min_delta:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.cfg.patience is not None and self.bad_epochs >= self.cfg.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch, self.bad_epochs = (state["best_value"], state["best_epoch"],
                                                             state["bad_epochs"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss: losses.Loss, *splits) -> list[tuple[Any, Any]]:
    """(mean loss, accuracy) on each whole split, dropout off: floats for an MLP, lists of K for a stack."""
    was_training = model.training
    model.eval()
    done: dict[int, tuple[Any, Any]] = {}
    for split in splits:
        if id(split) not in done:  # a split of fraction 0 *is* the training split: evaluate it once
            logits = model(split.x)
            pair = torch.stack([loss.fn(logits, split.y), (loss.predict(logits) == split.y).float().mean(-1)])
            done[id(split)] = tuple(pair.tolist())  # one device sync for all the numbers
    model.train(was_training)
    return [done[id(split)] for split in splits]


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While training, Ctrl-C and SIGTERM only raise a flag: the loop finishes its step and saves. So does
    SIGUSR2, which SLURM sends a job ahead of its time limit (submitit asks for it, `--signal=USR2@...`)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, _frame):
        received.append(signum)

    stops = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])
    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def log_due(cfg: TrainConfig, epoch: int) -> bool:
    """Every train.log_every epochs, the first and the last; a run also logs the epoch it ends at and, with early
    stopping on, every new best of the monitored metric (see the loop)."""
    return epoch % cfg.train.log_every == 0 or epoch == cfg.train.epochs or epoch == 1


def images_due(cfg: TrainConfig, data: Dataset, epoch: int) -> bool:
    every = cfg.train.image_every
    if every == 0 or data.n_features != 2:
        return False
    if every is None:
        return epoch in (1, cfg.train.epochs)
    return epoch == 1 or epoch % every == 0 or epoch == cfg.train.epochs


@dataclass
class Progress:
    """Where a run stands: all that a checkpoint must hold for a resumed run to match an uninterrupted one."""

    epochs_done: int = 0  # last epoch whose steps and evaluation are complete
    step: int = 0
    # Set when training stopped inside an epoch: that epoch, the next batch's start, the epoch's batch order.
    partial: dict[str, Any] | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    last_good: dict[str, torch.Tensor] | None = None  # newest finite weights: a diverged run never saves NaNs

    @property
    def position(self) -> tuple:
        """Runs at one position can share a stack: they take every step from here on together."""
        inside = None if self.partial is None else (self.partial["epoch"], self.partial["next_start"])
        return self.epochs_done, self.step, inside


@dataclass
class Member:
    """One model of a stack: its job, its plain MLP (the weights it is finished and saved with), its generator
    (batch order and dropout masks), optimizer numbers, early stopping, logger and where it stands."""

    job: Job
    module: models.MLP
    rng: torch.Generator
    group: dict
    stopper: EarlyStopping
    progress: Progress
    started: float
    optimizer_state: dict | None = None  # a resumed run's, until its stack takes it
    logger: Any = None
    result: RunResult | None = None


def train(cfg: TrainConfig, run_dir: Path, *, overrides: Sequence[str] = (), config_yaml: str = "",
          show_progress: bool = True, console=None) -> RunResult:
    """Train one network as `cfg` says (a stack of one); write TensorBoard events, checkpoint.pt and
    metrics.json to run_dir."""
    job = Job(cfg, Path(run_dir), list(overrides), config_yaml)
    if cfg.train.resume is not None:
        job.resume_from = find_resume_dir(cfg, job.run_dir)
    (result,) = train_jobs([job], show_progress=show_progress, console=console)
    return result


def train_jobs(jobs: Sequence[Job], *, max_models: int = 256, memory_budget_mb: int = 1024,
               show_progress: bool = False, console=None, raise_faults: bool = True,
               raise_interrupt: bool = True, announce: bool = False) -> list[RunResult]:
    """Train `jobs` in as few stacks as they allow (`stacking`): jobs whose configs differ only in per-model
    values and that stand at the same point (a resumed job goes on from its own) share a stack, of at most
    `max_models` models and what `memory_budget_mb` holds. Results in the jobs' order.

    Bad input (a data file that cannot be read, a run that cannot be resumed, ...) raises ConfigError before any
    model trains. A fault in a stack ends its models `failed`; with `raise_faults` it is raised once every
    stack has run, else the other stacks' results stand. Ctrl-C or SIGTERM: the stack training finishes its
    step, every run not finished is saved `interrupted`, then RunInterrupted (with `raise_interrupt`; else the
    results, `interrupted` among them). `announce`: a line per finished job and per stack.
    """
    members, stacks = plan(jobs, max_models=max_models, memory_budget_mb=memory_budget_mb)

    # --- train them, one after another --------------------------------------------------------------------
    faults: list[Exception] = []
    with stop_signals() as received:
        for number, (cfg, data, loss, chunk) in enumerate(stacks, start=1):
            began = time.perf_counter()
            torch.set_num_threads(cfg.threads)
            try:
                train_stack(chunk, data, loss, received, show_progress=show_progress, console=console)
            except Exception as exc:  # each of its models is `failed` in its metrics.json already
                faults.append(exc)
                if not raise_faults:
                    print(f"nnrun: a stack of {len(chunk)} runs failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr)
            if announce:
                from nnrun.console import print_job_line

                for m in chunk:
                    print_job_line(m.result)
                print(f"nnrun: stack {number}/{len(stacks)}: {len(chunk)} runs in "
                      f"{time.perf_counter() - began:.2f} s ({_count(m.result.status for m in chunk)})")
    if faults and raise_faults:
        raise faults[0]
    if received and raise_interrupt:
        raise RunInterrupted(jobs[0].run_dir if len(jobs) == 1 else jobs[0].run_dir.parent, received[0])
    results = {id(m.job): m.result for m in members}
    if announce:
        print(f"nnrun: trained {len(jobs)} jobs in {len(stacks)} stack{'' if len(stacks) == 1 else 's'} "
              f"({_count(r.status for r in results.values())})")
    return [results[id(job)] for job in jobs]


def plan(jobs: Sequence[Job], *, max_models: int = 256, memory_budget_mb: int = 1024,
         device: torch.device | None = None) -> tuple[list[Member], list[tuple]]:
    """How `train_jobs` trains `jobs`: every job's Member (`start`; a finished job of a sweep being resumed is
    carried over there, its result set), and the stacks, each (config, data, loss, members): jobs of one kind
    (`stacking.batch_key`) that start at one point, in chunks of what a stack may hold. Bad input raises
    ConfigError here, before anything trains. `device`: where the data and models go (default: the config's)."""
    members, stacks = [], []
    for kind in stacking.group(jobs, lambda job: stacking.batch_key(job.cfg)):
        cfg = kind[0].cfg
        where = resolve_device(cfg.device) if device is None else device
        data = load(cfg.dataset)
        check_loss_fits(cfg.loss, data.n_classes)
        data = data.to(where)
        loss = losses.LOSSES[cfg.loss]
        started = [start(job, data, loss, where) for job in kind]
        members += started
        size = stacking.models_per_stack(stacking.bytes_per_model(cfg, data), memory_budget_mb << 20, max_models)
        for same_start in stacking.group([m for m in started if m.result is None], lambda m: m.progress.position):
            stacks += [(cfg, data, loss, chunk) for chunk in stacking.chunks(same_start, size)]
    return members, stacks


def _count(statuses) -> str:
    """'3 completed, 1 diverged'."""
    listed = list(statuses)
    return ", ".join(f"{listed.count(s)} {s}" for s in dict.fromkeys(listed))


def start(job: Job, data: Dataset, loss: losses.Loss, device: torch.device) -> Member:
    """A job's model, generator and optimizer numbers as its seed makes them, or as its checkpoint left them
    when it resumes. A finished job of a sweep being resumed is carried over: its files are copied into the
    new run dir and its result set, and it trains no more."""
    cfg, started = job.cfg, time.perf_counter()
    check_writable(job.run_dir)
    module = models.build(data.n_features, cfg.model.hidden, loss.n_outputs(data.n_classes), cfg.activation,
                          cfg.model.dropout, cfg.model.init_std, cfg.seed).to(device)
    # One generator drives batch order and dropout masks: the run depends on its seed alone.
    member = Member(job, module, torch.Generator(device=device).manual_seed(cfg.seed),
                    optim.param_group(cfg.optimizer), EarlyStopping(cfg.train.early_stopping), Progress(), started)
    if job.resume_from is None:
        return member
    try:
        payload = checkpoint.load(job.resume_from)
    except checkpoint.CheckpointError as exc:
        raise ConfigError("train.resume", cfg.train.resume, str(exc)) from None
    if payload["spec"] != module.spec or payload["config"]["optimizer"]["name"] != cfg.optimizer.name:
        raise ConfigError("train.resume", str(job.resume_from), "a run of the same model and optimizer "
                          f"(it has {payload['spec']} with {payload['config']['optimizer']['name']})")
    saved = payload["resume"]
    if payload["status"] in FINISHED and job.in_sweep:
        member.result = carry_over(job, payload["status"])
        return member
    if saved is None:
        raise ConfigError("train.resume", str(job.resume_from), f"a run that can go on; this one {payload['status']}")
    module.load_state_dict(saved["model"])
    member.rng.set_state(saved["rng"]["train"])
    member.stopper.load_state_dict(saved["early_stopping"])
    member.optimizer_state = saved["optimizer"]
    on = lambda w: None if w is None else {k: v.to(device) for k, v in w.items()}  # noqa: E731
    partial = saved["partial"]
    if partial is not None and partial["order"] is not None:
        partial = {**partial, "order": partial["order"].to(device)}
    member.progress = Progress(epochs_done=saved["epochs_done"], step=saved["step"], partial=partial,
                               best_weights=on(saved["best_weights"]), last_good=on(saved["last_good"]))
    print(f"nnrun: resuming {job.resume_from} after epoch {saved['epochs_done']}"
          + (f" (inside epoch {partial['epoch']})" if partial else ""))
    return member


def train_stack(members: list[Member], data: Dataset, loss: losses.Loss, received: list[int], *,
                show_progress: bool = False, console=None) -> None:
    """Train `members` (one kind, one starting point) as one stack until each run ends; each gets its result."""
    cfg = members[0].job.cfg  # what the stack shares: data, architecture, loss, optimizer rule, loop settings
    device = data.train.x.device
    stack = models.StackedMLP([m.module for m in members])
    stack.generators = [m.rng for m in members]
    optimizer = optim.build(cfg.optimizer.name, [stack.flat], [m.group for m in members])
    position = members[0].progress  # shared by the stack's runs (train_jobs groups them so)
    epochs_done, step, partial = position.epochs_done, position.step, position.partial
    optimizer.steps = step
    for row, m in enumerate(members):
        if m.optimizer_state is not None:
            optimizer.load_row(row, m.optimizer_state, stack.split_row)
    if partial is not None and partial["order"] is not None:
        partial = {**partial, "order": torch.stack([m.progress.partial["order"] for m in members])}
    # Per row: the newest weights seen finite, and (with restore_best) the best epoch's.
    last_good = torch.stack([stack.row_of(m.progress.last_good) if m.progress.last_good is not None
                             else stack.flat.detach()[r] for r, m in enumerate(members)])
    best = torch.stack([stack.row_of(m.progress.best_weights) if m.progress.best_weights is not None
                        else stack.flat.detach()[r] for r, m in enumerate(members)])
    has_best = [m.progress.best_weights is not None for m in members]

    from nnrun.tensorboard_events import RunLogger  # tensorboard is imported only when a run starts

    for m in members:
        m.logger = RunLogger(m.job.run_dir, m.job.config_yaml)
    drawing = Pictures(data.train)  # what the runs' pictures share is made once, when they first draw
    alive = list(range(len(members)))  # row r of the stack is members[alive[r]]
    monitor = cfg.train.early_stopping.monitor
    evaluate_every_epoch = cfg.train.early_stopping.patience is not None
    # Restoring the best weights is part of early stopping: without it, a run ends with its last weights.
    restore_best = evaluate_every_epoch and cfg.train.early_stopping.restore_best
    x, n = data.train.x, len(data.train)
    y = loss.targets(data.train.y, x.dtype)
    batch_size = min(cfg.train.batch_size or n, n)
    epochs, checkpoint_every = cfg.train.epochs, cfg.train.checkpoint_every
    progress = _Progress(show_progress and len(members) == 1, epochs, cfg.exp_name, console, done=epochs_done)

    def sync(r: int, inside: dict | None = None) -> Member:
        """Row r's state into its member: weights into its MLP, and its Progress (what its checkpoint holds)."""
        m = members[alive[r]]
        names = list(m.module.state_dict())
        m.module.load_state_dict(stack.state_dict_of(stack.flat[r], names))
        row_partial = None if inside is None else {
            **inside, "order": None if inside["order"] is None else inside["order"][r]}
        m.progress = Progress(epochs_done, step, row_partial,
                              stack.state_dict_of(best[r], names) if has_best[alive[r]] else None,
                              stack.state_dict_of(last_good[r], names))
        return m

    def finish(statuses: dict[int, str], inside: dict | None = None) -> None:
        """The runs at these rows end, each with its status (see `_finish`), and leave the stack."""
        nonlocal alive, last_good, best
        for r, status in statuses.items():
            m = sync(r, inside)
            m.result = _finish(m, status, optimizer.state_dict_of(r, m.group, stack.split_row), data, loss,
                               drawing)
        rows = list(statuses)
        kept = [r for r in range(len(alive)) if r not in statuses]
        if rows and kept:
            index = torch.tensor(kept, device=device)
            stack.keep(index)
            optimizer.keep(index, [stack.flat])
            last_good, best = last_good[index], best[index]
        alive = [alive[r] for r in kept]

    status, inside = "completed", None
    try:
        with progress:
            stack.train()
            # --- the loop -----------------------------------------------------------------------------------
            for epoch in range(epochs_done + 1, epochs + 1):
                if received:
                    status = "interrupted"
                    break
                if partial is not None:  # resuming inside an epoch: its batch orders and position
                    order, first, partial = partial["order"], partial["next_start"], None
                else:  # each model's own batch order
                    order = None if batch_size == n else torch.stack(
                        [torch.randperm(n, generator=members[j].rng, device=device) for j in alive])
                    first = 0
                for begin in range(first, n, batch_size):
                    idx = None if order is None else order[:, begin:begin + batch_size]
                    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                    stack.flat.grad = None
                    per_model = loss.fn(stack(xb), yb)
                    per_model.sum().backward()
                    optimizer.step()
                    step += 1
                    if cfg.train.log_steps:
                        for j, value in zip(alive, per_model.tolist()):
                            members[j].logger.scalars(step, {"loss/step": value})
                    if received:  # finish this step, then stop where a resume can pick up exactly
                        inside = {"epoch": epoch, "next_start": begin + batch_size, "order": order}
                        break
                if inside is not None:
                    status = "interrupted"
                    break
                epochs_done = epoch

                # --- evaluate, log, stop: each run on its own -------------------------------------------
                due, images = log_due(cfg, epoch), images_due(cfg, data, epoch)
                save_now = checkpoint_every is not None and epoch % checkpoint_every == 0
                if not (due or evaluate_every_epoch or images or save_now):
                    continue
                ended: dict[int, str] = {}
                if due or evaluate_every_epoch:
                    (train_loss, train_acc), (val_loss, val_acc) = evaluate(stack, loss, data.train, data.val)
                    finite, improved = [], []
                    for r, j in enumerate(alive):
                        m = members[j]
                        values = {"loss/train": train_loss[r], "loss/val": val_loss[r],
                                  "accuracy/train": train_acc[r], "accuracy/val": val_acc[r]}
                        if not (math.isfinite(values["loss/train"]) and math.isfinite(values["loss/val"])):
                            ended[r] = "diverged"
                        else:
                            finite.append(r)
                            if m.stopper.update(epoch, values[monitor]) and evaluate_every_epoch:
                                improved.append(r)
                            if m.stopper.should_stop:
                                ended[r] = "stopped_early"
                        # Logged: the regular epochs, the epoch a run ends at, and each new best (so the best
                        # value, where early stopping goes back to, is on the curve).
                        if due or r in ended or r in improved:
                            m.logger.scalars(epoch, {**values, "lr": m.job.cfg.optimizer.lr})
                            progress.update(epoch, values["loss/train"], values["loss/val"])
                    # A diverged run keeps the weights it had before: its snapshots do not move.
                    last_good[finite] = stack.flat.detach()[finite]
                    if restore_best and improved:
                        best[improved] = stack.flat.detach()[improved]
                        for r in improved:
                            has_best[alive[r]] = True
                if images or save_now:
                    for r, j in enumerate(alive):
                        if ended.get(r) == "diverged":
                            continue
                        m = sync(r)
                        if images:
                            drawing.log_epoch(m.logger, m.module, loss, epoch)
                        if save_now and r not in ended:
                            checkpoint.save(m.job.run_dir, checkpoint_payload(
                                m, "running", optimizer.state_dict_of(r, m.group, stack.split_row), data, loss))
                finish(ended)
                if not alive:
                    break
    except Exception:
        # A fault: keep what is known of every run still training (status failed), then let the caller report it.
        finish({r: "failed" for r in range(len(alive))})
        raise

    # --- finish: the runs still in the stack ------------------------------------------------------------
    finish({r: status for r in range(len(alive))}, inside)


def _finish(m: Member, status: str, optimizer_state: dict, data: Dataset, loss: losses.Loss,
            drawing: Pictures) -> RunResult:
    """Pick the weights to keep, evaluate them, write checkpoint.pt and metrics.json (atomic), then the last
    pictures, HParams, and close the run's event file. `m.module` holds the last step's weights."""
    cfg, progress, stopper = m.job.cfg, m.progress, m.stopper
    weights, weights_epoch = None, None
    if status == "diverged":
        weights, weights_epoch = progress.last_good, progress.epochs_done
    elif progress.best_weights is not None and status in ("completed", "stopped_early"):
        weights, weights_epoch = progress.best_weights, stopper.best_epoch
    # Saved before the kept weights are loaded: the resume state holds the last step's weights.
    checkpoint.save(m.job.run_dir, checkpoint_payload(m, status, optimizer_state, data, loss, weights, weights_epoch))
    if weights is not None:
        m.module.load_state_dict(weights)
    final: dict[str, float | None] = {key: None for key in metrics.FINAL_KEYS}
    if status not in ("diverged", "failed"):
        (final["loss/train"], final["accuracy/train"]), (final["loss/val"], final["accuracy/val"]), \
            (_, final["accuracy/test"]) = evaluate(m.module, loss, data.train, data.val, data.test)
    device = data.train.x.device
    monitor = cfg.train.early_stopping.monitor
    result_metrics = metrics.build_metrics(
        status=status, epochs_run=progress.epochs_done, best_epoch=stopper.best_epoch,
        best_value=stopper.best_value, monitor=monitor, final=final,
        wall_time_s=time.perf_counter() - m.started, device=str(device) if device.type == "cuda" else "cpu",
        seed=cfg.seed, overrides=list(m.job.overrides))
    metrics.write_metrics(m.job.run_dir, result_metrics)
    logger = m.logger
    if status == "stopped_early" and images_due(cfg, data, cfg.train.epochs):
        # The slider's last picture: where training ended (with the restored weights), not epoch `epochs`.
        drawing.log_epoch(logger, m.module, loss, progress.epochs_done)
    if cfg.train.landscape and status not in ("diverged", "failed"):
        from nnrun import landscape

        landscape.log(logger, m.module, loss, data.train, progress.epochs_done)
    from nnrun.config import flatten

    # The final values, accuracy/test among them, go with the HParams (as `result/...`): one point each, not curves.
    logger.hparams(flatten(cfg.to_dict()), final)
    logger.close()
    return RunResult(m.job.run_dir, status, progress.epochs_done, stopper.best_epoch, monitor,
                     metrics.finite_or_none(stopper.best_value), result_metrics["final"], result_metrics)


def checkpoint_payload(m: Member, status: str, optimizer_state: dict, data: Dataset, loss: losses.Loss,
                       weights: dict[str, torch.Tensor] | None = None,
                       weights_epoch: int | None = None) -> dict[str, Any]:
    """What checkpoint.pt holds: the weights to use (`model`), what predict needs, and what resume needs."""
    current = m.module.state_dict()
    progress = m.progress
    # A diverged run's last state holds NaNs: it is not saved, and such a run cannot be resumed.
    resume_state = None if status == "diverged" else {
        "epochs_done": progress.epochs_done, "step": progress.step, "partial": progress.partial,
        "model": current, "optimizer": optimizer_state,
        "rng": {"train": m.rng.get_state()}, "early_stopping": m.stopper.state_dict(),
        "best_weights": progress.best_weights, "last_good": progress.last_good}
    return {
        "model": current if weights is None else weights,
        "epoch": progress.epochs_done if weights_epoch is None else weights_epoch,
        "spec": m.module.spec,
        "loss": loss.name,
        "mean": data.mean, "std": data.std,
        "feature_names": list(data.feature_names), "class_names": list(data.class_names),
        "config": m.job.cfg.to_dict(),
        "status": status,
        # The state at the last step (not restored best weights), so a resumed run continues exactly.
        "resume": resume_state,
    }


def carry_over(job: Job, status: str) -> RunResult:
    """A finished run of the sweep being resumed, carried into this job's run dir as it is: its metrics.json,
    checkpoint.pt and TensorBoard events (not its .hydra/ and log: this job has its own)."""
    source = Path(job.resume_from)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".log":
            shutil.copy2(path, job.run_dir / path.name)
    print(f"nnrun: {job.run_dir.name}: {status} in {source}, carried over")
    return RunResult.read(job.run_dir, job.cfg.train.early_stopping.monitor)


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after, when results could not be saved: unwritable dir or a full disk."""
    import tempfile

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as exc:
        raise ConfigError("hydra.run.dir", str(run_dir), f"a writable directory ({exc.strerror})") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise ConfigError("hydra.run.dir", str(run_dir),
                          f"a disk with at least {MIN_FREE_BYTES >> 20} MiB free ({free >> 20} MiB left)")


MIN_FREE_BYTES = 16 << 20  # a run writes a few MiB at most; less than this free and it would fail midway


def find_resume_dir(cfg: TrainConfig, run_dir: Path, *, root: Path = Path("."), sweep_dir: Path | None = None,
                    overrides: Sequence[str] = ()) -> Path | None:
    """Where `train.resume` points. A single run: a run dir (or its checkpoint.pt), or `latest` = the newest
    earlier run of this exp_name under `root`/experiments. A sweep's job (`sweep_dir` set): the job with the same
    overrides in the sweep that train.resume names (a sweep dir, or `latest`: the newest other sweep of this
    exp_name), None when that sweep never started it."""
    from nnrun import sweep

    if sweep_dir is not None:
        source = sweep.resume_sweep_dir(cfg.exp_name, cfg.train.resume, sweep_dir, root)
        return sweep.same_job(source, overrides)
    if cfg.train.resume != "latest":
        path = Path(cfg.train.resume).expanduser()
        return path.parent if path.name == checkpoint.CHECKPOINT_FILE else path
    runs = root / "experiments" / cfg.exp_name / "runs"
    candidates = sorted((p for p in runs.glob("*/" + checkpoint.CHECKPOINT_FILE)
                         if p.parent.resolve() != run_dir.resolve()), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError("train.resume", "latest", f"a run to resume; no checkpoint under {runs}")
    return candidates[-1].parent


class _Progress:
    """A rich progress bar, updated at log epochs only (a redraw per epoch would cost more than the step)."""

    def __init__(self, enabled: bool, epochs: int, name: str, console=None, done: int = 0):
        self.enabled, self.epochs, self.name, self.console, self.done = enabled, epochs, name, console, done
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # No refresh thread: it would take the GIL from the training loop; update() redraws, throttled.
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[losses]}"), TimeElapsedColumn(),
                                      console=self.console, auto_refresh=False)
            self._drawn_at = 0.0
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=self.epochs, completed=self.done, losses="")
        return self

    def update(self, epoch: int, train_loss: float, val_loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=epoch,
                                  losses=f"loss/train {train_loss:.4f}  loss/val {val_loss:.4f}")
            now = time.monotonic()
            if now - self._drawn_at > 0.25 or epoch == self.epochs:
                self._progress.refresh()
                self._drawn_at = now

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.refresh()
            self._progress.__exit__(*exc)
        return False
