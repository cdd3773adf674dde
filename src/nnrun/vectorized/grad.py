"""The stacked models' losses and gradient in one pass, the chain rule written out instead of autograd's graph.

For networks this small a training step's time goes to per-op overhead, and autograd (recording the graph, then
the engine walking it) is most of it. Here the forward pass keeps what the backward pass needs (each layer's
input, each hidden layer's pre-activation and activation), and the backward pass applies layer by layer the
local derivatives autograd's formulas use: for `baddbmm(b, h, W^T)`, dW = delta^T h, db = delta summed over the
batch, dh = delta W; for dropout, the same mask and scale; for the activations, ATen's own derivative kernels
(`aten.*_backward`, the ones autograd calls), so the conventions at kinks (relu'(0) = 0, leaky_relu'(0) =
negative_slope, ...) and each module's parameters are autograd's. The losses are the forward's own; the
gradient equals that of `STACKED_LOSSES[loss](net(x, keep), y).sum().backward()` to the last bit or two
(`tests/test_vectorized_grad.py` checks every activation, loss, dropout on and off, 0 to 2 hidden layers).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from nnrun.vectorized.model import STACKED_LOSSES, StackedMLP, float_targets

_aten = torch.ops.aten

# activation module -> (module, grad wrt its output, pre-activation z, output a) -> grad wrt z.
_ACTIVATION_BACKWARD: dict[type, Callable] = {
    nn.Identity: lambda m, grad, z, a: grad,
    nn.ReLU: lambda m, grad, z, a: _aten.threshold_backward.default(grad, a, 0),
    nn.Sigmoid: lambda m, grad, z, a: _aten.sigmoid_backward.default(grad, a),
    nn.Tanh: lambda m, grad, z, a: _aten.tanh_backward.default(grad, a),
    nn.LeakyReLU: lambda m, grad, z, a: _aten.leaky_relu_backward.default(grad, z, m.negative_slope, False),
    nn.ELU: lambda m, grad, z, a: _aten.elu_backward.default(grad, m.alpha, 1, 1, False, z),
    nn.GELU: lambda m, grad, z, a: _aten.gelu_backward.default(grad, z, approximate=m.approximate),
    nn.Softplus: lambda m, grad, z, a: _aten.softplus_backward.default(grad, z, m.beta, m.threshold),
}


# d(sum over models of each model's batch-mean loss)/d(logits): (K, B, outputs) logits, (K, B) or (B,) targets.
# Written in the order of autograd's formulas (mean's 1/B first, then the loss's own derivative), so the
# rounding is nearly theirs.
def _bce_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(logits) - float_targets(y, logits).unsqueeze(-1)).mul_(1.0 / logits.shape[1])


def _mse_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return _aten.sigmoid_backward.default((p - float_targets(y, logits).unsqueeze(-1)).mul_(2.0 / logits.shape[1]),
                                          p)


def _cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # (softmax - one_hot(y)) / B. Autograd's log_softmax backward rounds differently (exp(log_softmax), fused
    # with the subtraction): the two differ in the last bit.
    inv_b = 1.0 / logits.shape[1]
    target = y.expand(logits.shape[:2]).unsqueeze(-1)
    grad = torch.softmax(logits, -1).mul_(inv_b)
    neg = torch.full(target.shape, -inv_b, dtype=grad.dtype, device=grad.device)
    return grad.scatter_add_(-1, target, neg)


_LOSS_GRADS = {"bce": _bce_grad, "mse": _mse_grad, "cross_entropy": _cross_entropy_grad}


# The two products of a layer's backward, each the cheaper way round. MKL's batched gemm is several times
# slower when the product has one or two columns, which these layers often have (2 inputs, 1 output).
def _weight_grad(delta: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """delta^T h: (K, out, in), the weight's gradient; as (h^T delta)^T when the layer has fewer inputs."""
    if h.shape[-1] < delta.shape[-1]:
        return torch.bmm(h.transpose(1, 2), delta).transpose(1, 2)
    return torch.bmm(delta.transpose(1, 2), h)


def _input_grad(delta: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """delta W: (K, B, in), the layer input's gradient; with one output, an outer product (a broadcast multiply,
    the same single rounding as bmm's)."""
    if weight.shape[1] == 1:
        return delta * weight
    return torch.bmm(delta, weight)


def loss_and_grad(net: StackedMLP, x: torch.Tensor, y: torch.Tensor, loss_name: str,
                  keep: Sequence[torch.Tensor] | None = None, *, losses: bool = True) -> torch.Tensor | None:
    """Each model's batch-mean loss, (K,), as `STACKED_LOSSES[loss_name](net(x, keep), y)`; and sets
    `net.flat.grad` to d(sum of those losses)/d(net.flat), a new (K, P) tensor laid out as `flat`.

    x: (K, B, F) inputs (an expanded view of one (B, F) batch is fine); y: (K, B) or (B,) targets;
    keep: dropout masks as `StackedMLP.forward` takes them, or None. No autograd graph is built. Unlike
    `backward()`, the gradient replaces `flat.grad` rather than adding to it (the step zeroes it first anyway).
    With `losses=False` only the gradient is computed and None returned: the gradient needs the loss's
    derivative, not its value, and a step of a tiny network spends a quarter of its time on the value.
    """
    if torch.is_grad_enabled():  # the trainer steps under no_grad already: no context per step
        with torch.no_grad():
            return loss_and_grad(net, x, y, loss_name, keep, losses=losses)
    try:
        activation_backward = _ACTIVATION_BACKWARD[type(net.activation)]
        loss_grad = _LOSS_GRADS[loss_name]
    except KeyError as missing:
        raise ValueError(f"loss_and_grad has no derivative for {missing}") from None
    params = net.layers()
    linear = net.linear_views()
    n_layers = len(linear)

    # --- forward, as StackedMLP.forward, keeping each layer's input and each hidden layer's z and a ----------
    inputs, pre, post = [], [], []
    h = x
    for i, (bias, weight_t) in enumerate(linear):
        inputs.append(h)
        h = torch.baddbmm(bias, h, weight_t)
        if i < n_layers - 1:
            pre.append(h)
            h = net.activation(h)
            post.append(h)
            if keep is not None:
                h = h * keep[i] / net.keep_scale
    per_model = STACKED_LOSSES[loss_name](h, y) if losses else None

    # --- backward: delta = d(sum of losses)/d(this layer's output), from the last layer to the first ---------
    delta = loss_grad(h, y)
    grads = []  # the last layer's bias, its weight, ..., the first layer's weight: `flat`'s order reversed
    for i in reversed(range(n_layers)):
        grads += [delta.sum(1), _weight_grad(delta, inputs[i])]
        if i > 0:  # the gradient wrt the network's input x is not needed
            delta = _input_grad(delta, params[2 * i])
            if keep is not None:
                delta = delta / net.keep_scale * keep[i - 1]
            delta = activation_backward(net.activation, delta, pre[i - 1], post[i - 1])
    net.flat.grad = torch.cat([g.reshape(g.shape[0], -1) for g in reversed(grads)], 1)
    return per_model
