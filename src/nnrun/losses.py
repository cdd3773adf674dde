"""Losses and how the network's outputs read as predictions: bce, mse (on a sigmoid output), cross_entropy.

The output layer follows the loss: one logit for bce and mse, one logit per class for cross_entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    name: str
    # (logits, y) -> mean loss. y holds class indices (int64).
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # logits -> (N, K) class probabilities.
    proba: Callable[[torch.Tensor], torch.Tensor]
    # logits -> (N,) predicted class.
    predict: Callable[[torch.Tensor], torch.Tensor]

    def n_outputs(self, n_classes: int) -> int:
        return n_classes if self.name == "cross_entropy" else 1


def _binary_proba(logits: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits[:, 0])
    return torch.stack([1 - p, p], dim=1)


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))


def _mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(torch.sigmoid(logits[:, 0]), y.to(logits.dtype))


def _binary_predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, 0] > 0).long()


LOSSES: dict[str, Loss] = {
    "bce": Loss("bce", _bce, _binary_proba, _binary_predict),
    "mse": Loss("mse", _mse, _binary_proba, _binary_predict),
    "cross_entropy": Loss("cross_entropy", F.cross_entropy, lambda z: torch.softmax(z, dim=1),
                          lambda z: z.argmax(dim=1)),
}
