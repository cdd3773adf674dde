"""The networks: a perceptron (no hidden layer) or an MLP of any widths, as a plain nn.Module, and a stack of K
such networks of one shape that trains them together.

`MLP` is what checkpoint.pt loads into (for `nnrun predict`, the pictures, the loss landscape and users' own
code). `StackedMLP` is what the engine trains (a single run is a stack of one): each layer one `torch.baddbmm`
for all K. Weights come from a generator of the model's own, so they depend on its seed alone, in a stack or not.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn

# The activations, by the name conf/activation/ uses: one entry here serves single runs and stacks alike.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity, "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus,
}


class MLP(nn.Module):
    """inputs -> [Linear -> activation -> Dropout] per hidden width -> Linear -> logits (or one output)."""

    def __init__(self, n_inputs: int, hidden: Sequence[int], n_outputs: int, activation: str, dropout: float):
        super().__init__()
        self.spec = {"n_inputs": n_inputs, "hidden": list(hidden), "n_outputs": n_outputs,
                     "activation": activation, "dropout": dropout}
        layers: list[nn.Module] = []
        widths = [n_inputs, *hidden]
        for n_in, width in zip(widths, hidden):
            layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(widths[-1], n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)] + [self.output]


def build(n_inputs: int, hidden: Sequence[int], n_outputs: int, activation: str, dropout: float,
          init_std: float | None, seed: int) -> MLP:
    """An MLP with weights drawn from a generator seeded with `seed`, layer by layer (weight, then bias).
    init_std=None: PyTorch's default for nn.Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias;
    init_std=s: weights ~ N(0, s^2), biases 0 (the lecture's "initialise with small random numbers")."""
    model = MLP(n_inputs, hidden, n_outputs, activation, dropout)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.linear_layers():
            fan_out, fan_in = layer.weight.shape
            if init_std is None:
                bound = 1.0 / math.sqrt(fan_in)
                layer.weight.copy_(torch.rand(fan_out, fan_in, generator=g) * (2 * bound) - bound)
                layer.bias.copy_(torch.rand(fan_out, generator=g) * (2 * bound) - bound)
            else:
                layer.weight.copy_(torch.randn(fan_out, fan_in, generator=g) * init_std)
                layer.bias.zero_()
    return model


class StackedMLP(nn.Module):
    """K MLPs of one shape (they may differ in weights and dropout p) as one model: their parameters are one
    (K, P) leaf tensor `flat`, row k model k's in `MLP.parameters()` order, each layer's weight (K, out, in) and
    bias (K, out) a view of it. So an optimizer updates every model with one call per operation, and the gradient
    of the summed per-model losses with respect to row k is model k's own."""

    def __init__(self, models: Sequence[MLP]):
        super().__init__()
        self.shapes = [tuple(p.shape) for p in models[0].parameters()]
        self.sizes = [p.numel() for p in models[0].parameters()]
        self.flat = nn.Parameter(torch.stack([self.row_of(m.state_dict()) for m in models]))
        self.activation = ACTIVATIONS[models[0].spec["activation"]]()
        self.dropout = [float(m.spec["dropout"]) for m in models]
        self.with_dropout = any(p > 0 for p in self.dropout)
        # Inverted dropout scales kept units by 1 / (1 - p), p per model.
        self.keep_scale = torch.tensor([1.0 - p for p in self.dropout], dtype=self.flat.dtype,
                                       device=self.flat.device).view(-1, 1, 1)
        # One generator per model for its dropout masks (the engine's, which also orders its batches).
        self.generators: list[torch.Generator] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) inputs shared by all models, or (K, B, F) one batch per model -> (K, B, outputs) logits.
        In training mode each model drops units with its own p, masks drawn from its own generator."""
        k = self.flat.shape[0]
        h = x.expand(k, *x.shape) if x.dim() == 2 else x
        layers = [piece.view(k, *shape) for piece, shape in zip(self.flat.split(self.sizes, dim=1), self.shapes)]
        for i in range(0, len(layers), 2):  # (K, out, in) weight, (K, out) bias
            h = torch.baddbmm(layers[i + 1].unsqueeze(1), h, layers[i].transpose(1, 2))
            if i + 2 < len(layers):  # a hidden layer
                h = self.activation(h)
                if self.training and self.with_dropout:
                    h = h * self.dropout_masks(*h.shape[1:]) / self.keep_scale
        return h

    def dropout_masks(self, rows: int, width: int) -> torch.Tensor:
        """(K, rows, width) bool: which units each model keeps, drawn from its own generator (all kept at p=0)."""
        device = self.flat.device
        gens = self.generators or [None] * len(self.dropout)
        return torch.stack([torch.rand((rows, width), generator=g, device=device) >= p if p > 0
                            else torch.ones((rows, width), dtype=torch.bool, device=device)
                            for p, g in zip(self.dropout, gens)])

    @staticmethod
    def row_of(state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        """One model's MLP state_dict as a (P,) row of `flat` (its parameters in order)."""
        return torch.cat([value.detach().reshape(-1) for value in state_dict.values()])

    def split_row(self, row: torch.Tensor) -> list[torch.Tensor]:
        """One model's (P,) row as its per-parameter tensors, in parameter order (torch.optim's state's layout)."""
        return [piece.view(shape) for piece, shape in zip(row.split(self.sizes), self.shapes)]

    def state_dict_of(self, row: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """A (P,) row (of `flat` or a snapshot of it) as one model's MLP state_dict (checkpoint.pt's format),
        under that model's parameter names (a dropout layer shifts them)."""
        return {name: piece.detach().clone() for name, piece in zip(names, self.split_row(row))}

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the models at `rows` (the others leave the stack)."""
        self.flat = nn.Parameter(self.flat.detach()[rows])
        self.keep_scale = self.keep_scale[rows]
        self.dropout = [self.dropout[r] for r in rows.tolist()]
        self.with_dropout = any(p > 0 for p in self.dropout)
        if self.generators is not None:
            self.generators = [self.generators[r] for r in rows.tolist()]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (dropout off) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
