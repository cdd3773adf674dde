"""The update rules step each model of a stack exactly as torch.optim steps it alone (per-model numbers, state)."""

from __future__ import annotations

import pytest
import torch

from nnrun import optim
from nnrun.config import OptimizerConfig

# The module's tests on one xdist worker (addopts: --dist loadgroup): a process's first torch.optim optimizer
# imports torch._dynamo (about 2 s of CPU), and nnrun builds none, so only the worker running these pays it.
pytestmark = pytest.mark.xdist_group("torch_optim")

# Three models per rule, each with its own numbers (the weight decay of one of them 0).
CASES = {
    "sgd": [{"weight_decay": 0.0}, {"weight_decay": 0.01}, {"weight_decay": 0.1}],
    "momentum": [{"momentum": 0.9, "weight_decay": 0.0}, {"momentum": 0.5, "weight_decay": 0.01},
                 {"momentum": 0.99, "weight_decay": 0.0}],
    "momentum-nesterov": [{"momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
                          {"momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
                          {"momentum": 0.7, "nesterov": True, "weight_decay": 0.0}],
    "adagrad": [{"lr_decay": 0.0, "weight_decay": 0.0},
                {"lr_decay": 0.1, "initial_accumulator_value": 0.5, "weight_decay": 0.01},
                {"lr_decay": 0.01, "eps": 1e-3, "weight_decay": 0.0}],
    "adadelta": [{"rho": 0.9, "weight_decay": 0.0}, {"rho": 0.5, "eps": 1e-4, "weight_decay": 0.01},
                 {"rho": 0.99, "weight_decay": 0.0}],
    "adam": [{"betas": (0.9, 0.999), "weight_decay": 0.0}, {"betas": (0.5, 0.9), "eps": 1e-4, "weight_decay": 0.01},
             {"betas": (0.0, 0.99), "weight_decay": 0.0}],
    "rmsprop": [{"alpha": 0.99, "weight_decay": 0.0}, {"alpha": 0.5, "eps": 1e-4, "weight_decay": 0.01},
                {"alpha": 0.9, "weight_decay": 0.0}],
    "rmsprop-momentum": [{"alpha": 0.99, "momentum": 0.9, "weight_decay": 0.0},
                         {"alpha": 0.5, "momentum": 0.5, "weight_decay": 0.01},
                         {"alpha": 0.9, "momentum": 0.1, "weight_decay": 0.0}],
}
LRS = (0.1, 0.03, 0.5)


def torch_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """torch.optim's own optimizer for `cfg`: what each model's rule must equal."""
    cls, kwargs = optim.spec(cfg)
    return cls(params, **kwargs)


@pytest.mark.parametrize("block", [256, 4])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stacked_rule_steps_each_model_like_torch_optim(case, block, monkeypatch):
    # Per-step numbers (bias corrections, Adagrad's decayed lr) are computed `block` steps at a time: 6 steps
    # cross a block's end at 4.
    monkeypatch.setattr(optim.StackedOptimizer, "BLOCK", block)
    name = case.split("-")[0]
    configs = [OptimizerConfig(name=name, lr=lr, params=p) for lr, p in zip(LRS, CASES[case])]
    g = torch.Generator().manual_seed(0)
    shapes = [(4, 2), (4,), (1, 4), (1,)]  # an MLP 2-4-1: weight, bias, weight, bias
    singles = [[torch.randn(s, generator=g).requires_grad_() for s in shapes] for _ in configs]
    torch_opts = [torch_optimizer(params, cfg) for params, cfg in zip(singles, configs)]
    stacked = [torch.stack([m[i].detach() for m in singles]).requires_grad_() for i in range(len(shapes))]
    rule = optim.build(name, stacked, [optim.param_group(cfg) for cfg in configs])
    # Before any step, as after, model k's saved optimizer is its torch.optim optimizer's state_dict().
    for k, opt in enumerate(torch_opts):
        _assert_state_dicts_equal(rule.state_dict_of(k, optim.param_group(configs[k])), opt.state_dict())

    for _ in range(6):
        grads = [[torch.randn(s, generator=g) for s in shapes] for _ in configs]
        for params, opt, model_grads in zip(singles, torch_opts, grads):
            for p, grad in zip(params, model_grads):
                p.grad = grad.clone()
            opt.step()
        for i, p in enumerate(stacked):
            p.grad = torch.stack([model_grads[i] for model_grads in grads])
        rule.step()

    for k, params in enumerate(singles):
        for p, s in zip(params, stacked):
            torch.testing.assert_close(s[k], p.detach(), rtol=1e-6, atol=1e-6)
    for k, opt in enumerate(torch_opts):
        _assert_state_dicts_equal(rule.state_dict_of(k, optim.param_group(configs[k])), opt.state_dict())


def _assert_state_dicts_equal(ours: dict, expected: dict) -> None:
    """Equal as checkpoint.pt holds them: param groups, and per parameter the same state (values to 1e-6)."""
    assert ours["param_groups"] == expected["param_groups"]
    assert set(ours["state"]) == set(expected["state"])
    for i, entry in expected["state"].items():
        assert set(ours["state"][i]) == {key for key, v in entry.items() if v is not None}
        for key, v in ours["state"][i].items():
            assert v.dtype == entry[key].dtype and v.device == entry[key].device, key
            torch.testing.assert_close(v, entry[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_param_group_is_the_built_optimizers_without_building_one(case):
    name = case.split("-")[0]
    for lr, params in zip(LRS, CASES[case]):
        cfg = OptimizerConfig(name=name, lr=lr, params=params)
        built = torch_optimizer([torch.zeros(2, requires_grad=True)], cfg).param_groups[0]
        assert optim.param_group(cfg) == {key: value for key, value in built.items() if key != "params"}


def test_models_leaving_the_stack_take_their_numbers_and_state_with_them():
    configs = [OptimizerConfig(name="adam", lr=lr, params={"weight_decay": 0.0}) for lr in LRS]
    params = [torch.zeros(3, 2, requires_grad=True)]
    rule = optim.build("adam", params, [optim.param_group(c) for c in configs])
    params[0].grad = torch.ones(3, 2)
    rule.step()
    kept = [params[0].detach()[[0, 2]].clone().requires_grad_()]
    rule.keep(torch.tensor([0, 2]), kept)
    assert rule.hyper["lr"].tolist() == [LRS[0], LRS[2]]
    assert rule.state[0]["exp_avg"].shape == (2, 2)


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_models_left_in_the_stack_step_on_like_torch_optim(name, monkeypatch):
    """After models leave mid-block, the per-step numbers of the ones left are theirs."""
    monkeypatch.setattr(optim.StackedOptimizer, "BLOCK", 4)
    params = {"adam": {"betas": (0.5, 0.9), "weight_decay": 0.0}, "adagrad": {"lr_decay": 0.1, "weight_decay": 0.0}}
    configs = [OptimizerConfig(name=name, lr=lr, params=params[name]) for lr in LRS]
    g = torch.Generator().manual_seed(1)
    singles = [torch.randn(5, generator=g).requires_grad_() for _ in configs]
    torch_opts = [torch_optimizer([p], cfg) for p, cfg in zip(singles, configs)]
    stacked = [torch.stack([p.detach() for p in singles]).requires_grad_()]
    rule = optim.build(name, stacked, [optim.param_group(cfg) for cfg in configs])
    rows = [0, 1, 2]
    for step in range(10):
        if step == 3:
            rows = [0, 2]
            stacked = [stacked[0].detach()[[0, 2]].clone().requires_grad_()]
            rule.keep(torch.tensor([0, 2]), stacked)
        grads = torch.randn(3, 5, generator=g)
        for k in rows:
            singles[k].grad = grads[k].clone()
            torch_opts[k].step()
        stacked[0].grad = grads[rows]
        rule.step()
    for r, k in enumerate(rows):
        torch.testing.assert_close(stacked[0][r], singles[k].detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_models_saved_optimizer_state_loads_back_into_its_row(case):
    """`load_row` is `state_dict_of`'s inverse: a resumed run's optimizer goes on from its checkpoint's state."""
    name = case.split("-")[0]
    configs = [OptimizerConfig(name=name, lr=lr, params=p) for lr, p in zip(LRS, CASES[case])]
    groups = [optim.param_group(cfg) for cfg in configs]
    g = torch.Generator().manual_seed(2)
    sizes, shapes = [8, 4, 4, 1], [(4, 2), (4,), (1, 4), (1,)]

    def split(row):
        return [piece.view(shape) for piece, shape in zip(row.split(sizes), shapes)]

    flat = torch.randn(3, 17, generator=g).requires_grad_()
    rule = optim.build(name, [flat], groups)
    for _ in range(3):
        flat.grad = torch.randn(3, 17, generator=g)
        rule.step()
    saved = [rule.state_dict_of(k, groups[k], split) for k in range(3)]
    again = optim.build(name, [flat.detach().clone().requires_grad_()], groups)
    again.steps = rule.steps
    for k in (2, 0, 1):
        again.load_row(k, saved[k], split)
    for k in range(3):
        _assert_state_dicts_equal(again.state_dict_of(k, groups[k], split), saved[k])


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "adadelta", "adam", "rmsprop"])
def test_each_rules_numbers_are_its_conf_file(name):
    """conf/optimizer/<name>.yaml's numbers go to torch.optim as they are: no second default in code."""
    import yaml

    from conftest import parsed
    from nnrun.config import config_dir

    conf = yaml.safe_load((config_dir() / "optimizer" / f"{name}.yaml").read_text())
    group = optim.param_group(parsed([f"optimizer={name}"]).optimizer)
    assert {key: group[key] for key in conf if key != "name"} == \
        {key: tuple(v) if isinstance(v, list) else v for key, v in conf.items() if key != "name"}
