"""Which jobs can share one stack of models, and how many models one stack may hold.

Jobs share a stack when their configs are equal but for per-model values: the seed (initial weights, batch
order, dropout masks), init_std, dropout p and the optimizer's numbers (lr, weight decay, betas, ...). The
optimizer's name and code path (Nesterov or not, momentum on or off) are shared by the stack.
"""

from __future__ import annotations

import json
from typing import Sequence, TypeVar

from nnrun.config import TrainConfig
from nnrun.losses import LOSSES
from nnrun.optim import structure

T = TypeVar("T")

# Keys that may differ between the models of one stack.
PER_MODEL = ("seed", "model.dropout", "model.init_std", "optimizer.lr", "optimizer.params", "exp_name",
             "train.resume")


def batch_key(cfg: TrainConfig) -> str:
    """Equal for two configs exactly when their jobs can be trained in one stack."""
    tree = cfg.to_dict()
    for dotted in PER_MODEL:
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node.pop(last)
    tree["optimizer_structure"] = structure(cfg.optimizer.name, dict(cfg.optimizer.params))
    return json.dumps(tree, sort_keys=True, default=str)


def group(items: Sequence[T], key) -> list[list[T]]:
    """Items grouped by key, groups in order of first appearance, items in their order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def bytes_per_model(cfg: TrainConfig, data) -> int:
    """A generous estimate of one model's memory in a stack on `data` (a data.Dataset), float32.

    Parameters, their gradients, up to three optimizer state tensors and two snapshots (last good, best); the
    activations of a training step (forward, backward, dropout masks) and of evaluating a whole split.
    """
    n_rows = max(len(data.train), len(data.val), len(data.test))
    batch_rows = min(cfg.train.batch_size or n_rows, n_rows)
    widths = [data.n_features, *cfg.model.hidden, LOSSES[cfg.loss].n_outputs(data.n_classes)]
    n_params = sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    activations = sum(widths)
    return 4 * (7 * n_params + 4 * batch_rows * activations + 2 * n_rows * activations)


# Open files a process keeps beside a stack's event files (its own, Hydra's job log, data, imports' handles).
SPARE_FILES = 64


def open_files_cap() -> int:
    """How many models a stack may hold under the process's open-file limit: each job's event file stays open
    while its stack trains (macOS allows 256 open files by default, fewer than the default max_models)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        return 1 << 30
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, soft - SPARE_FILES)


def models_per_stack(per_model_bytes: int, budget_bytes: int, max_models: int) -> int:
    """At most `max_models`, as many as fit `budget_bytes`, and as many event files as may be open at once
    (always at least one)."""
    return max(1, min(max_models, budget_bytes // max(per_model_bytes, 1), open_files_cap()))


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
