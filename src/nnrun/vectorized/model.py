"""K MLPs of one shape as one stacked model: weights (K, out, in), one `torch.baddbmm` per layer; per-model losses.

Each model is first built by `nnrun.models.build` with its own seed, so its initial weights are exactly those of
its separate run; the stack copies them in and copies trained weights back out (`load_into`), so evaluation,
pictures and checkpoints reuse the single-run code on a plain `nn.Module`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from nnrun.models import ACTIVATION_MODULES, MLP


class StackedMLP:
    """The layers of K MLPs stacked: weight (K, out, in) and bias (K, out) per linear layer, leaf tensors."""

    def __init__(self, models: Sequence[MLP], activation: str):
        layers = [m.linear_layers() for m in models]
        self.params: list[torch.Tensor] = []
        for i in range(len(layers[0])):
            self.params.append(torch.stack([ls[i].weight.detach() for ls in layers]).requires_grad_())
            self.params.append(torch.stack([ls[i].bias.detach() for ls in layers]).requires_grad_())
        self.activation = ACTIVATION_MODULES[activation]()
        dropout = torch.tensor([m.spec["dropout"] for m in models], dtype=self.params[0].dtype,
                               device=self.params[0].device)
        # Each model's dropout p; inverted dropout scales kept units by 1 / (1 - p), as models.Dropout does.
        self.dropout = dropout
        self.keep_scale = (1.0 - dropout.double()).to(dropout.dtype).view(-1, 1, 1)

    @property
    def n_models(self) -> int:
        return self.params[0].shape[0]

    @property
    def n_hidden(self) -> int:
        return len(self.params) // 2 - 1

    def forward(self, x: torch.Tensor, keep: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(K, B, F) inputs -> (K, B, outputs) logits; `keep` (one (K, B, width) bool mask per hidden layer)
        applies dropout, None is eval mode."""
        h = x
        for i in range(self.n_hidden):
            weight, bias = self.params[2 * i], self.params[2 * i + 1]
            h = self.activation(torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2)))
            if keep is not None:
                h = h * keep[i] / self.keep_scale
        weight, bias = self.params[-2], self.params[-1]
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    __call__ = forward

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the models at `rows` (new leaf tensors); the others have left the stack."""
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.dropout = self.dropout[rows]
        self.keep_scale = self.keep_scale[rows]


def load_into(model: MLP, stacked: Sequence[torch.Tensor], row: int) -> MLP:
    """Copy model `row` of stacked weights (as StackedMLP.params or a snapshot of them) into a plain MLP."""
    with torch.no_grad():
        for p, s in zip(model.parameters(), stacked):
            p.copy_(s[row])
    return model


def state_dict_of(model: MLP, stacked: Sequence[torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    """Model `row`'s weights as `model.state_dict()` would hold them (the checkpoint's format)."""
    return {name: s[row].detach().clone() for (name, _), s in zip(model.named_parameters(), stacked)}


# Per-model mean losses: (K, B, outputs) logits, (K, B) or (B,) targets -> (K,) losses, each the mean over its
# own batch exactly as nnrun.losses computes one model's. Summed, they give each model its own gradient.
def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits[..., 0], y.to(logits.dtype).expand(logits.shape[:2]),
                                              reduction="none").mean(1)


def _mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(torch.sigmoid(logits[..., 0]), y.to(logits.dtype).expand(logits.shape[:2]),
                      reduction="none").mean(1)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), y.expand(logits.shape[:2]), reduction="none").mean(1)


STACKED_LOSSES = {"bce": _bce, "mse": _mse, "cross_entropy": _cross_entropy}


def predict(loss, logits: torch.Tensor) -> torch.Tensor:
    """(K, B, outputs) logits -> (K, B) predicted classes, through the single-run `loss.predict` (row-wise)."""
    k, b, c = logits.shape
    return loss.predict(logits.reshape(k * b, c)).view(k, b)
