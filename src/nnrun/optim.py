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
    """The param group (less "params") torch.optim builds for `cfg`: the class's defaults, then cfg's.

    Read from the constructor's signature, without building an optimizer: the first torch.optim optimizer
    of a process imports torch._dynamo (about 2 s), which a stacked sweep otherwise never needs.
    """
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
    (models leave the stack with their state, `keep`, so every model in it has taken the same number of steps)."""

    torch_class: type[torch.optim.Optimizer]  # the torch.optim optimizer whose update rule this is
    counts_steps = True  # torch.optim keeps a "step" count in every rule's state but SGD's
    eager_state = False  # torch.optim makes the state when built (Adagrad), not at the first step
    zeros: tuple[str, ...] = ()  # the state tensors that start at zero
    # Steps whose per-step numbers (`schedule`) are computed at once: a dozen tiny float64 ops per step otherwise,
    # as much time as the update of a small network itself.
    BLOCK = 256

    def __init__(self, params: Sequence[torch.Tensor], groups: Sequence[dict]):
        self.params = list(params)
        rows = [numbers(g) for g in groups]
        hyper = {key: torch.tensor([row[key] for row in rows], dtype=torch.float64, device=self.params[0].device)
                 for key in rows[0]}
        # Numbers the rules use every step, computed once (in float64, as torch.optim's Python scalars).
        self.hyper = {**hyper, "-lr": -hyper["lr"], **{"1-" + key: 1 - value for key, value in hyper.items()}}
        self.any_weight_decay = bool((hyper["weight_decay"] != 0).any())
        # Momentum on or off, and Nesterov's, are code paths shared by the whole stack (see `structure`).
        self.with_momentum = rows[0].get("momentum", 0) > 0
        self.nesterov = bool(groups[0].get("nesterov", False))
        self._views: dict[tuple[str, int], torch.Tensor] = {}
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [self.init_state(p) for p in self.params]
        # `schedule`'s numbers for steps first .. first + BLOCK - 1, and as tensors of each params' dtype.
        self._block_first: int | None = None
        self._block: dict[str, torch.Tensor] = {}
        self._block_views: dict[tuple, dict[str, torch.Tensor]] = {}

    def init_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: torch.zeros_like(p) for name in self.zeros}

    def h(self, key: str, p: torch.Tensor) -> torch.Tensor:
        """Hyperparameter `key` as a (K, 1, ...) tensor of p's dtype, broadcasting over each model's slice."""
        view = self._views.get((key, p.dim()))
        if view is None:
            view = self._views[(key, p.dim())] = self.hyper[key].to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
        return view

    def schedule(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """The numbers a rule's step t uses that change with t (bias corrections, ...), for a (1, T) float64
        tensor of steps: name -> (K, T) float64, computed as torch.optim computes its Python scalars."""
        return {}

    def at_step(self, t: int, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """`schedule`'s numbers for step t (1-based) as (K, 1, ...) tensors of p's dtype, broadcastable."""
        if self._block_first is None or not self._block_first <= t < self._block_first + self.BLOCK:
            steps = torch.arange(t, t + self.BLOCK, dtype=torch.float64, device=self.hyper["lr"].device)
            self._block_first, self._block = t, self.schedule(steps.view(1, -1))
            self._block_views.clear()
        views = self._block_views.get((p.dtype, p.dim()))
        if views is None:  # (T, K, 1, ...): one step's numbers are a view
            views = self._block_views[(p.dtype, p.dim())] = {
                name: values.T.to(p.dtype).contiguous().view(self.BLOCK, -1, *([1] * (p.dim() - 1)))
                for name, values in self._block.items()}
        return {name: values[t - self._block_first] for name, values in views.items()}

    def step(self) -> None:
        if torch.is_grad_enabled():  # the trainer steps under no_grad already: no context per step
            with torch.no_grad():
                return self.step()
        self.steps += 1
        for p, state in zip(self.params, self.state):
            # The L2 penalty grad + weight_decay * param, as torch.optim adds it before the rule.
            grad = p.grad.addcmul(p, self.h("weight_decay", p)) if self.any_weight_decay else p.grad
            self.update(p, grad, state)

    def update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def keep(self, rows: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Keep only the models at `rows` (their params now `params`); the others leave with their state."""
        self.params = list(params)
        self.hyper = {k: v[rows] for k, v in self.hyper.items()}
        self.state = [{k: v[rows] for k, v in s.items()} for s in self.state]
        self._views.clear()
        self._block_first = None

    def state_dict_of(self, row: int, group: dict, split: Split = lambda row: [row]) -> dict:
        """Model `row`'s optimizer as `torch.optim`'s `state_dict()` holds it (checkpoint.pt's format): its state
        per parameter index, and `group` (its param group, nnrun.optim.param_group) with the indices."""
        entries: list[dict[str, torch.Tensor]] = []
        for p, state in zip(self.params, self.state):
            pieces = {key: split(value[row]) for key, value in state.items()}
            entries += [{key: piece[i].detach().clone() for key, piece in pieces.items()}
                        for i in range(len(split(p[row])))]
        by_index = {}
        for index, entry in enumerate(entries if self.steps or self.eager_state else []):
            if self.counts_steps:  # a CPU float32 scalar tensor, as torch.optim keeps it
                entry = {"step": torch.tensor(float(self.steps)), **entry}
            if entry:  # plain SGD keeps no state
                by_index[index] = entry
        return {"state": by_index, "param_groups": [{**group, "params": list(range(len(entries)))}]}

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

    def update(self, p, grad, state):
        if self.with_momentum:
            momentum = self.h("momentum", p)
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf = state["momentum_buffer"].mul_(momentum).add_(grad)
            grad = grad.addcmul(buf, momentum) if self.nesterov else buf
        p.addcmul_(grad, self.h("-lr", p))


class Adagrad(StackedOptimizer):
    """Adagrad (Duchi, Hazan & Singer 2011): each weight's step shrinks with the sum of its squared gradients.
    sum <- sum + grad^2;  w <- w - clr * grad / (sqrt(sum) + eps),  clr = lr / (1 + (t - 1) * lr_decay)."""

    torch_class = torch.optim.Adagrad
    eager_state = True

    def init_state(self, p):
        return {"sum": torch.zeros_like(p).add_(self.h("initial_accumulator_value", p))}

    def schedule(self, t):
        return {"-clr": -self.hyper["lr"].view(-1, 1) / (1 + (t - 1) * self.hyper["lr_decay"].view(-1, 1))}

    def update(self, p, grad, state):
        state["sum"].addcmul_(grad, grad)
        std = state["sum"].sqrt().add_(self.h("eps", p))
        p.addcdiv_(grad * self.at_step(self.steps, p)["-clr"], std)


class Adadelta(StackedOptimizer):
    """Adadelta (Zeiler 2012): running averages of squared gradients and of squared updates set the step.
    E[g^2] <- rho E[g^2] + (1-rho) g^2;  d = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g;
    E[dx^2] <- rho E[dx^2] + (1-rho) d^2;  w <- w - lr * d."""

    torch_class = torch.optim.Adadelta
    zeros = ("square_avg", "acc_delta")

    def update(self, p, grad, state):
        rho, eps = self.h("rho", p), self.h("eps", p)
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg.mul_(rho).addcmul_(grad * self.h("1-rho", p), grad)
        std = square_avg.add(eps).sqrt_()
        delta = acc_delta.add(eps).sqrt_()
        delta.div_(std).mul_(grad)
        acc_delta.mul_(rho).addcmul_(delta * self.h("1-rho", p), delta)
        p.addcmul_(delta, self.h("-lr", p))


class Adam(StackedOptimizer):
    """Adam (Kingma & Ba 2015): momentum on the gradient (m) and on its square (v), both bias-corrected.
    m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  w <- w - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""

    torch_class = torch.optim.Adam
    zeros = ("exp_avg", "exp_avg_sq")

    def schedule(self, t):
        beta1, beta2 = self.hyper["beta1"].view(-1, 1), self.hyper["beta2"].view(-1, 1)
        return {"-step_size": -self.hyper["lr"].view(-1, 1) / (1 - beta1 ** t),
                "bias_correction2_sqrt": (1 - beta2 ** t) ** 0.5}

    def update(self, p, grad, state):
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        now = self.at_step(self.steps, p)
        exp_avg.lerp_(grad, self.h("1-beta1", p))
        exp_avg_sq.mul_(self.h("beta2", p)).addcmul_(grad * self.h("1-beta2", p), grad)
        denom = (exp_avg_sq.sqrt() / now["bias_correction2_sqrt"]).add_(self.h("eps", p))
        p.addcdiv_(exp_avg * now["-step_size"], denom)


class RMSprop(StackedOptimizer):
    """RMSProp (Hinton 2012, lecture 6e): divide the step by a running root-mean-square of recent gradients.
    E[g^2] <- a E[g^2] + (1-a) g^2;  w <- w - lr * g / (sqrt(E[g^2]) + eps);  with momentum mu:
    v <- mu v + g / (sqrt(E[g^2]) + eps),  w <- w - lr * v."""

    torch_class = torch.optim.RMSprop

    def init_state(self, p):
        state = {"square_avg": torch.zeros_like(p)}
        if self.with_momentum:
            state["momentum_buffer"] = torch.zeros_like(p)
        return state

    def update(self, p, grad, state):
        square_avg = state["square_avg"]
        square_avg.mul_(self.h("alpha", p)).addcmul_(grad * self.h("1-alpha", p), grad)
        avg = square_avg.sqrt().add_(self.h("eps", p))
        if self.with_momentum:
            buf = state["momentum_buffer"]
            buf.mul_(self.h("momentum", p)).addcdiv_(grad, avg)
            p.addcmul_(buf, self.h("-lr", p))
        else:
            p.addcdiv_(grad * self.h("-lr", p), avg)


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
