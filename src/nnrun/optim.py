"""The lecture's optimizers, by name (conf/optimizer/), as update rules over a stack of K models.

`torch.optim` takes one learning rate per parameter group, so K models with K learning rates (a sweep) would
need K optimizers and K kernel launches per rule. Here each rule is written once over stacked (K, ...) tensors,
every per-model hyperparameter a (K, 1, ...) tensor broadcasting over its model's slice (a single run is a stack
of one), in `torch.optim`'s single-tensor order of operations, so each model's trajectory is the one `torch.optim`
would give it (tests/test_optim.py checks it). The numbers come from the param group `torch.optim` would make for
each model (`param_group`); state tensors use its names, so `state_dict_of(k, ...)` is model k's optimizer in
`torch.optim`'s `state_dict()` format (checkpoint.pt's), and `load_row` puts one back.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch

from nnrun.config import OptimizerConfig

# One model's row of a stacked tensor as its parameters (StackedMLP.split_row); by default one parameter already.
Split = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def spec(cfg: OptimizerConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The torch.optim class for `cfg` and its keyword arguments: conf/optimizer/'s keys are the class's."""
    return RULES[cfg.name].torch_class, {"lr": cfg.lr, **cfg.params}


def param_group(cfg: OptimizerConfig) -> dict[str, Any]:
    """The param group (less "params") torch.optim builds for `cfg`: the class's defaults, then cfg's. Read from
    the signature, not a built optimizer: the first torch.optim optimizer of a process imports torch._dynamo
    (about 2 s), which a stacked sweep otherwise never needs."""
    cls, kwargs = spec(cfg)
    defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
                if name not in ("self", "params") and p.default is not inspect.Parameter.empty}
    return {**defaults, **kwargs}


def numbers(group: dict) -> dict[str, float]:
    """A param group's numbers (Adam's betas as beta1 and beta2); its flags are code paths, not numbers."""
    group = {**group, **dict(zip(("beta1", "beta2"), group.get("betas", ())))}
    return {key: float(v) for key, v in group.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class StackedOptimizer:
    """Base: per-model hyperparameters as (K,) float64 tensors, state as stacked tensors, one shared step count
    (models leave the stack with their state, `keep`, so every model in it has taken the same number of steps).
    A rule's `update(p, grad, state, h)` reads its numbers from `h` (p's `views`, this step's `schedule` in it)."""

    torch_class: type[torch.optim.Optimizer]  # the torch.optim optimizer whose update rule this is
    counts_steps = True  # torch.optim keeps a "step" count in every rule's state but SGD's
    eager_state = False  # torch.optim makes the state when built (Adagrad), not at the first step
    zeros: tuple[str, ...] = ()  # the state tensors that start at zero
    # Steps whose per-step numbers (`schedule`) are computed at once: a dozen tiny float64 ops per step otherwise,
    # as much time as the update of a small network itself.
    BLOCK = 256

    def __init__(self, params: Sequence[torch.Tensor], groups: Sequence[dict]):
        rows = [numbers(g) for g in groups]
        hyper = {key: torch.tensor([row[key] for row in rows], dtype=torch.float64, device=params[0].device)
                 for key in rows[0]}
        # Numbers the rules use every step, computed once (in float64, as torch.optim's Python scalars).
        self.hyper = {**hyper, "-lr": -hyper["lr"], **{"1-" + key: 1 - value for key, value in hyper.items()}}
        self.any_weight_decay = bool((hyper["weight_decay"] != 0).any())
        # Momentum on or off, and Nesterov's, are code paths shared by the whole stack (see `structure`).
        self.with_momentum = rows[0].get("momentum", 0) > 0
        self.nesterov = bool(groups[0].get("nesterov", False))
        self.steps = 0
        self._use(params)
        self.state = [self.init_state(p, h) for p, h in zip(self.params, self.views)]

    def _use(self, params: Sequence[torch.Tensor]) -> None:
        """Step `params` from now on; each one's `hyper` as (K, 1, ...) tensors of its dtype (`views`)."""
        self.params = list(params)
        self.views = [{key: value.to(p.dtype).view(-1, *[1] * (p.dim() - 1)) for key, value in self.hyper.items()}
                      for p in self.params]
        self._block_first: int | None = None  # `schedule`'s numbers are made for steps first .. first + BLOCK - 1

    def init_state(self, p: torch.Tensor, h: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: torch.zeros_like(p) for name in self.zeros}

    def schedule(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The numbers a rule's step t uses that change with t (bias corrections, ...), for a (1, T) float64
        tensor of steps: name -> (K, T) float64, computed as torch.optim computes its Python scalars."""
        return {}

    def advance(self) -> None:
        """Step `steps` begins: `schedule`'s numbers for it into each parameter's `views`."""
        t = self.steps
        if self._block_first is None or not self._block_first <= t < self._block_first + self.BLOCK:
            block = self.schedule(torch.arange(t, t + self.BLOCK, dtype=torch.float64,
                                               device=self.hyper["lr"].device).view(1, -1))
            self._block_first = t  # each parameter's (T, K, 1, ...): one step's numbers are a view
            self._block = [{name: values.T.to(p.dtype).contiguous().view(self.BLOCK, -1, *[1] * (p.dim() - 1))
                            for name, values in block.items()} for p in self.params]
        for h, block in zip(self.views, self._block):
            for name, values in block.items():
                h[name] = values[t - self._block_first]

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        self.advance()
        for p, state, h in zip(self.params, self.state, self.views):
            # The L2 penalty grad + weight_decay * param, as torch.optim adds it before the rule.
            grad = p.grad.addcmul(p, h["weight_decay"]) if self.any_weight_decay else p.grad
            self.update(p, grad, state, h)

    def keep(self, rows: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Keep only the models at `rows` (their params now `params`); the others leave with their state."""
        self.hyper = {k: v[rows] for k, v in self.hyper.items()}
        self.state = [{k: v[rows] for k, v in s.items()} for s in self.state]
        self._use(params)

    def state_dict_of(self, row: int, group: dict, split: Split = lambda row: [row]) -> dict:
        """Model `row`'s optimizer as `torch.optim`'s `state_dict()` holds it (checkpoint.pt's format): its state
        per parameter index, and `group` (its param group, nnrun.optim.param_group) with the indices."""
        entries: list[dict[str, torch.Tensor]] = []
        for p, state in zip(self.params, self.state):
            pieces = {key: split(value[row]) for key, value in state.items()}
            entries += [{key: piece[i].detach().clone() for key, piece in pieces.items()}
                        for i in range(len(split(p[row])))]
        if self.counts_steps:  # a CPU float32 scalar tensor each, as torch.optim keeps it
            entries = [{"step": torch.tensor(float(self.steps)), **entry} for entry in entries]
        made = self.steps or self.eager_state  # plain SGD keeps no state
        return {"state": {i: entry for i, entry in enumerate(entries) if made and entry},
                "param_groups": [{**group, "params": list(range(len(entries)))}]}

    def load_row(self, row: int, saved: dict, split: Split = lambda row: [row]) -> None:
        """Put back model `row`'s optimizer state from `state_dict_of`'s format (what checkpoint.pt holds); every
        model of a stack has taken the same number of steps, which the saved state sets."""
        entries, stop = saved["state"], 0
        for p, state in zip(self.params, self.state):
            indices = range(stop, stop + len(split(p[row])))
            stop = indices.stop
            for key in {key for i in indices for key in entries.get(i, {}) if key != "step"}:
                if key not in state:  # made at the first step (SGD's momentum buffer)
                    state[key] = torch.zeros_like(p)
                state[key][row] = torch.cat([entries[i][key].reshape(-1) for i in indices]).view_as(state[key][row])
        self.steps = next((int(entry["step"]) for entry in entries.values() if "step" in entry), self.steps)


class SGD(StackedOptimizer):
    """Gradient descent, w <- w - lr * grad; with momentum (Polyak 1964) v <- mu * v + grad, w <- w - lr * v;
    Nesterov's variant (Sutskever et al. 2013) steps along grad + mu * v. Same as torch.optim.SGD, dampening 0."""

    torch_class = torch.optim.SGD
    counts_steps = False

    def update(self, p, grad, state, h):
        if self.with_momentum:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf = state["momentum_buffer"].mul_(h["momentum"]).add_(grad)
            grad = grad.addcmul(buf, h["momentum"]) if self.nesterov else buf
        p.addcmul_(grad, h["-lr"])


class Adagrad(StackedOptimizer):
    """Adagrad (Duchi, Hazan & Singer 2011): each weight's step shrinks with the sum of its squared gradients.
    sum <- sum + grad^2;  w <- w - clr * grad / (sqrt(sum) + eps),  clr = lr / (1 + (t - 1) * lr_decay)."""

    torch_class = torch.optim.Adagrad
    eager_state = True

    def init_state(self, p, h):
        return {"sum": torch.zeros_like(p).add_(h["initial_accumulator_value"])}

    def schedule(self, t):
        return {"-clr": -self.hyper["lr"].view(-1, 1) / (1 + (t - 1) * self.hyper["lr_decay"].view(-1, 1))}

    def update(self, p, grad, state, h):
        state["sum"].addcmul_(grad, grad)
        std = state["sum"].sqrt().add_(h["eps"])
        p.addcdiv_(grad * h["-clr"], std)


class Adadelta(StackedOptimizer):
    """Adadelta (Zeiler 2012): running averages of squared gradients and of squared updates set the step.
    E[g^2] <- rho E[g^2] + (1-rho) g^2;  d = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g;
    E[dx^2] <- rho E[dx^2] + (1-rho) d^2;  w <- w - lr * d."""

    torch_class = torch.optim.Adadelta
    zeros = ("square_avg", "acc_delta")

    def update(self, p, grad, state, h):
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(h["rho"]).addcmul_(grad * h["1-rho"], grad)
        std = square_avg.add(h["eps"]).sqrt_()
        delta = acc_delta.add(h["eps"]).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(h["rho"]).addcmul_(delta * h["1-rho"], delta)
        p.addcmul_(delta, h["-lr"])


class Adam(StackedOptimizer):
    """Adam (Kingma & Ba 2015): momentum on the gradient (m) and on its square (v), both bias-corrected.
    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  w <- w - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""

    torch_class = torch.optim.Adam
    zeros = ("exp_avg", "exp_avg_sq")

    def schedule(self, t):
        beta1, beta2 = self.hyper["beta1"].view(-1, 1), self.hyper["beta2"].view(-1, 1)
        return {"-step_size": -self.hyper["lr"].view(-1, 1) / (1 - beta1 ** t),
                "bias_correction2_sqrt": (1 - beta2 ** t) ** 0.5}

    def update(self, p, grad, state, h):
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, h["1-beta1"])
        exp_avg_sq.mul_(h["beta2"]).addcmul_(grad * h["1-beta2"], grad)
        denom = (exp_avg_sq.sqrt() / h["bias_correction2_sqrt"]).add_(h["eps"])
        p.addcdiv_(exp_avg * h["-step_size"], denom)


class RMSprop(StackedOptimizer):
    """RMSProp (Hinton 2012, lecture 6e): divide the step by a running root-mean-square of recent gradients.
    E[g^2] <- a E[g^2] + (1-a) g^2;  w <- w - lr * g / (sqrt(E[g^2]) + eps);  with momentum mu:
    v <- mu v + g / (sqrt(E[g^2]) + eps),  w <- w - lr * v."""

    torch_class = torch.optim.RMSprop

    def init_state(self, p, h):
        names = ("square_avg", "momentum_buffer") if self.with_momentum else ("square_avg",)
        return {name: torch.zeros_like(p) for name in names}

    def update(self, p, grad, state, h):
        square_avg = state["square_avg"]
        square_avg.mul_(h["alpha"]).addcmul_(grad * h["1-alpha"], grad)
        avg = square_avg.sqrt().add_(h["eps"])
        if self.with_momentum:
            buf = state["momentum_buffer"]
            buf.mul_(h["momentum"]).addcdiv_(grad, avg)
            p.addcmul_(buf, h["-lr"])
        else:
            p.addcdiv_(grad * h["-lr"], avg)


# What each name of conf/optimizer/ does: its stacked rule (momentum is SGD with a momentum buffer).
RULES: dict[str, type[StackedOptimizer]] = {
    "sgd": SGD, "momentum": SGD, "adagrad": Adagrad, "adadelta": Adadelta, "adam": Adam, "rmsprop": RMSprop,
}


def structure(name: str, params: dict) -> tuple:
    """What must be equal for two models to share one stacked optimizer: the rule and its code path."""
    return (name, bool(params.get("nesterov", False)), float(params.get("momentum", 0.0)) > 0)


def build(name: str, params: Sequence[torch.Tensor], groups: Sequence[dict]) -> StackedOptimizer:
    """The stacked rule `name` over `params`, model k's numbers from `groups[k]` (its param_group)."""
    return RULES[name](params, groups)
