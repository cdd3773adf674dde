"""The engine's training loop for K models at once: same data, batch order per model, evaluation, early
stopping, divergence, checkpoints and metrics, each model exactly as its separate `engine.train` run.

Read it beside `nnrun.engine.train`: the loop has the same parts in the same order. What differs:
- each model k has its own generator (seeded like its run) for its batch order and dropout masks, drawn in the
  run's order (per epoch the permutation, then per step the masks layer by layer);
- losses are per model, and each model's gradient comes from one pass over the stack (vectorized.grad: the chain
  rule written out, equal to autograd's backward of the summed losses; models share no weights);
- every job's RunLogger is open while the stack trains (they write synchronously, in batches, no threads);
- a model that stops early, diverges or is interrupted leaves the stack with its weights and optimizer state
  (so it is frozen, and a NaN in it can reach no other model), and is finished by the engine's own `_finish`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nnrun import engine, losses, models, optim
from nnrun.config import TrainConfig, check_loss_fits
from nnrun.data import Dataset, Split, load
from nnrun.logging import RunLogger
from nnrun.vectorized import model as stacked_model
from nnrun.vectorized import optim as stacked_optim
from nnrun.vectorized.grad import loss_and_grad


@dataclass
class Job:
    """One sweep job: its validated config and where its run dir is."""

    cfg: TrainConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    config_yaml: str = ""


class _SavedOptimizer:
    """A finished model's optimizer as `engine._finish` saves it: its torch.optim `state_dict()`.

    No torch.optim optimizer is built per model: the stacked rule holds the state, and the first torch.optim
    optimizer of a process would import torch._dynamo (about 2 s, a tenth of a 64-job sweep).
    """

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


@dataclass
class _Model:
    """One model's own pieces: its plain MLP (for finishing), generator, optimizer's param group, logger and
    early stopping."""

    job: Job
    module: models.MLP
    rng: torch.Generator
    group: dict
    logger: RunLogger
    stopper: engine.EarlyStopping
    has_best: bool = False
    optimizer: _SavedOptimizer | None = None
    result: engine.RunResult | None = None


@torch.no_grad()
def evaluate(net: stacked_model.StackedMLP, fn, loss: losses.Loss, split: Split) -> tuple[list, list]:
    """Per model (mean loss, accuracy) on a whole split, dropout off: two lists of K floats."""
    logits = net(split.x.expand(net.n_models, *split.x.shape))
    values = fn(logits, split.y)
    accuracy = (stacked_model.predict(loss, logits) == split.y).float().mean(1)
    return values.tolist(), accuracy.tolist()


def train_stack(jobs: list[Job], data: Dataset | None = None) -> list[engine.RunResult]:
    """Train `jobs` (configs equal but for per-model values, see batching.batch_key) as one stacked model, on
    `data` (their dataset, loaded) or, without it, on what their dataset config loads."""
    started = time.perf_counter()
    cfg = jobs[0].cfg  # what all jobs share: data, architecture, loss, optimizer rule, loop settings

    # --- setup: device, data, one plain model + generator + optimizer + logger per job, then the stack ------
    device = engine.resolve_device(cfg.device)
    data = load(cfg.dataset) if data is None else data
    check_loss_fits(cfg.loss, data.n_classes)
    data = data.to(device)
    loss = losses.LOSSES[cfg.loss]
    loss_fn = stacked_model.STACKED_LOSSES[cfg.loss]

    members: list[_Model] = []
    for job in jobs:
        Path(job.run_dir).mkdir(parents=True, exist_ok=True)
        module = models.build(data.n_features, job.cfg.model.hidden, loss.n_outputs(data.n_classes),
                              job.cfg.activation, job.cfg.model.dropout, job.cfg.model.init_std,
                              job.cfg.seed).to(device)
        rng = torch.Generator(device=device).manual_seed(job.cfg.seed)
        module.set_dropout_generator(rng)
        members.append(_Model(job, module, rng, optim.param_group(job.cfg.optimizer),
                              RunLogger(job.run_dir, job.config_yaml),
                              engine.EarlyStopping(job.cfg.train.early_stopping)))
    net = stacked_model.StackedMLP([m.module for m in members], cfg.activation)
    optimizer = stacked_optim.build(cfg.optimizer.name, net.params, [m.group for m in members])
    alive = list(range(len(members)))  # row r of the stack is members[alive[r]]

    monitor = cfg.train.early_stopping.monitor
    evaluate_every_epoch = cfg.train.early_stopping.patience is not None
    # As in the engine: restoring the best weights is part of early stopping.
    restore_best = evaluate_every_epoch and cfg.train.early_stopping.restore_best
    x, y, n = data.train.x, data.train.y, len(data.train)
    if loss.name != "cross_entropy":  # bce and mse compare with float targets: converted once, not every step
        y = y.to(x.dtype)
    batch_size = min(cfg.train.batch_size or n, n)
    full_batch = batch_size == n
    epochs, log_every = cfg.train.epochs, cfg.train.log_every
    widths = list(cfg.model.hidden)
    last_good = net.snapshot()  # per row: the newest finite weights
    best = net.snapshot() if restore_best else None
    epochs_done, step = 0, 0
    # Known once per stack, not asked of the tensor (a device sync) every step. Models leaving cannot add dropout;
    # a stack whose dropout models have all left draws all-ones masks, which change nothing.
    with_dropout = bool((net.dropout > 0).any())

    def draw_masks(rows_batch: int) -> list[torch.Tensor] | None:
        """Each model's dropout masks for one step, from its own generator, layer by layer (as models.Dropout)."""
        if not with_dropout:
            return None
        masks = []
        for width in widths:
            per_model = []
            for r, j in enumerate(alive):
                p = float(net.dropout[r])
                per_model.append(torch.rand((rows_batch, width), generator=members[j].rng, device=device) >= p
                                 if p > 0 else torch.ones((rows_batch, width), dtype=torch.bool, device=device))
            masks.append(torch.stack(per_model))
        return masks

    def train_step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor | None:
        # The chain rule written out (vectorized.grad): equal to autograd's backward of the summed per-model
        # losses, a third less time per step on networks this small. It sets the gradient, not adds to it.
        # The step's losses themselves are only computed where they are logged (train.log_steps).
        per_model = loss_and_grad(net, xb, yb, cfg.loss, draw_masks(xb.shape[1]), losses=cfg.train.log_steps)
        optimizer.step()
        return per_model

    def log_steps(per_model: torch.Tensor) -> None:
        RunLogger.scalars_of([members[j].logger for j in alive], step, {"loss/step": per_model.tolist()})

    def finish(rows: list[int], statuses: list[str], partial: dict | None = None) -> None:
        """Models at `rows` end with `statuses`: their state into their own MLP and optimizer, then the engine's
        `_finish`, which picks the weights to keep (last finite when diverged, best when restored) as for a run."""
        for r, status in zip(rows, statuses):
            m = members[alive[r]]
            stacked_model.load_into(m.module, net, net.flat, r)
            m.optimizer = _SavedOptimizer(optimizer.state_dict_of(r, m.group, net.split_row))
            row_partial = None if partial is None else {
                **partial, "order": None if partial["order"] is None else partial["order"][r]}
            state = engine.Progress(
                epochs_done=epochs_done, step=step, partial=row_partial,
                best_weights=stacked_model.state_dict_of(m.module, net, best, r) if m.has_best else None,
                last_good=stacked_model.state_dict_of(m.module, net, last_good, r))
            m.result = engine._finish(m.job.cfg, m.job.run_dir, m.logger, m.module, m.optimizer, m.rng,
                                      m.stopper, data, loss, status, state, m.job.overrides, started, device)

    def leave(rows_out: list[int]) -> None:
        """Take the finished models out of the stack (weights, optimizer state, snapshots)."""
        nonlocal alive, last_good, best
        if not rows_out:  # nothing to take out: the stack, its optimizer's state and cached views stay as they are
            return
        rows = [r for r in range(len(alive)) if r not in set(rows_out)]
        if not rows:
            alive = []
            return
        index = torch.tensor(rows, device=device)
        net.keep(index)
        optimizer.keep(index, net.params)
        last_good = last_good[index]
        best = best[index] if best is not None else None
        alive = [alive[r] for r in rows]

    interrupted_inside: dict | None = None  # where a signal stopped the stack inside an epoch
    try:
        # No autograd anywhere in the loop (the gradient is written out): one no_grad, not one per call.
        with engine.stop_signals() as received, torch.no_grad():
            # --- the loop ---------------------------------------------------------------------------------
            for epoch in range(1, epochs + 1):
                k = len(alive)
                order = None if full_batch else torch.stack(
                    [torch.randperm(n, generator=members[j].rng, device=device) for j in alive])
                for start in range(0, n, batch_size):
                    if order is None:
                        per_model = train_step(x.expand(k, *x.shape), y)
                    else:
                        idx = order[:, start:start + batch_size]
                        per_model = train_step(x[idx], y[idx])
                    step += 1
                    if cfg.train.log_steps:
                        log_steps(per_model)
                    if received:  # as the engine: finish the step, stop where each run could resume
                        interrupted_inside = {"epoch": epoch, "next_start": start + batch_size, "order": order}
                        break
                if interrupted_inside is not None:
                    break

                # --- evaluate and log, per model ----------------------------------------------------------
                log_now = epoch % log_every == 0 or epoch == epochs or epoch == 1
                ended: dict[int, str] = {}
                if log_now or evaluate_every_epoch:
                    train_loss, train_acc = evaluate(net, loss_fn, loss, data.train)
                    # A split of fraction 0 *is* the training split (as in engine.evaluate): evaluated once.
                    val_loss, val_acc = (train_loss, train_acc) if data.val is data.train else \
                        evaluate(net, loss_fn, loss, data.val)
                    columns = {"loss/train": train_loss, "loss/val": val_loss,
                               "accuracy/train": train_acc, "accuracy/val": val_acc}
                    if log_now:  # each model's event as its run writes it, all serialized at once
                        RunLogger.scalars_of([members[j].logger for j in alive], epoch,
                                             {**columns, "lr": [members[j].job.cfg.optimizer.lr for j in alive]})
                    monitored = columns[monitor]
                    improved: list[int] = []
                    for r, j in enumerate(alive):
                        m = members[j]
                        if not (math.isfinite(train_loss[r]) and math.isfinite(val_loss[r])):
                            ended[r] = "diverged"
                            continue
                        if m.stopper.update(epoch, monitored[r]) and restore_best:
                            improved.append(r)
                            m.has_best = True
                    # Diverged models keep their previous finite weights: finish them before the snapshot moves.
                    diverged = [r for r, status in ended.items() if status == "diverged"]
                    finish(diverged, ["diverged"] * len(diverged))
                    if log_now:
                        last_good = net.snapshot()
                    if improved:
                        mask = torch.zeros(len(alive), 1, dtype=torch.bool, device=device)
                        mask[improved] = True
                        best = torch.where(mask, net.flat.detach(), best)
                epochs_done = epoch
                # Stopping can only change on an evaluated epoch, pictures only on an image epoch (the stack
                # shares train.*): on other epochs there is nothing to do per model.
                images_due = engine._images_due(cfg, data, epoch)
                if not (log_now or evaluate_every_epoch or images_due or received):
                    continue
                for r, j in enumerate(alive):
                    m = members[j]
                    if r in ended:
                        continue
                    if images_due:
                        from nnrun import pictures

                        pictures.log_epoch(m.logger, stacked_model.load_into(m.module, net, net.flat, r), data,
                                           loss, epoch)
                    if m.stopper.should_stop:
                        ended[r] = "stopped_early"
                    elif received:
                        ended[r] = "interrupted"
                others = [r for r in ended if ended[r] != "diverged"]
                finish(others, [ended[r] for r in others])
                leave(list(ended))
                if not alive or received:
                    break
    except Exception:
        # A fault ends every model still training, as the engine's own: status failed, then re-raise.
        finish(list(range(len(alive))), ["failed"] * len(alive))
        raise

    # --- finish: the models still in the stack --------------------------------------------------------------
    if interrupted_inside is not None:
        finish(list(range(len(alive))), ["interrupted"] * len(alive), interrupted_inside)
    else:
        finish(list(range(len(alive))), ["completed"] * len(alive))
    if received:
        raise engine.RunInterrupted(jobs[0].run_dir.parent, received[0])
    return [m.result for m in members]

