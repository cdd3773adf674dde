"""The training loop: setup, loop over epochs and batches, evaluate, log, early-stop, checkpoint.

Readable top to bottom. Data stays as tensors on the device (no DataLoader: the lecture's data fits in
memory many times over). Per-step work is only the forward pass, `loss.backward()` and `optimizer.step()`;
evaluation and logging happen every `train.log_every` epochs (every epoch when early stopping is on).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from nnrun import checkpoint, losses, metrics, models, optim
from nnrun.config import ConfigError, EarlyStoppingConfig, TrainConfig, check_loss_fits
from nnrun.data import Dataset, Split, load


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run; metrics.json and checkpoint.pt are written already."""

    def __init__(self, run_dir: Path, signum: int):
        self.run_dir, self.signum = run_dir, signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; results saved in {run_dir}")


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
def evaluate(model: models.MLP, loss: losses.Loss, *splits: Split) -> list[tuple[float, float]]:
    """(mean loss, accuracy) on each whole split, in eval mode (dropout off)."""
    # Switching modes walks every submodule; only dropout cares, so skip it when there is none.
    toggle = model.has_dropout and model.training
    if toggle:
        model.eval()
    done: dict[int, tuple[float, float]] = {}
    for split in splits:
        if id(split) not in done:  # a split of fraction 0 *is* the training split: evaluate it once
            logits = model(split.x)
            pair = torch.stack([loss.fn(logits, split.y), (loss.predict(logits) == split.y).float().mean()])
            done[id(split)] = tuple(pair.tolist())  # one device sync for both numbers
    if toggle:
        model.train()
    return [done[id(split)] for split in splits]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # The MLP has parameters only (no buffers), so its state_dict lines up with parameters().
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def copy_weights(model: torch.nn.Module, into: dict[str, torch.Tensor]) -> None:
    """Refresh a snapshot in place: one foreach copy, no state_dict() (which costs more than the copy)."""
    with torch.no_grad():
        torch._foreach_copy_(list(into.values()), list(model.parameters()))


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While training, Ctrl-C and SIGTERM only raise a flag: the loop finishes its step and saves."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _images_due(cfg: TrainConfig, data: Dataset, epoch: int) -> bool:
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


def train(cfg: TrainConfig, run_dir: Path, *, overrides: list[str] | tuple[str, ...] = (),
          config_yaml: str = "", show_progress: bool = True, console=None) -> RunResult:
    """Train one network as `cfg` says; write TensorBoard events, checkpoint.pt and metrics.json to run_dir."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    check_writable(run_dir)

    # --- setup: device, data, model, optimizer, loggers ---------------------------------------------
    device = resolve_device(cfg.device)
    data = load(cfg.dataset)
    check_loss_fits(cfg.loss, data.n_classes)
    data = data.to(device)
    loss = losses.LOSSES[cfg.loss]
    model = models.build(data.n_features, cfg.model.hidden, loss.n_outputs(data.n_classes), cfg.activation,
                         cfg.model.dropout, cfg.model.init_std, cfg.seed).to(device)
    # One generator drives batch order and dropout masks: the run depends on its seed alone.
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    model.set_dropout_generator(rng)
    optimizer = optim.build(model.parameters(), cfg.optimizer)
    stopper = EarlyStopping(cfg.train.early_stopping)
    state = Progress(last_good=snapshot(model))
    if cfg.train.resume is not None:
        state = resume(cfg, run_dir, model, optimizer, rng, stopper)

    from nnrun.logging import RunLogger  # tensorboard is imported only when a run starts

    logger = RunLogger(run_dir, config_yaml)
    monitor = cfg.train.early_stopping.monitor
    evaluate_every_epoch = cfg.train.early_stopping.patience is not None
    # Restoring the best weights is part of early stopping: without it, a run ends with its last weights.
    restore_best = evaluate_every_epoch and cfg.train.early_stopping.restore_best
    x, y, n = data.train.x, data.train.y, len(data.train)
    batch_size = min(cfg.train.batch_size or n, n)
    epochs, log_every, lr = cfg.train.epochs, cfg.train.log_every, cfg.optimizer.lr
    checkpoint_every = cfg.train.checkpoint_every
    status, interrupted_by = "completed", None
    progress = _Progress(show_progress, epochs, cfg.exp_name, console, done=state.epochs_done)
    finish = lambda status: _finish(cfg, run_dir, logger, model, optimizer, rng, stopper, data, loss,  # noqa: E731
                                    status, state, overrides, started, device)

    try:
        with stop_signals() as received, progress:
            # --- the loop ---------------------------------------------------------------------------
            model.train()
            for epoch in range(state.epochs_done + 1, epochs + 1):
                if state.partial is not None:  # resuming inside an epoch: its batch order and position
                    order, first = state.partial["order"], state.partial["next_start"]
                    state.partial = None
                else:
                    order = None if batch_size == n else torch.randperm(n, generator=rng, device=device)
                    first = 0
                for start in range(first, n, batch_size):
                    idx = None if order is None else order[start:start + batch_size]
                    xb, yb = (x, y) if idx is None else (x[idx], y[idx])
                    optimizer.zero_grad(set_to_none=True)
                    batch_loss = loss.fn(model(xb), yb)
                    batch_loss.backward()
                    optimizer.step()
                    state.step += 1
                    if cfg.train.log_steps:
                        logger.scalars(state.step, {"loss/step": batch_loss.item()})
                    if received:  # finish this step, then stop where a resume can pick up exactly
                        state.partial = {"epoch": epoch, "next_start": start + batch_size, "order": order}
                        break
                if state.partial is not None:
                    status, interrupted_by = "interrupted", received[0]
                    break

                # --- evaluate and log ---------------------------------------------------------------
                log_now = epoch % log_every == 0 or epoch == epochs or epoch == 1
                if log_now or evaluate_every_epoch:
                    (train_loss, train_acc), (val_loss, val_acc) = evaluate(model, loss, data.train, data.val)
                    values = {"loss/train": train_loss, "loss/val": val_loss,
                              "accuracy/train": train_acc, "accuracy/val": val_acc}
                    if log_now:
                        logger.scalars(epoch, {**values, "lr": lr})
                        progress.update(epoch, train_loss, val_loss)
                    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                        status = "diverged"
                        break
                    if log_now:
                        copy_weights(model, state.last_good)
                    if stopper.update(epoch, values[monitor]) and restore_best:
                        if state.best_weights is None:
                            state.best_weights = snapshot(model)
                        else:
                            copy_weights(model, state.best_weights)
                if _images_due(cfg, data, epoch):
                    from nnrun import pictures

                    pictures.log_epoch(logger, model, data, loss, epoch)
                state.epochs_done = epoch
                if stopper.should_stop:
                    status = "stopped_early"
                    break
                if received:
                    status, interrupted_by = "interrupted", received[0]
                    break
                if checkpoint_every and epoch % checkpoint_every == 0:
                    checkpoint.save(run_dir, checkpoint_payload(cfg, model, optimizer, rng, stopper, data, loss,
                                                                "running", state))
    except Exception:
        # A fault: keep what is known (status failed), then let the caller report it.
        finish("failed")
        raise

    # --- finish: final metrics, checkpoint, metrics.json ------------------------------------------------
    result = finish(status)
    if interrupted_by is not None:
        raise RunInterrupted(run_dir, interrupted_by)
    return result


def check_writable(run_dir: Path) -> None:
    """Fail before training, not after, when results could not be saved: unwritable dir or a full disk."""
    import shutil
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


def find_resume_dir(cfg: TrainConfig, run_dir: Path) -> Path:
    """`train.resume`: a run dir (or its checkpoint.pt), or `latest` = the newest earlier run of this exp_name."""
    if cfg.train.resume != "latest":
        path = Path(cfg.train.resume).expanduser()
        return path.parent if path.name == checkpoint.CHECKPOINT_FILE else path
    runs = Path("experiments") / cfg.exp_name / "runs"
    candidates = sorted((p for p in runs.glob("*/" + checkpoint.CHECKPOINT_FILE)
                         if p.parent.resolve() != run_dir.resolve()), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError("train.resume", "latest", f"a run to resume; no checkpoint under {runs}")
    return candidates[-1].parent


def resume(cfg: TrainConfig, run_dir: Path, model: models.MLP, optimizer, rng: torch.Generator,
           stopper: EarlyStopping) -> Progress:
    """Load weights, optimizer, RNG, early-stopping state and position from a run's checkpoint."""
    source = find_resume_dir(cfg, run_dir)
    try:
        payload = checkpoint.load(source)
    except checkpoint.CheckpointError as exc:
        raise ConfigError("train.resume", cfg.train.resume, str(exc)) from None
    if payload["spec"] != model.spec or payload["config"]["optimizer"]["name"] != cfg.optimizer.name:
        raise ConfigError("train.resume", str(source), "a run of the same model and optimizer "
                          f"(it has {payload['spec']} with {payload['config']['optimizer']['name']})")
    saved = payload["resume"]
    if saved is None:
        raise ConfigError("train.resume", str(source), f"a run that can go on; this one {payload['status']}")
    device = next(model.parameters()).device
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    rng.set_state(saved["rng"]["train"])
    stopper.load_state_dict(saved["early_stopping"])
    on = lambda w: None if w is None else {k: v.to(device) for k, v in w.items()}  # noqa: E731
    partial = saved["partial"]
    if partial is not None and partial["order"] is not None:
        partial = {**partial, "order": partial["order"].to(device)}
    print(f"nnrun: resuming {source} after epoch {saved['epochs_done']}"
          + (f" (inside epoch {partial['epoch']})" if partial else ""))
    return Progress(epochs_done=saved["epochs_done"], step=saved["step"], partial=partial,
                    best_weights=on(saved["best_weights"]), last_good=on(saved["last_good"]))


def checkpoint_payload(cfg: TrainConfig, model: models.MLP, optimizer, rng: torch.Generator,
                       stopper: EarlyStopping, data: Dataset, loss: losses.Loss, status: str,
                       state: Progress, weights: dict[str, torch.Tensor] | None = None,
                       weights_epoch: int | None = None) -> dict[str, Any]:
    """What checkpoint.pt holds: the weights to use (`model`), what predict needs, and what resume needs."""
    current = model.state_dict()
    # A diverged run's last state holds NaNs: it is not saved, and such a run cannot be resumed.
    resume_state = None if status == "diverged" else {
        "epochs_done": state.epochs_done, "step": state.step, "partial": state.partial,
        "model": current, "optimizer": optimizer.state_dict(),
        "rng": {"train": rng.get_state()}, "early_stopping": stopper.state_dict(),
        "best_weights": state.best_weights, "last_good": state.last_good}
    return {
        "model": current if weights is None else weights,
        "epoch": state.epochs_done if weights_epoch is None else weights_epoch,
        "spec": model.spec,
        "loss": loss.name,
        "mean": data.mean, "std": data.std,
        "feature_names": list(data.feature_names), "class_names": list(data.class_names),
        "config": cfg.to_dict(),
        "status": status,
        # The state at the last step (not restored best weights), so a resumed run continues exactly.
        "resume": resume_state,
    }


def _finish(cfg: TrainConfig, run_dir: Path, logger, model, optimizer, rng, stopper: EarlyStopping,
            data: Dataset, loss: losses.Loss, status: str, state: Progress, overrides, started: float,
            device: torch.device) -> RunResult:
    """Pick the weights to keep, evaluate them, write checkpoint.pt and metrics.json (atomic), then HParams."""
    weights, weights_epoch = None, None
    if status == "diverged":
        weights, weights_epoch = state.last_good, state.epochs_done
    elif state.best_weights is not None and status in ("completed", "stopped_early"):
        weights, weights_epoch = state.best_weights, stopper.best_epoch
    # Saved before the kept weights are loaded: state_dict() shares the parameters' storage, and the resume
    # state must hold the last step's weights, not the restored ones.
    checkpoint.save(run_dir, checkpoint_payload(cfg, model, optimizer, rng, stopper, data, loss, status, state,
                                                weights, weights_epoch))
    if weights is not None:
        model.load_state_dict(weights)
    final: dict[str, float | None] = {key: None for key in metrics.FINAL_KEYS}
    if status not in ("diverged", "failed"):
        model.eval()
        (final["loss/train"], final["accuracy/train"]), (final["loss/val"], final["accuracy/val"]), \
            (_, final["accuracy/test"]) = evaluate(model, loss, data.train, data.val, data.test)
    monitor = cfg.train.early_stopping.monitor
    result_metrics = metrics.build_metrics(
        status=status, epochs_run=state.epochs_done, best_epoch=stopper.best_epoch, best_value=stopper.best_value,
        monitor=monitor, final=final, wall_time_s=time.perf_counter() - started,
        device=str(device) if device.type == "cuda" else "cpu", seed=cfg.seed, overrides=list(overrides))
    metrics.write_metrics(run_dir, result_metrics)
    if status == "stopped_early" and _images_due(cfg, data, cfg.train.epochs):
        from nnrun import pictures

        # The slider's last picture: where training ended (with the restored weights), not epoch `epochs`.
        pictures.log_epoch(logger, model, data, loss, state.epochs_done)
    if cfg.train.landscape and status not in ("diverged", "failed"):
        from nnrun import landscape

        landscape.log(logger, model, loss, data.train, state.epochs_done)
    if final.get("accuracy/test") is not None:
        logger.scalars(state.epochs_done, {"accuracy/test": final["accuracy/test"]})
    from nnrun.config import flatten

    logger.hparams(flatten(cfg.to_dict()), final)
    logger.close()
    return RunResult(run_dir, status, state.epochs_done, stopper.best_epoch, monitor,
                     metrics.finite_or_none(stopper.best_value), result_metrics["final"], result_metrics)


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
            self._progress.__exit__(*exc)
        return False
