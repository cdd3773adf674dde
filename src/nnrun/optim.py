"""The optimizers of the lecture, by name: each YAML in conf/optimizer/ maps to one torch.optim class."""

from __future__ import annotations

from typing import Iterable

import torch

from nnrun.config import OptimizerConfig


def build(params: Iterable[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    p = dict(cfg.params)
    wd = p.pop("weight_decay", 0.0)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
    if cfg.name == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=p.get("momentum", 0.9),
                               nesterov=p.get("nesterov", False), weight_decay=wd)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, lr_decay=p.get("lr_decay", 0.0), weight_decay=wd,
                                   initial_accumulator_value=p.get("initial_accumulator_value", 0.0),
                                   eps=p.get("eps", 1e-10))
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=p.get("rho", 0.9), eps=p.get("eps", 1e-6),
                                    weight_decay=wd)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(p.get("betas", (0.9, 0.999))),
                                eps=p.get("eps", 1e-8), weight_decay=wd)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=p.get("alpha", 0.99), eps=p.get("eps", 1e-8),
                                   momentum=p.get("momentum", 0.0), weight_decay=wd)
    raise KeyError(cfg.name)
