"""Losses and how the network's outputs read as predictions: bce, mse (on a sigmoid output), cross_entropy.

One entry per loss, used alike by a single run and by a stack of models. The output layer follows the loss:
one logit for bce and mse, one logit per class for cross_entropy. Every function takes logits of any leading
shape, `(..., N, outputs)`: one model's `(N, outputs)` or a stack's `(K, N, outputs)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    name: str
    # (logits (..., N, outputs), y (N,) or (..., N) class indices) -> (...) each model's mean loss over its N points.
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # One output, P(class 1) through a sigmoid, compared with float targets (bce, mse); else a logit per class.
    float_targets: bool = True

    def n_outputs(self, n_classes: int) -> int:
        return 1 if self.float_targets else n_classes

    def targets(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Class indices as `fn` compares them: converted once per run, not at every step."""
        return y.to(dtype) if self.float_targets else y

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., outputs) -> (..., K) class probabilities."""
        if not self.float_targets:
            return torch.softmax(logits, dim=-1)
        p = torch.sigmoid(logits[..., 0])
        return torch.stack([1 - p, p], dim=-1)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (..., outputs) -> (...) predicted class."""
        return (logits[..., 0] > 0).long() if self.float_targets else logits.argmax(dim=-1)


def _binary(loss: Callable[..., torch.Tensor], squash: Callable | None = None) -> Callable:
    """`loss` between the one output (squashed first, if `squash`) and the 0/1 targets, per model."""
    def fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = logits[..., 0] if squash is None else squash(logits[..., 0])
        return loss(z, y.to(z.dtype).expand(z.shape), reduction="none").mean(-1)
    return fn


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    shape = logits.shape[:-1]
    per_point = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.expand(shape).reshape(-1), reduction="none")
    return per_point.view(shape).mean(-1)


LOSSES: dict[str, Loss] = {
    "bce": Loss("bce", _binary(F.binary_cross_entropy_with_logits)),
    "mse": Loss("mse", _binary(F.mse_loss, torch.sigmoid)),
    "cross_entropy": Loss("cross_entropy", _cross_entropy, float_targets=False),
}
