"""The hand-written backward (`vectorized.grad.loss_and_grad`) gives autograd's losses and gradient."""

from __future__ import annotations

import pytest
import torch

from nnrun.models import ACTIVATION_MODULES, build
from nnrun.vectorized.grad import loss_and_grad
from nnrun.vectorized.model import STACKED_LOSSES, StackedMLP

K, B, N_INPUTS = 3, 7, 2
HIDDEN = [[], [4], [8, 5]]
# float32: the gradients agree to the last bit or two (bce and mse bit for bit; cross_entropy's softmax rounds
# differently from autograd's exp(log_softmax)). The losses are the forward's own, so equal.
GRAD_TOL = {"rtol": 1e-5, "atol": 1e-6}


def stack(activation: str, loss: str, hidden: list[int], dropout: bool, seed: int = 0) -> StackedMLP:
    n_outputs = 3 if loss == "cross_entropy" else 1
    rates = [0.0, 0.3, 0.5] if dropout else [0.0] * K
    return StackedMLP([build(N_INPUTS, hidden, n_outputs, activation, rates[k], None, seed + k)
                       for k in range(K)], activation)


def batch(net: StackedMLP, loss: str, hidden: list[int], dropout: bool, shared: bool, g: torch.Generator):
    """Inputs, targets and dropout masks: per-model rows and (K, B) targets, or one batch expanded to all
    models with (B,) targets (a full-batch step)."""
    n_classes = 3 if loss == "cross_entropy" else 2
    if shared:
        x = torch.randn(B, N_INPUTS, generator=g).expand(K, B, N_INPUTS)
        y = torch.randint(0, n_classes, (B,), generator=g)
    else:
        x = torch.randn(K, B, N_INPUTS, generator=g)
        y = torch.randint(0, n_classes, (K, B), generator=g)
    keep = [torch.rand(K, B, width, generator=g) >= net.dropout.view(-1, 1, 1) for width in hidden]
    return x, y, keep if dropout else None


def by_autograd(net: StackedMLP, x, y, loss: str, keep) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainer's way: forward, per-model losses, their sum's backward."""
    net.flat.grad = None
    per_model = STACKED_LOSSES[loss](net(x, keep), y)
    per_model.sum().backward()
    grad, net.flat.grad = net.flat.grad, None
    return per_model.detach(), grad


def by_hand(net: StackedMLP, x, y, loss: str, keep) -> tuple[torch.Tensor, torch.Tensor]:
    net.flat.grad = None
    per_model = loss_and_grad(net, x, y, loss, keep)
    grad, net.flat.grad = net.flat.grad, None
    return per_model, grad


def assert_same(net: StackedMLP, loss: str, x, y, keep) -> None:
    want_loss, want_grad = by_autograd(net, x, y, loss, keep)
    got_loss, got_grad = by_hand(net, x, y, loss, keep)
    torch.testing.assert_close(got_loss, want_loss, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, want_grad, **GRAD_TOL)


@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda h: f"hidden{h}")
@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("loss", list(STACKED_LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATION_MODULES))
def test_loss_and_grad_equal_autograds(activation, loss, dropout, hidden):
    net = stack(activation, loss, hidden, dropout)
    g = torch.Generator().manual_seed(1)
    for shared in (False, True):
        assert_same(net, loss, *batch(net, loss, hidden, dropout, shared, g))


@pytest.mark.parametrize("activation", list(ACTIVATION_MODULES))
def test_kinks_at_zero_follow_autograds_convention(activation):
    """Pre-activations exactly 0 (relu'(0) = 0, leaky_relu'(0) = negative_slope, ...): whole units (weights and
    bias 0) in every hidden layer, and one input row of zeros where a unit's bias is 0."""
    for hidden in HIDDEN[1:]:
        for dropout in (False, True):
            net = stack(activation, "bce", hidden, dropout)
            params = net.layers()
            with torch.no_grad():
                for i in range(len(hidden)):
                    params[2 * i][:, 0] = 0.0  # unit 0: z = 0 for every input
                    params[2 * i + 1][:, 0] = 0.0
                params[1][:, 1] = 0.0  # first layer's unit 1: z = 0 where the input is 0
            x, y, keep = batch(net, "bce", hidden, dropout, False, torch.Generator().manual_seed(2))
            x[:, 0] = 0.0
            assert_same(net, "bce", x, y, keep)
            if activation == "relu":
                _, grad = by_hand(net, x, y, "bce", keep)
                first_weight, first_bias = net.layers(grad)[:2]
                assert (first_weight[:, 0] == 0).all() and (first_bias[:, 0] == 0).all()


@pytest.mark.parametrize("activation, loss, hidden, dropout", [
    ("relu", "bce", [8, 5], True), ("tanh", "cross_entropy", [8], False), ("gelu", "mse", [4], True),
    ("sigmoid", "bce", [], False)], ids=["relu-bce-8-5-dropout", "tanh-ce-8", "gelu-mse-4-dropout", "perceptron"])
def test_training_trajectories_equal_autograds(activation, loss, hidden, dropout):
    """300 steps of SGD with momentum, mini-batches and dropout masks drawn alike for both paths. The learning
    rates keep training stable: where it is chaotic (lr 0.3 here), a last-bit difference (cross_entropy's) grows
    as any change in rounding would."""
    nets = [stack(activation, loss, hidden, dropout, seed=5) for _ in range(2)]
    g = torch.Generator().manual_seed(3)
    n_classes = 3 if loss == "cross_entropy" else 2
    data_x = torch.randn(40, N_INPUTS, generator=g)
    data_y = torch.randint(0, n_classes, (40,), generator=g)
    lr = torch.tensor([0.02, 0.05, 0.1]).view(K, 1)
    velocity = [torch.zeros_like(net.flat) for net in nets]
    for _ in range(300):
        idx = torch.randint(0, 40, (K, B), generator=g)  # each model its own mini-batch
        keep = [torch.rand(K, B, width, generator=g) >= nets[0].dropout.view(-1, 1, 1) for width in hidden]
        keep = keep if dropout else None
        losses = []
        for net, path, v in zip(nets, (by_autograd, by_hand), velocity):
            per_model, grad = path(net, data_x[idx], data_y[idx], loss, keep)
            losses.append(per_model)
            with torch.no_grad():
                v.mul_(0.9).add_(grad)
                net.flat.sub_(lr * v)
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nets[1].flat, nets[0].flat, rtol=1e-5, atol=1e-5)
    assert not torch.equal(nets[0].flat, stack(activation, loss, hidden, dropout, seed=5).flat)  # it trained


def test_leaves_no_graph_and_replaces_the_gradient():
    net = stack("relu", "bce", [4], False)
    x, y, _ = batch(net, "bce", [4], False, False, torch.Generator().manual_seed(4))
    net.flat.grad = torch.full_like(net.flat, 7.0)
    per_model = loss_and_grad(net, x, y, "bce")
    assert per_model.shape == (K,) and per_model.grad_fn is None and not per_model.requires_grad
    assert net.flat.grad.shape == net.flat.shape and net.flat.grad.grad_fn is None
    got = net.flat.grad  # replaced, not added to the 7s
    _, want = by_autograd(net, x, y, "bce", None)
    torch.testing.assert_close(got, want, **GRAD_TOL)


@pytest.mark.parametrize("loss", list(STACKED_LOSSES))
def test_without_losses_the_gradient_is_the_same(loss):
    """`losses=False` (the trainer's steps unless train.log_steps) skips the loss values, not the gradient."""
    for dropout in (False, True):
        net = stack("tanh", loss, [4, 3], dropout)
        x, y, keep = batch(net, loss, [4, 3], dropout, False, torch.Generator().manual_seed(6))
        _, want = by_hand(net, x, y, loss, keep)
        assert loss_and_grad(net, x, y, loss, keep, losses=False) is None
        assert torch.equal(net.flat.grad, want)


def test_unknown_loss_or_activation_is_refused():
    net = stack("relu", "bce", [4], False)
    x, y, _ = batch(net, "bce", [4], False, False, torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="hinge"):
        loss_and_grad(net, x, y, "hinge")
    net.activation = torch.nn.SiLU()
    with pytest.raises(ValueError, match="SiLU"):
        loss_and_grad(net, x, y, "bce")
