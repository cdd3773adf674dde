"""The optimizers of the lecture, by name: each YAML in conf/optimizer/ maps to one torch.optim class."""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch

from nnrun.config import OptimizerConfig


def spec(cfg: OptimizerConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The torch.optim class for `cfg` and the keyword arguments it is built with."""
    p = dict(cfg.params)
    wd = p.pop("weight_decay", 0.0)
    if cfg.name == "sgd":
        return torch.optim.SGD, dict(lr=cfg.lr, weight_decay=wd)
    if cfg.name == "momentum":
        return torch.optim.SGD, dict(lr=cfg.lr, momentum=p.get("momentum", 0.9),
                                     nesterov=p.get("nesterov", False), weight_decay=wd)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad, dict(lr=cfg.lr, lr_decay=p.get("lr_decay", 0.0), weight_decay=wd,
                                         initial_accumulator_value=p.get("initial_accumulator_value", 0.0),
                                         eps=p.get("eps", 1e-10))
    if cfg.name == "adadelta":
        return torch.optim.Adadelta, dict(lr=cfg.lr, rho=p.get("rho", 0.9), eps=p.get("eps", 1e-6),
                                          weight_decay=wd)
    if cfg.name == "adam":
        return torch.optim.Adam, dict(lr=cfg.lr, betas=tuple(p.get("betas", (0.9, 0.999))),
                                      eps=p.get("eps", 1e-8), weight_decay=wd)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop, dict(lr=cfg.lr, alpha=p.get("alpha", 0.99), eps=p.get("eps", 1e-8),
                                         momentum=p.get("momentum", 0.0), weight_decay=wd)
    raise KeyError(cfg.name)


def build(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    cls, kwargs = spec(cfg)
    return cls(params, **kwargs)


def param_group(cfg: OptimizerConfig) -> dict[str, Any]:
    """The param group (less "params") that `build` gives the optimizer: the class's defaults, then cfg's.

    Read from the constructor's signature, without building an optimizer: the first torch.optim optimizer
    of a process imports torch._dynamo (about 2 s), which a stacked sweep otherwise never needs.
    tests/test_vectorized_optim.py checks this equals the built optimizer's group.
    """
    cls, kwargs = spec(cfg)
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if name not in ("self", "params") and p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}
