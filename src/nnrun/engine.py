"""The training loop: set up, train epochs of batches, evaluate, log, stop early, save checkpoints, finish.

One loop trains a stack of K >= 1 networks of one shape (`models.StackedMLP`), each with its own seed, optimizer
numbers, early stopping, TensorBoard events, checkpoint.pt and metrics.json: `nnrun train` is a stack of one, a
vectorized launcher's sweep many. Data stay as tensors on the device. A step is one forward pass, `backward()` of the
sum of the models' losses (they share no weights: each gradient is its own) and one optimizer step for them all."""

from __future__ import annotations

import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from nnrun import checkpoint, landscape, losses, metrics, models, optim, stacking
from nnrun.config import ConfigError, EarlyStoppingConfig, TrainConfig, UsageError, check_loss_fits
from nnrun.console import ProgressBar, counted, plural, print_job_line, shown_path
from nnrun.data import Dataset, load
from nnrun.pictures import Pictures
from nnrun.tensorboard_events import RunLogger


class RunInterrupted(KeyboardInterrupt):
    """A signal cut runs short, each saved `interrupted`. A KeyboardInterrupt, so that it passes Hydra's handling on
    to the command line (cli.interrupted). `resume_dir`: the run dir, or a sweep job's sweep dir (multirun.yaml)."""

    def __init__(self, run_dir: Path, signum: int):
        self.run_dir, self.signum = Path(run_dir), signum
        self.resume_dir = self.run_dir.parent if (self.run_dir.parent / "multirun.yaml").is_file() else self.run_dir
        super().__init__(f"interrupted by {signal.Signals(signum).name}; results saved in {self.resume_dir}")


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
            raise UsageError(f"train.resume: the run {run_dir} has no readable metrics.json; "
                             "give a run dir nnrun wrote")
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
    resume_from: Path | None = None  # the run dir train.resume names (`find_resume_dir`); None: from the start
    in_sweep: bool = False  # a sweep's job: the sweep, not the job, says where its jobs resume


def resolve_device(name: str) -> torch.device:
    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise ConfigError("device", "cuda", "CUDA is not available on this machine; use device=auto or device=cpu")
    return torch.device("cuda:0" if available and name != "cpu" else "cpu")


@dataclass
class EarlyStopping:
    """Tracks the best value of `monitor`; says stop after `patience` evaluations without improvement."""

    cfg: EarlyStoppingConfig
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record one evaluation; True when it is a new best (by more than min_delta)."""
        sign = -1.0 if self.cfg.maximize else 1.0  # compare as "smaller is better"
        if math.isfinite(value) and (self.best_value is None
                                     or sign * value < sign * self.best_value - self.cfg.min_delta):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.cfg.patience is not None and self.bad_epochs >= self.cfg.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss: losses.Loss, *splits) -> list[tuple[Any, Any]]:
    """(mean loss, accuracy) on each whole split, dropout off: floats for an MLP, lists of K for a stack."""
    done: dict[int, tuple[Any, Any]] = {}
    with models.evaluating(model):
        for split in splits:
            if id(split) not in done:  # a split of fraction 0 *is* the training split: evaluate it once
                logits = model(split.x)
                pair = torch.stack([loss.fn(logits, split.y), (loss.predict(logits) == split.y).float().mean(-1)])
                done[id(split)] = tuple(pair.tolist())  # one device sync for all the numbers
    return [done[id(split)] for split in splits]


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While training, Ctrl-C, SIGTERM and SIGUSR2 (SLURM's time-limit warning) only raise a flag: the loop saves."""
    received: list[int] = []
    stops = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signum)) for s in stops if main}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def images_due(cfg: TrainConfig, data: Dataset, epoch: int) -> bool:
    every = cfg.train.image_every
    if every == 0 or data.n_features != 2:
        return False
    return epoch in (1, cfg.train.epochs) or (every is not None and epoch % every == 0)


# Where a new run starts, as a checkpoint's resume state says where a run stands (see `Stack.state`).
START = {"epochs_done": 0, "step": 0, "partial": None, "optimizer": None, "best_weights": None, "last_good": None}


def position(state: dict[str, Any]) -> tuple:
    """Epochs done, steps, a stop inside an epoch: runs at one position can share a stack (they step together)."""
    partial = state["partial"]
    return state["epochs_done"], state["step"], partial and (partial["epoch"], partial["next_start"])


@dataclass
class Member:
    """One job as it trains: its plain MLP (the weights it is saved with), generator, optimizer numbers, stopper."""

    job: Job
    module: models.MLP
    rng: torch.Generator
    group: dict
    stopper: EarlyStopping
    saved: dict[str, Any]  # START, or a resumed run's state as its checkpoint holds it
    started: float = 0.0  # when its stack began to train: its wall time is its own, not that of stacks before it
    logger: Any = None
    result: RunResult | None = None


def train(cfg: TrainConfig, run_dir: Path, *, overrides: Sequence[str] = (), config_yaml: str = "",
          show_progress: bool = True, console=None) -> RunResult:
    """Train one network as `cfg` says (a stack of one), its results in run_dir."""
    job = Job(cfg, Path(run_dir), list(overrides), config_yaml)
    if cfg.train.resume is not None:
        job.resume_from = find_resume_dir(cfg, job.run_dir)
    (result,) = train_jobs([job], show_progress=show_progress, console=console)
    return result


def train_jobs(jobs: Sequence[Job], *, max_models: int = 256, memory_budget_mb: int = 1024,
               show_progress: bool = False, console=None, raise_faults: bool = True,
               raise_interrupt: bool = True, announce: bool = False) -> list[RunResult]:
    """Train `jobs` in as few stacks as they allow (`plan`); results in the jobs' order. A fault in a stack ends its
    runs `failed`, raised (`raise_faults`) once every stack has run; else (a sweep) a job whose data or checkpoint
    cannot be read fails alone, its result None. A stop signal: every run not finished is saved `interrupted`, then
    RunInterrupted (`raise_interrupt`). `announce`: a line per finished job and per stack."""
    members, stacks = plan(jobs, max_models=max_models, memory_budget_mb=memory_budget_mb,
                           refused=None if raise_faults else fail_alone)
    if announce:
        print(f"nnrun: training {len(jobs)} jobs in {plural(len(stacks), 'stack')}", flush=True)
    faults: list[Exception] = []
    with stop_signals() as received:
        for number, (cfg, data, loss, chunk) in enumerate(stacks, start=1):
            began = time.perf_counter()
            torch.set_num_threads(cfg.threads)
            try:
                train_stack(chunk, data, loss, received, show_progress=show_progress, console=console)
            except Exception as exc:  # each of its models is `failed` in its metrics.json already
                faults.append(exc)
                for m in chunk:  # and in its log, with why
                    metrics.log_line(m.job.run_dir, f"failed: {type(exc).__name__}: {exc}")
                if not raise_faults:
                    print(f"nnrun: a stack of {len(chunk)} runs failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if announce:
                for m in chunk:
                    print_job_line(m.result)
                print(f"nnrun: stack {number}/{len(stacks)}: {len(chunk)} runs in "
                      f"{time.perf_counter() - began:.2f} s ({counted(m.result.status for m in chunk)})")
    if faults and raise_faults:
        raise faults[0]
    results = {id(m.job): m.result for m in members}
    if raise_interrupt and any(r is not None and r.status == "interrupted" for r in results.values()):
        raise RunInterrupted(jobs[0].run_dir if len(jobs) == 1 else jobs[0].run_dir.parent, received[0])
    if announce:
        print(f"nnrun: trained {len(jobs)} jobs in {plural(len(stacks), 'stack')} "
              f"({counted('failed' if r is None else r.status for r in map(results.get, map(id, jobs)))})")
    return [results.get(id(job)) for job in jobs]


def fail_alone(job: Job, exc: ConfigError) -> None:
    """A sweep's job that cannot start (its data or its checkpoint unreadable where it runs): failed, and why, in
    its run dir and on stderr; the other jobs go on."""
    metrics.write_failed(job.run_dir, str(exc), monitor=job.cfg.train.early_stopping.monitor, seed=job.cfg.seed,
                         overrides=job.overrides)
    print(f"nnrun: {job.run_dir.name} failed: {exc}", file=sys.stderr, flush=True)


def plan(jobs: Sequence[Job], *, max_models: int = 256, memory_budget_mb: int = 1024,
         device: torch.device | None = None,
         refused: Callable[[Job, ConfigError], None] | None = None) -> tuple[list[Member], list[tuple]]:
    """Every job's Member (`start`) and the stacks, each (config, data, loss, members): jobs of one kind that start at
    one point, in chunks of what a stack may hold. Bad input raises ConfigError here, before anything trains; with
    `refused`, a job's is its own: `refused(job, error)`, and the others are planned."""
    members, stacks = [], []

    def refuse(these: Sequence[Job], exc: ConfigError) -> None:
        if refused is None:
            raise exc
        for job in these:
            refused(job, exc)

    for kind in stacking.group(jobs, lambda job: stacking.batch_key(job.cfg)):
        cfg = kind[0].cfg
        where = resolve_device(cfg.device) if device is None else device
        try:
            data = load(cfg.dataset)
            check_loss_fits(cfg.loss, data.n_classes)
        except ConfigError as exc:  # the kind's data: each of its jobs fails with it
            refuse(kind, exc)
            continue
        data, loss, started = data.to(where), losses.LOSSES[cfg.loss], []
        for job in kind:
            try:
                started.append(start(job, data, loss, where))
            except ConfigError as exc:  # its checkpoint to resume from, its run dir
                refuse([job], exc)
        members += started
        size = stacking.models_per_stack(stacking.bytes_per_model(cfg, data), memory_budget_mb << 20, max_models)
        for same_start in stacking.group(started, lambda m: position(m.saved)):
            stacks += [(cfg, data, loss, chunk) for chunk in stacking.chunks(same_start, size)]
    return members, stacks


def network(cfg: TrainConfig, data: Dataset, loss: losses.Loss) -> models.MLP:
    """`cfg`'s network for `data`, with its seed's initial weights."""
    return models.build(data.n_features, cfg.model.hidden, loss.n_outputs(data.n_classes), cfg.activation,
                        cfg.model.dropout, cfg.model.init_std, cfg.seed)


def start(job: Job, data: Dataset, loss: losses.Loss, device: torch.device) -> Member:
    """A job's model, generator and optimizer numbers as its seed makes them, or as its checkpoint left them. A
    single run says where it resumes; a sweep says it once for all its jobs (nnrun.sweep.resume_line)."""
    cfg, source = job.cfg, job.resume_from
    check_writable(job.run_dir)
    module = network(cfg, data, loss).to(device)
    # One generator drives batch order and dropout masks: the run depends on its seed alone.
    m = Member(job, module, torch.Generator(device=device).manual_seed(cfg.seed), optim.param_group(cfg.optimizer),
               EarlyStopping(cfg.train.early_stopping), START)
    if source is None:
        return m
    try:
        payload = checkpoint.load(source)
    except checkpoint.CheckpointError as exc:
        raise ConfigError("train.resume", cfg.train.resume, str(exc)) from None
    if payload["spec"] != module.spec or payload["config"]["optimizer"]["name"] != cfg.optimizer.name:
        raise UsageError(f"train.resume={source} is a run of another model or optimizer ({payload['spec']} with "
                         f"{payload['config']['optimizer']['name']}); resume it with the config it was trained with")
    there, here = payload["config"]["dataset"], cfg.to_dict()["dataset"]
    if there != here:
        changed = ", ".join(f"{'dataset' if k == 'name' else 'dataset.' + k}={_yaml(v)} (here {_yaml(here.get(k))})"
                            for k, v in there.items() if v != here.get(k))
        raise UsageError(f"train.resume={source} was trained on other data: {changed}; resume it with its data")
    saved = payload["resume"]
    if saved is not None and saved["epochs_done"] > cfg.train.epochs:
        raise UsageError(f"train.epochs={cfg.train.epochs} is below the {saved['epochs_done']} epochs that "
                         f"train.resume={source} has trained; give more to go on")
    if saved is None:
        raise UsageError(f"train.resume={source} cannot go on: that run is {payload['status'].replace('_', ' ')}, "
                         "with nothing left to train; leave out train.resume to train a new run")
    module.load_state_dict(saved["model"])
    m.rng.set_state(saved["rng"]["train"])
    m.stopper, m.saved = EarlyStopping(cfg.train.early_stopping, **saved["early_stopping"]), saved
    if not job.in_sweep:
        print(f"nnrun: resuming {shown_path(source)} after epoch {saved['epochs_done']}"
              + (f" (inside epoch {saved['partial']['epoch']})" if saved["partial"] else ""))
    return m


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value)


class Stack:
    """The runs that train together, a row each: `model` (a StackedMLP) holds their weights, row r being run r's,
    and `optimizer` their optimizer states; per row, `members[r]`, its weights after its last finite epoch
    `last_good[r]` and, where `has_best[r]`, its best epoch's `best[r]`. All rows stand at one position; ended rows
    leave (`end`)."""

    def __init__(self, members: Sequence[Member]):
        self.members = list(members)
        self.model = models.StackedMLP([m.module for m in members])
        self.model.generators = [m.rng for m in members]
        self.optimizer = optim.build(members[0].job.cfg.optimizer.name, [self.model.flat], [m.group for m in members])
        weights, saved = self.model.flat.detach(), [m.saved for m in members]
        self.epochs_done, self.step, self.partial = saved[0]["epochs_done"], saved[0]["step"], saved[0]["partial"]
        if self.partial is not None and self.partial["order"] is not None:  # each run's own batch order
            orders = torch.stack([s["partial"]["order"] for s in saved])
            self.partial = {**self.partial, "order": orders.to(weights.device)}
        self.optimizer.steps = self.step
        began = time.perf_counter()
        for row, m in enumerate(members):
            if m.saved["optimizer"] is not None:
                self.optimizer.load_row(row, m.saved["optimizer"], self.model.split_row)
            m.logger, m.started = RunLogger(m.job.run_dir, m.job.config_yaml), began

        def rows(key: str) -> torch.Tensor:  # a resumed run's snapshots as it saved them; else its weights now
            return torch.stack([w if s[key] is None else self.model.row_of(s[key]).to(w.device)
                                for w, s in zip(weights, saved)])

        self.last_good, self.best = rows("last_good"), rows("best_weights")
        self.has_best = torch.tensor([s["best_weights"] is not None for s in saved])

    def batch_order(self, n: int, batch_size: int) -> tuple[torch.Tensor | None, int]:
        """This epoch's batch orders (K, n; None: one batch) and first batch: the rest of an epoch stopped inside."""
        if self.partial is not None:
            partial, self.partial = self.partial, None
            return partial["order"], partial["next_start"]
        if batch_size == n:
            return None, 0
        return torch.stack([torch.randperm(n, generator=m.rng, device=self.model.flat.device)
                            for m in self.members]), 0

    def load_module(self, r: int) -> Member:
        """Row r's member, its MLP holding the row's weights now (what its pictures and results are made from)."""
        m = self.members[r]
        m.module.load_state_dict(self.model.state_dict_of(self.model.flat[r], list(m.module.state_dict())))
        return m

    def state(self, r: int) -> dict[str, Any]:
        """Row r as its checkpoint holds it to resume from."""
        m = self.members[r]
        names = list(m.module.state_dict())
        partial = self.partial and {**self.partial, "order": None if self.partial["order"] is None
                                    else self.partial["order"][r]}
        return {"epochs_done": self.epochs_done, "step": self.step, "partial": partial,
                "model": self.model.state_dict_of(self.model.flat[r], names),
                "optimizer": self.optimizer.state_dict_of(r, m.group, self.model.split_row),
                "rng": {"train": m.rng.get_state()}, "early_stopping": m.stopper.state_dict(),
                "best_weights": self.model.state_dict_of(self.best[r], names) if self.has_best[r] else None,
                "last_good": self.model.state_dict_of(self.last_good[r], names)}

    def end(self, statuses: dict[int, str], data: Dataset, loss: losses.Loss, drawing: Pictures) -> None:
        """The runs at these rows end, each with its status (see `finish`), and leave the stack."""
        for r, status in statuses.items():
            self.members[r].result = finish(self.load_module(r), self.state(r), status, data, loss, drawing)
        kept = [r for r in range(len(self.members)) if r not in statuses]
        if statuses and kept:  # rebuilt only when some leave and some stay
            index = torch.tensor(kept, device=self.model.flat.device)
            self.model.keep(index)
            self.optimizer.keep(index, [self.model.flat])
            self.last_good, self.best = self.last_good[index], self.best[index]
        self.members, self.has_best = [self.members[r] for r in kept], self.has_best[kept]


def train_stack(members: list[Member], data: Dataset, loss: losses.Loss, received: list[int], *,
                show_progress: bool = False, console=None) -> None:
    """Train `members` (one kind, one starting point) as one stack until each run ends; each gets its result."""
    cfg = members[0].job.cfg  # what the stack shares: data, architecture, loss, optimizer rule, loop settings
    rules, stopping = cfg.train, cfg.train.early_stopping
    every_epoch = stopping.patience is not None  # early stopping evaluates every epoch
    # Restoring the best weights is part of early stopping: without it, a run ends with its last weights.
    restore_best = every_epoch and stopping.restore_best
    x, n = data.train.x, len(data.train)
    y, batch_size = loss.targets(data.train.y, x.dtype), min(rules.batch_size or n, n)
    stack, drawing = Stack(members), Pictures(data.train)  # the runs' pictures share what is the data's
    model = stack.model
    bar = ProgressBar(f"[bold]{cfg.exp_name}", rules.epochs, console, done=stack.epochs_done,
                      enabled=show_progress and len(members) == 1)
    first_epoch = stack.epochs_done + 1  # logged, as the last is: a resumed run's curve starts where it goes on
    try:
        with bar:
            model.train()
            # A resumed run that had stopped early, and still would by its patience, ends where it stopped.
            stack.end({r: "stopped_early" for r, m in enumerate(stack.members) if m.stopper.should_stop},
                      data, loss, drawing)
            for epoch in range(first_epoch, rules.epochs + 1):
                # --- train an epoch (or the rest of the one a run stopped inside) ---------------------------
                if received or not stack.members:
                    break
                order, first = stack.batch_order(n, batch_size)
                epoch_loss = None  # each run's sum of step losses, to see it stay finite
                for begin in range(first, n, batch_size):
                    idx = slice(None) if order is None else order[:, begin:begin + batch_size]
                    model.flat.grad = None
                    per_model = loss.fn(model(x[idx]), y[idx])
                    per_model.sum().backward()
                    stack.optimizer.step()
                    stack.step += 1
                    epoch_loss = per_model.detach() if epoch_loss is None else epoch_loss + per_model.detach()
                    if rules.log_steps:
                        for m, value in zip(stack.members, per_model.tolist()):
                            m.logger.scalars(stack.step, {"loss/step": value})
                    if received:  # finish this step, then stop where a resume can pick up exactly
                        stack.partial = {"epoch": epoch, "next_start": begin + batch_size, "order": order}
                        break
                if stack.partial is not None:
                    break
                stack.epochs_done = epoch

                # --- evaluate if due, log, decide each run's fate ----------------------------------------
                # Every epoch, whatever log_every says: a run whose loss or weights stopped being finite diverged
                # (an inf or NaN weight makes its row's sum one).
                weights = model.flat.detach()
                finite = torch.isfinite(weights.sum(1) if epoch_loss is None else epoch_loss + weights.sum(1))
                ended: dict[int, str] = {} if finite.all() else \
                    dict.fromkeys((~finite).nonzero().flatten().tolist(), "diverged")
                due = epoch % rules.log_every == 0 or epoch in (first_epoch, rules.epochs)  # the regular epochs
                images = images_due(cfg, data, epoch)
                improved = []
                if due or every_epoch or ended:
                    (train_loss, train_acc), (val_loss, val_acc) = evaluate(model, loss, data.train, data.val)
                    for r, m in enumerate(stack.members):
                        if not (due or every_epoch or r in ended):
                            continue  # evaluated for another run's end: this one goes on as it would alone
                        values = {"loss/train": train_loss[r], "loss/val": val_loss[r],
                                  "accuracy/train": train_acc[r], "accuracy/val": val_acc[r]}
                        if r in ended or not (math.isfinite(train_loss[r]) and math.isfinite(val_loss[r])):
                            ended[r] = "diverged"
                        else:
                            if m.stopper.update(epoch, values[stopping.monitor]) and every_epoch:
                                improved.append(r)
                            if m.stopper.should_stop:
                                ended[r] = "stopped_early"
                        # Logged: the regular epochs, the epoch a run ends at, and each new best (so the best
                        # value, where early stopping goes back to, is on the curve).
                        if due or r in ended or r in improved:
                            m.logger.scalars(epoch, {**values, "lr": m.job.cfg.optimizer.lr})
                            bar.update(epoch, f"loss/train {train_loss[r]:.4f}  loss/val {val_loss[r]:.4f}")
                # A diverged run keeps the weights of the epoch before: its snapshots do not move.
                if ended:
                    finite[[r for r, status in ended.items() if status == "diverged"]] = False
                    stack.last_good = torch.where(finite[:, None], weights, stack.last_good)
                else:
                    stack.last_good.copy_(weights)
                if restore_best:
                    stack.best[improved], stack.has_best[improved] = weights[improved], True

                # --- pictures and checkpoints when due; ended runs leave the stack ------------------------
                save_now = rules.checkpoint_every is not None and epoch % rules.checkpoint_every == 0
                if images or save_now:
                    for r in (r for r in range(len(stack.members)) if ended.get(r) != "diverged"):
                        m = stack.load_module(r)
                        if images:
                            drawing.log_epoch(m.logger, m.module, loss, epoch)
                        if save_now and r not in ended:
                            checkpoint.save(m.job.run_dir, checkpoint_payload(m, stack.state(r), "running", data, loss))
                stack.end(ended, data, loss, drawing)
                if not stack.members:
                    break
    except Exception:
        # A fault: keep what is known of every run still training (status failed), then let the caller report it.
        stack.end(dict.fromkeys(range(len(stack.members)), "failed"), data, loss, drawing)
        raise
    # The runs still in the stack trained every epoch, or a signal stopped them.
    status = "completed" if stack.epochs_done >= rules.epochs else "interrupted"
    stack.end(dict.fromkeys(range(len(stack.members)), status), data, loss, drawing)


def finish(m: Member, state: dict[str, Any], status: str, data: Dataset, loss: losses.Loss,
           drawing: Pictures) -> RunResult:
    """Pick the weights to keep, evaluate them, write checkpoint.pt and metrics.json (atomic), then the last
    pictures and HParams, and close the run's event file. `state`: the run's last step (`Stack.state`)."""
    cfg, stopper, epochs_run = m.job.cfg, m.stopper, state["epochs_done"]
    weights, weights_epoch = None, None
    if status == "diverged":  # the weights after the epoch before the one it diverged in
        weights, weights_epoch = state["last_good"], epochs_run - 1
    elif state["best_weights"] is not None and status in ("completed", "stopped_early"):
        weights, weights_epoch = state["best_weights"], stopper.best_epoch
    # Saved before the kept weights are loaded: the resume state holds the last step's weights.
    checkpoint.save(m.job.run_dir, checkpoint_payload(m, state, status, data, loss, weights, weights_epoch))
    if weights is not None:
        m.module.load_state_dict(weights)
    final: dict[str, float | None] = dict.fromkeys(metrics.FINAL_KEYS)
    if status not in ("diverged", "failed"):
        (final["loss/train"], final["accuracy/train"]), (final["loss/val"], final["accuracy/val"]), \
            (_, final["accuracy/test"]) = evaluate(m.module, loss, data.train, data.val, data.test)
    if status == "interrupted" and epochs_run > m.logger.last_epoch:  # the last epoch trained is on the curve
        m.logger.scalars(epochs_run, {**{k: v for k, v in final.items() if k != "accuracy/test"},
                                      "lr": cfg.optimizer.lr})
    monitor = cfg.train.early_stopping.monitor
    result_metrics = metrics.build_metrics(
        status=status, epochs_run=epochs_run, best_epoch=stopper.best_epoch, best_value=stopper.best_value,
        monitor=monitor, final=final, wall_time_s=time.perf_counter() - m.started, device=str(data.train.x.device),
        seed=cfg.seed, overrides=list(m.job.overrides))
    metrics.write_metrics(m.job.run_dir, result_metrics)
    metrics.log_line(m.job.run_dir, metrics.result_line(result_metrics))
    if status == "stopped_early" and images_due(cfg, data, cfg.train.epochs):
        # The slider's last picture: where training ended (with the restored weights), not epoch `epochs`.
        drawing.log_epoch(m.logger, m.module, loss, epochs_run)
    if cfg.train.landscape and status not in ("diverged", "failed"):
        landscape.log(m.logger, m.module, loss, data.train, epochs_run)
    # The final values, accuracy/test among them, go with the HParams (as `result/...`): one point each, not curves.
    m.logger.hparams(cfg.hparams(), final)
    m.logger.close()
    return RunResult(m.job.run_dir, status, epochs_run, stopper.best_epoch, monitor,
                     metrics.finite_or_none(stopper.best_value), result_metrics["final"], result_metrics)


def checkpoint_payload(m: Member, state: dict[str, Any], status: str, data: Dataset, loss: losses.Loss,
                       weights: dict[str, torch.Tensor] | None = None, weights_epoch: int | None = None) -> dict:
    """What checkpoint.pt holds: the weights to use (`model`), what predict needs, and the `state` at the last step
    (not restored best weights) that a resume goes on from exactly; a diverged run's holds NaNs: not saved."""
    return {"model": state["model"] if weights is None else weights,
            "epoch": state["epochs_done"] if weights_epoch is None else weights_epoch,
            "spec": m.module.spec, "loss": loss.name, "mean": data.mean, "std": data.std,
            "feature_names": list(data.feature_names), "class_names": list(data.class_names),
            "config": m.job.cfg.to_dict(), "status": status, "resume": None if status == "diverged" else state}


MIN_FREE_BYTES = 16 << 20  # a run writes a few MiB at most; less than this free and it would fail midway


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after, when results could not be saved: unwritable dir or a full disk."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as exc:
        raise ConfigError("hydra.run.dir", str(run_dir), f"a writable directory ({exc.strerror})") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise ConfigError("hydra.run.dir", str(run_dir),
                          f"a disk with at least {MIN_FREE_BYTES >> 20} MiB free ({free >> 20} MiB left)")


def find_resume_dir(cfg: TrainConfig, run_dir: Path, *, root: Path = Path(".")) -> Path:
    """The run dir `train.resume` names (or its checkpoint.pt's), or for `latest` this exp_name's newest other run."""
    if cfg.train.resume != "latest":
        path = root / Path(cfg.train.resume).expanduser()  # where nnrun was started, also under hydra.job.chdir
        return path.parent if path.name == checkpoint.CHECKPOINT_FILE else path
    runs = root / "experiments" / cfg.exp_name / "runs"
    candidates = sorted((p for p in runs.glob("*/" + checkpoint.CHECKPOINT_FILE)
                         if p.parent.resolve() != run_dir.resolve()), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise UsageError(f"train.resume=latest finds no run to resume: no other run under {runs} has a checkpoint; "
                         "give a run dir, or leave out train.resume to start this run")
    return candidates[-1].parent
