"""Which jobs can share one stack of models, and how many models one stack may hold. Jobs share a stack when their
configs are equal but for per-model values (`PER_MODEL`); the optimizer's name and code path (Nesterov or not,
momentum on or off) are the stack's."""

from __future__ import annotations

import json
from typing import Sequence

from nnrun.config import TrainConfig, flatten
from nnrun.losses import LOSSES
from nnrun.optim import structure

# The config keys (with what lies under them) that may differ between the models of one stack: the seed (initial
# weights, batch order, dropout masks), dropout p, init_std and the optimizer's numbers (lr, weight decay, betas...).
PER_MODEL = ("seed", "model.dropout", "model.init_std", "optimizer.lr", "optimizer.params", "exp_name",
             "train.resume")


def batch_key(cfg: TrainConfig) -> str:
    """Equal for two configs exactly when their jobs can be trained in one stack."""
    per_model = tuple(f"{key}." for key in PER_MODEL)
    shared = {key: value for key, value in flatten(cfg.to_dict()).items() if not f"{key}.".startswith(per_model)}
    shared["optimizer_structure"] = structure(cfg.optimizer.name, dict(cfg.optimizer.params))
    return json.dumps(shared, sort_keys=True, default=str)


def group(items: Sequence, key) -> list[list]:
    """Items grouped by key, groups in order of first appearance, items in their order."""
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def bytes_per_model(cfg: TrainConfig, data) -> int:
    """A generous estimate of one model's memory in a stack on `data` (float32): parameters, gradients, up to three
    optimizer states, two snapshots; the activations of a step (forward, backward, dropout) and of a whole split."""
    n_rows = max(len(data.train), len(data.val), len(data.test))
    batch_rows = min(cfg.train.batch_size or n_rows, n_rows)
    widths = [data.n_features, *cfg.model.hidden, LOSSES[cfg.loss].n_outputs(data.n_classes)]
    n_params = sum((a + 1) * b for a, b in zip(widths, widths[1:]))
    return 4 * (7 * n_params + (4 * batch_rows + 2 * n_rows) * sum(widths))


SPARE_FILES = 64  # files a process keeps open beside a stack's event files (its own, Hydra's log, data, imports)


def models_per_stack(per_model_bytes: int, budget_bytes: int, max_models: int) -> int:
    """At most `max_models`, as many as fit `budget_bytes`, and as many event files as may be open at once: each job's
    stays open while its stack trains (macOS allows 256 open files by default). At least one."""
    try:
        import resource

        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if open_files != resource.RLIM_INFINITY:
            max_models = min(max_models, open_files - SPARE_FILES)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        pass
    return max(1, min(max_models, budget_bytes // max(per_model_bytes, 1)))


def chunks(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
