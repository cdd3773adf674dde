"""The network: the lecture's worked perceptron, seeded initialisation, outputs that follow the loss."""

import math

import pytest
import torch

from nnrun import losses, models


def test_lecture_worked_perceptron_gives_sigma_of_minus_six():
    # w0 = 1, W = [3, -2], X = [-1, 2]: z = 1 + 3*(-1) + (-2)*2 = -6, y_hat = sigma(-6).
    perceptron = models.MLP(2, [], 1, "sigmoid", 0.0)
    with torch.no_grad():
        perceptron.output.weight.copy_(torch.tensor([[3.0, -2.0]]))
        perceptron.output.bias.fill_(1.0)
    y_hat = losses.LOSSES["bce"].proba(perceptron(torch.tensor([[-1.0, 2.0]])))[0, 1].item()
    assert y_hat == pytest.approx(1 / (1 + math.exp(6)), rel=1e-6)
    assert y_hat == pytest.approx(0.00247, abs=5e-6)


def test_perceptron_has_no_hidden_layer():
    assert len(models.MLP(2, [], 1, "relu", 0.0).linear_layers()) == 1
    assert [l.out_features for l in models.MLP(2, [8, 3], 1, "relu", 0.0).linear_layers()] == [8, 3, 1]


def test_same_seed_same_weights_different_seed_different():
    a = models.build(2, [4], 1, "relu", 0.0, None, seed=7)
    b = models.build(2, [4], 1, "relu", 0.0, None, seed=7)
    c = models.build(2, [4], 1, "relu", 0.0, None, seed=8)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_init_std_draws_normal_weights_and_zero_biases():
    model = models.build(200, [500], 1, "relu", 0.0, 0.1, seed=0)
    w = model.linear_layers()[0].weight
    assert w.std().item() == pytest.approx(0.1, rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=0.002)
    assert torch.count_nonzero(model.linear_layers()[0].bias) == 0


def test_default_init_is_uniform_within_one_over_sqrt_fan_in():
    w = models.build(16, [300], 1, "relu", 0.0, None, seed=0).linear_layers()[0].weight
    assert w.abs().max().item() <= 0.25
    assert w.abs().max().item() > 0.24  # fills the range


def test_dropout_follows_each_models_generator_and_is_off_in_eval():
    mlps = [models.build(2, [1000], 1, "relu", p, None, seed=0) for p in (0.5, 0.0, 0.2)]
    stack = models.StackedMLP(mlps)
    x = torch.ones(1, 1000)

    def masks(seed):
        stack.generators = [torch.Generator().manual_seed(seed + k) for k in range(3)]
        return stack.dropout_masks(4, 1000)

    first = masks(3)
    assert torch.equal(first, masks(3)) and not torch.equal(first, masks(4))
    assert first[1].all()  # p = 0 keeps every unit
    assert first[0].float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert first[2].float().mean().item() == pytest.approx(0.8, abs=0.05)
    # Model 0's masks are what its own generator draws, whatever the other models draw.
    alone = torch.rand((4, 1000), generator=torch.Generator().manual_seed(3)) >= 0.5
    assert torch.equal(first[0], alone)
    with torch.no_grad():
        stack.eval()
        assert torch.equal(stack(x[:, :2]), stack(x[:, :2]))  # no dropout in eval mode


@pytest.mark.parametrize("loss,classes,outputs", [("bce", 2, 1), ("mse", 2, 1), ("cross_entropy", 3, 3)])
def test_output_width_follows_the_loss(loss, classes, outputs):
    assert losses.LOSSES[loss].n_outputs(classes) == outputs


def test_mse_is_on_the_sigmoid_output():
    logits = torch.tensor([[0.0], [0.0]])
    assert losses.LOSSES["mse"].fn(logits, torch.tensor([1, 0])).item() == pytest.approx(0.25)


@pytest.mark.parametrize("training", [True, False])
def test_evaluating_turns_dropout_off_and_puts_the_mode_back_even_after_an_error(training):
    model = torch.nn.Dropout(0.5).train(training)
    x = torch.ones(1000)
    with models.evaluating(model) as same:
        assert same is model and not model.training and torch.equal(model(x), x)  # dropout off
    assert model.training is training
    with pytest.raises(RuntimeError), models.evaluating(model):
        raise RuntimeError("a picture failed")
    assert model.training is training
