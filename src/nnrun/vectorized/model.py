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
    """The parameters of K MLPs in one (K, P) leaf tensor `flat`: model k's weights and biases, layer by layer,
    in `model.parameters()` order. Each layer's weight (K, out, in) and bias (K, out) are views of it, so the
    optimizer updates all layers of all models with one call per operation.
    """

    def __init__(self, models: Sequence[MLP], activation: str):
        first = list(models[0].parameters())
        self.shapes = [tuple(p.shape) for p in first]
        self.sizes = [p.numel() for p in first]
        self.flat = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                 for m in models]).requires_grad_()
        self.activation = ACTIVATION_MODULES[activation]()
        dropout = torch.tensor([m.spec["dropout"] for m in models], dtype=self.flat.dtype, device=self.flat.device)
        # Each model's dropout p; inverted dropout scales kept units by 1 / (1 - p), as models.Dropout does.
        self.dropout = dropout
        self.keep_scale = (1.0 - dropout.double()).to(dropout.dtype).view(-1, 1, 1)
        self._views: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self._linear: tuple[list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.flat]

    @property
    def n_models(self) -> int:
        return self.flat.shape[0]

    def layers(self, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`flat` (default: the live parameters) as per-parameter views: weight (K, out, in), bias (K, out), ..."""
        if flat is None and not torch.is_grad_enabled():
            # Without autograd (the trainer's steps and evaluations), the live parameters' views stay valid while
            # `flat` is the same tensor (updated in place): made once per stack, not once per step.
            if self._views is None or self._views[0] is not self.flat:
                self._views = (self.flat, self.layers(self.flat.detach()))
            return self._views[1]
        flat = self.flat if flat is None else flat
        return [piece.view(flat.shape[0], *shape)
                for piece, shape in zip(torch.split(flat, self.sizes, dim=1), self.shapes)]

    def linear_views(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (bias (K, 1, out), weight transposed (K, in, out)): what `torch.baddbmm` takes, as views of the
        live parameters, made once per stack (without autograd, as `layers`)."""
        params = self.layers()
        cached = not torch.is_grad_enabled()  # then `layers` returns the same list while `flat` is the same
        if cached and self._linear is not None and self._linear[0] is params:
            return self._linear[1]
        views = [(params[i + 1].unsqueeze(1), params[i].transpose(1, 2)) for i in range(0, len(params), 2)]
        if cached:
            self._linear = (params, views)
        return views

    def split_row(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One model's (P,) row -> its per-parameter tensors (the layout of torch.optim's state)."""
        return [piece.view(shape) for piece, shape in zip(torch.split(row, self.sizes), self.shapes)]

    def forward(self, x: torch.Tensor, keep: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """(K, B, F) inputs -> (K, B, outputs) logits; `keep` (one (K, B, width) bool mask per hidden layer)
        applies dropout, None is eval mode."""
        linear = self.linear_views()
        h = x
        for i, (bias, weight_t) in enumerate(linear):
            h = torch.baddbmm(bias, h, weight_t)
            if i + 1 < len(linear):  # a hidden layer
                h = self.activation(h)
                if keep is not None:
                    h = h * keep[i] / self.keep_scale
        return h

    __call__ = forward

    def snapshot(self) -> torch.Tensor:
        return self.flat.detach().clone()

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the models at `rows` (a new leaf tensor); the others have left the stack."""
        self.flat = self.flat.detach()[rows].requires_grad_()
        self.dropout = self.dropout[rows]
        self.keep_scale = self.keep_scale[rows]


def load_into(model: MLP, net: StackedMLP, flat: torch.Tensor, row: int) -> MLP:
    """Copy model `row` of `flat` (the stack's parameters or a snapshot of them) into a plain MLP."""
    with torch.no_grad():
        for p, value in zip(model.parameters(), net.split_row(flat[row])):
            p.copy_(value)
    return model


def state_dict_of(model: MLP, net: StackedMLP, flat: torch.Tensor, row: int) -> dict[str, torch.Tensor]:
    """Model `row`'s weights as `model.state_dict()` would hold them (the checkpoint's format)."""
    return {name: value.detach().clone()
            for (name, _), value in zip(model.named_parameters(), net.split_row(flat[row]))}


def float_targets(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class labels as the logits' dtype, for bce and mse (the trainer converts them once: then this is y)."""
    return y if y.dtype == logits.dtype else y.to(logits.dtype)


# Per-model mean losses: (K, B, outputs) logits, (K, B) or (B,) targets -> (K,) losses, each the mean over its
# own batch exactly as nnrun.losses computes one model's. Summed, they give each model its own gradient.
def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits[..., 0], float_targets(y, logits).expand(logits.shape[:2]),
                                              reduction="none").mean(1)


def _mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(torch.sigmoid(logits[..., 0]), float_targets(y, logits).expand(logits.shape[:2]),
                      reduction="none").mean(1)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.transpose(1, 2), y.expand(logits.shape[:2]), reduction="none").mean(1)


STACKED_LOSSES = {"bce": _bce, "mse": _mse, "cross_entropy": _cross_entropy}


def predict(loss, logits: torch.Tensor) -> torch.Tensor:
    """(K, B, outputs) logits -> (K, B) predicted classes, through the single-run `loss.predict` (row-wise)."""
    k, b, c = logits.shape
    return loss.predict(logits.reshape(k * b, c)).view(k, b)
