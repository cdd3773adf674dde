"""The networks: a perceptron (no hidden layer) or an MLP of any widths, as a plain nn.Module.

Weights come from an explicit generator (not the global RNG) so a run's initial weights depend on its seed
alone, and so a stacked sweep can draw each model's weights exactly as its separate run would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATION_MODULES = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "linear": nn.Identity,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
}


class Dropout(nn.Module):
    """Inverted dropout whose masks come from `generator` (set by the engine), so they follow the run's seed."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """inputs -> [Linear -> activation -> Dropout] per hidden width -> Linear -> logits (or one output)."""

    def __init__(self, n_inputs: int, hidden: tuple[int, ...] | list[int], n_outputs: int,
                 activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        self.spec = {"n_inputs": n_inputs, "hidden": list(hidden), "n_outputs": n_outputs,
                     "activation": activation, "dropout": dropout}
        layers: list[nn.Module] = []
        width = n_inputs
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATION_MODULES[activation]()]
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = h
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, n_outputs)
        self.has_dropout = dropout > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.hidden if isinstance(m, nn.Linear)] + [self.output]

    def set_dropout_generator(self, generator: torch.Generator | None) -> None:
        for m in self.hidden:
            if isinstance(m, Dropout):
                m.generator = generator


def init_weights(model: MLP, init_std: float | None, generator: torch.Generator) -> None:
    """Draw every layer's weights from `generator`, layer by layer (weight, then bias).

    init_std=None: PyTorch's default for nn.Linear, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    init_std=s: weights ~ N(0, s^2), biases 0 (the lecture's "initialise with small random numbers").
    """
    with torch.no_grad():
        for layer in model.linear_layers():
            fan_out, fan_in = layer.weight.shape
            if init_std is None:
                bound = 1.0 / math.sqrt(fan_in)
                layer.weight.copy_(torch.rand(fan_out, fan_in, generator=generator) * (2 * bound) - bound)
                layer.bias.copy_(torch.rand(fan_out, generator=generator) * (2 * bound) - bound)
            else:
                layer.weight.copy_(torch.randn(fan_out, fan_in, generator=generator) * init_std)
                layer.bias.zero_()


def build(n_inputs: int, hidden, n_outputs: int, activation: str, dropout: float,
          init_std: float | None, seed: int) -> MLP:
    model = MLP(n_inputs, hidden, n_outputs, activation, dropout)
    init_weights(model, init_std, torch.Generator().manual_seed(seed))
    return model
