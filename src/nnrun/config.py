"""The config schema: typed dataclasses, validated once at the edge from Hydra's composed DictConfig.

A bad value raises `ConfigError`, which the CLI prints as one line (key, value, what is allowed) and exits 2. The
values are written once, in conf/: its files are the defaults and the choices, and `parse` requires every key.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import math
import sys
from dataclasses import asdict, dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Mapping, NoReturn

DEVICES = ("auto", "cpu", "cuda")
MONITORS = ("loss/val", "loss/train", "accuracy/val", "accuracy/train")


def config_dir() -> Path:
    """conf/ inside the installed wheel, else the repository's top-level conf/ (an editable install)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


@cache
def config_groups() -> dict[str, tuple[str, ...]]:
    """Each config group under conf/ and its choices, sorted: the one list of nnrun's datasets, losses, ..."""
    return {g.name: tuple(sorted(p.stem for p in g.glob("*.yaml")))
            for g in sorted(config_dir().iterdir()) if g.is_dir()}


@cache
def choice_keys(group: str) -> dict[str, frozenset[str]]:
    """Each choice of `group` and the keys its file sets (spirals has `classes`, csv `path` and `target`)."""
    import yaml  # not for `nnrun predict --help`, which imports this module

    return {choice: frozenset(yaml.safe_load((config_dir() / group / f"{choice}.yaml").read_text("utf-8")) or ())
            for choice in config_groups()[group]}


def defaults_list(path: Path) -> list[tuple[str, str]]:
    """(group, choice) of each group a config file's defaults list chooses, as `hydra/launcher` or `dataset`."""
    import yaml

    entries = (yaml.safe_load(path.read_text("utf-8")) or {}).get("defaults") or []
    # `override /hydra/sweeper@pkg: optuna` and `optional dataset: x` name the groups hydra/sweeper and dataset.
    return [(key.split()[-1].lstrip("/").split("@")[0], str(choice))
            for entry in entries if isinstance(entry, dict) for key, choice in entry.items()]


def default_groups() -> set[str]:
    """The groups conf/train.yaml chooses: `group=choice` overrides them; any other group is added, `+group=choice`."""
    return {group for group, _ in defaults_list(config_dir() / "train.yaml") if not group.startswith("hydra/")}


Check = Callable[[str, Any], Any]  # (dotted key, value) -> the value as nnrun uses it, or ConfigError


class ConfigError(ValueError):
    """A config value that nnrun cannot use; its message is the one line the user sees."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)} is not allowed: {allowed}")


class UsageError(ConfigError):
    """Bad input that is no one key's value (a command line nnrun cannot use), with its own one-line message."""

    def __init__(self, message: str):
        self.key, self.value, self.allowed = "", None, message
        ValueError.__init__(self, message)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message that says something (else its type's name): one line of it."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser of `nnrun predict` and `nnrun report`, its bad input one line and exit 2, as `nnrun
    train`'s: 'nnrun: error: predict: the following arguments are required: ...'."""

    def error(self, message: str) -> NoReturn:
        print(f"nnrun: error: {self.prog.removeprefix('nnrun ')}: {message} (see {self.prog} --help)",
              file=sys.stderr)
        sys.exit(2)


def sampled_range(line: str) -> UsageError:
    """The error for a range to sample (interval(), a tagged range) given to a sweeper that runs lists of values."""
    return UsageError(f"{line} is a range to sample: nnrun's sweeper (and Hydra's basic one) runs lists of values "
                      "(a,b,c, range(), glob()); a sweeper that samples takes ranges, such as hydra/sweeper=optuna")


def _show(value: Any) -> str:
    """A value as it is typed on the command line: 'adam', [4,4], null, true."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_show, value)) + "]"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, str) else str(value)


def _did_you_mean(names: list[str]) -> str:
    listed = ", ".join(map(repr, names))
    return "" if not names else f"; did you mean {listed}?" if len(names) == 1 else f"; did you mean one of {listed}?"


def closest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """'; did you mean X?' for the nearest choice, or '' when nothing is near; case aside (RELU: relu)."""
    by_lower = {choice.lower(): choice for choice in reversed(list(choices))}  # the first of choices alike in case
    return _did_you_mean([by_lower[m] for m in difflib.get_close_matches(str(word).lower(), list(by_lower), n=1)])


def one_of(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, value, f"one of {', '.join(choices)}{closest(value, choices)}")
    return value


def integer(key: str, value: Any, *, minimum: int) -> int:
    # bool is an int subclass; `epochs=true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(key, value, "an integer")
    if value < minimum:
        raise ConfigError(key, int(value), f"an integer >= {minimum}")
    return int(value)


def real(key: str, value: Any, *, low_open: bool = False, below_one: bool = False) -> float:
    """A finite number >= 0; > 0 with `low_open`; in [0, 1) with `below_one`."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value):
        raise ConfigError(key, value, "a finite number" if number else "a number")
    value = float(value)
    if value < 0 or (low_open and value == 0) or (below_one and value >= 1):
        raise ConfigError(key, value, "a number in [0, 1)" if below_one else f"a number {'>' if low_open else '>='} 0")
    return value


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset's keys; one that this dataset's file under conf/dataset/ does not set is None."""

    name: str
    val_fraction: float
    test_fraction: float
    seed: int
    n_samples: int | None = None
    noise: float | None = None
    classes: int | None = None
    path: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...]
    dropout: float
    init_std: float | None


@dataclass(frozen=True)
class OptimizerConfig:
    """`name` picks the update rule; `params` holds that rule's own fields (weight_decay, betas, momentum, ...)."""

    name: str
    lr: float
    params: Mapping[str, Any]


def maximized(monitor: str) -> bool:
    """Whether a larger `monitor` is better: accuracies are maximised, losses minimised."""
    return monitor.startswith("accuracy/")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int | None
    min_delta: float
    monitor: str
    restore_best: bool

    @property
    def maximize(self) -> bool:
        return maximized(self.monitor)


@dataclass(frozen=True)
class TrainLoopConfig:
    epochs: int
    batch_size: int | None
    log_every: int
    image_every: int | None
    log_steps: bool
    landscape: bool
    checkpoint_every: int | None
    resume: str | None
    early_stopping: EarlyStoppingConfig


@dataclass(frozen=True)
class TrainConfig:
    exp_name: str
    seed: int
    device: str
    threads: int
    dataset: DatasetConfig
    model: ModelConfig
    activation: str
    loss: str
    optimizer: OptimizerConfig
    train: TrainLoopConfig

    def to_dict(self) -> dict[str, Any]:
        """The config as plain containers, a new tree at each call copied from one made once (`asdict` deep-copies
        every value, and a run's checkpoint, its HParams and a sweep's batching each ask for it)."""
        if "_tree" not in self.__dict__:
            object.__setattr__(self, "_tree", asdict(self))  # frozen: kept beside the fields (not one of them)
        return copy.deepcopy(self.__dict__["_tree"])

    def hparams(self) -> dict[str, Any]:
        """The config flat, its keys as a user sets them (optimizer.betas, not optimizer.params.betas), for the
        HParams table; a dataset's keys only where its file under conf/dataset/ sets them (csv's target: null is
        its last column; xor has no target)."""
        tree = self.to_dict()
        params = tree["optimizer"].pop("params")
        tree["optimizer"].update(params)
        own = choice_keys("dataset").get(self.dataset.name, frozenset(tree["dataset"]))
        tree["dataset"] = {key: value for key, value in tree["dataset"].items() if key in own or key == "name"}
        return flatten(tree)


def _optional(check: Check) -> Check:
    return lambda key, value: None if value is None else check(key, value)


def _choice(group: str) -> Check:
    return lambda key, value: one_of(key, value, config_groups()[group])


_natural, _positive, _two_or_more = (partial(integer, minimum=n) for n in (0, 1, 2))
_non_negative, _above_zero, _below_one = real, partial(real, low_open=True), partial(real, below_one=True)


def _text(key: str, value: Any) -> str:
    """A name or a path: one value (a number as its text)."""
    if value is None or isinstance(value, (bool, list, tuple, Mapping)):
        raise ConfigError(key, value, "a name or a path")
    return str(value)


def _exp_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or value.startswith("."):
        raise ConfigError(key, value, "a non-empty name without '/'")
    return value


def _csv_path(key: str, value: Any) -> str:
    if not isinstance(value, str) or value == "???":
        raise ConfigError(key, value, "the path of a CSV file (dataset.path=my.csv)")
    return value


def _widths(key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, value, "a list of layer widths, e.g. [4] or [32,32] ([] = perceptron)")
    return tuple(integer(f"{key}[{i}]", w, minimum=1) for i, w in enumerate(value))


def _betas(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(key, value, "a pair [beta1, beta2], each in [0, 1)")
    return tuple(_below_one(f"{key}[{i}]", b) for i, b in enumerate(value))


# How each key of the schema is checked, by its dotted path. The values themselves (defaults) are in conf/, and
# which dataset and which update rule has which key is what its file there sets (`section_keys`).
CHECKS: dict[str, Check] = {
    "exp_name": _exp_name, "seed": _natural, "device": partial(one_of, choices=DEVICES), "threads": _positive,
    "dataset.name": _choice("dataset"), "dataset.n_samples": _two_or_more, "dataset.noise": _non_negative,
    "dataset.classes": _two_or_more, "dataset.val_fraction": _below_one, "dataset.test_fraction": _below_one,
    "dataset.seed": _natural, "dataset.path": _csv_path, "dataset.target": _optional(_text),
    "model.hidden": _widths, "model.dropout": _below_one, "model.init_std": _optional(_non_negative),
    "activation.name": _choice("activation"),
    "loss.name": _choice("loss"),
    "optimizer.name": _choice("optimizer"), "optimizer.lr": _above_zero, "optimizer.weight_decay": _non_negative,
    "optimizer.momentum": _below_one, "optimizer.nesterov": boolean, "optimizer.lr_decay": _non_negative,
    "optimizer.initial_accumulator_value": _non_negative, "optimizer.eps": _above_zero,
    "optimizer.rho": _below_one, "optimizer.betas": _betas, "optimizer.alpha": _below_one,
    "train.epochs": _positive, "train.batch_size": _optional(_positive), "train.log_every": _positive,
    "train.image_every": _optional(_natural), "train.log_steps": boolean, "train.landscape": boolean,
    "train.checkpoint_every": _optional(_positive), "train.resume": _optional(_text),
    "train.early_stopping.patience": _optional(_positive), "train.early_stopping.min_delta": _non_negative,
    "train.early_stopping.monitor": partial(one_of, choices=MONITORS), "train.early_stopping.restore_best": boolean,
}


def _sections() -> dict[str, list[str]]:
    """Each section of the schema by dotted path ("" = the top level) and its keys, subsections among them."""
    sections: dict[str, dict[str, None]] = {}
    for parts in (path.split(".") for path in CHECKS):
        for depth, part in enumerate(parts):
            sections.setdefault(".".join(parts[:depth]), {})[part] = None
    return {section: list(keys) for section, keys in sections.items()}


SECTIONS = _sections()


def section_keys(path: str, cfg: Mapping[str, Any]) -> list[str] | None:
    """The keys section `path` of `cfg` has in the schema (None where `path` is no section of it). A config
    group's are those its file under conf/ sets: the chosen one's (by `name`), until that is known any one's."""
    if path not in SECTIONS or path not in config_groups():
        return SECTIONS.get(path)
    files, name = choice_keys(path), _select(cfg, f"{path}.name")
    keys = files[name] if isinstance(name, str) and name in files else frozenset().union(*files.values())
    return [key for key in SECTIONS[path] if key in keys]


def _select(cfg: Any, path: str) -> Any:
    """The value at dotted `path` of a config (plain containers), or None where there is none."""
    for part in path.split(".") if path else ():
        if not isinstance(cfg, Mapping) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def unknown_key(key: str, value: Any, section: str, known: Collection[str], cfg: Mapping[str, Any]) -> ConfigError:
    """The error for `key`, which `section` ("" = top level) lacks: the keys it has, and the nearest; a key of
    another dataset (optimizer) names those that have it."""
    leaf = key.split(".")[section.count(".") + 1 if section else 0]  # the part of `key` that `section` lacks
    if section.split(".")[0] == "hydra":
        return ConfigError(key, value, f"Hydra has no setting {section}.{leaf} (nnrun train --cfg hydra shows "
                                       f"them){closest(leaf, sorted(known))}")
    hint, where = nearest_key(key, leaf, known, cfg), section or "the config"
    owners = [c for c, keys in choice_keys(section).items() if leaf in keys] if section in config_groups() else []
    if owners:
        where = f"{section}={_select(cfg, f'{section}.name')}"
        hint = f"; {leaf} is a field of {section}={', '.join(owners)}"
    return ConfigError(key, value, f"no such key in {where} (known: {', '.join(sorted(known))}){hint}")


def not_a_section(path: str, value: Any) -> ConfigError:
    """The error for one value given where the schema has a section of keys (a config group: its choice)."""
    groups = config_groups()
    if path in groups:
        return ConfigError(path, value, f"one of {', '.join(groups[path])} (a config group: choose one by name)")
    keys = [key for key in SECTIONS[path] if f"{path}.{key}" in CHECKS]
    fits = [key for key in keys if _accepts(f"{path}.{key}", value)]
    hint = f"did you mean {path}.{fits[0]}={_show(value)}?" if fits else f"set one of them: {path}.{keys[0]}=..."
    return ConfigError(path, value, f"a section with keys {', '.join(keys)}, not one value; {hint}")


def _accepts(key: str, value: Any) -> bool:
    try:
        CHECKS[key](key, value)
    except ConfigError:
        return False
    return True


def explain_override(tree: Mapping[str, Any], key: str, value: Any, line: str = "") -> None:
    """Why the override `line` (key=value, +key=value, ++key=value or ~key) cannot go into the config `tree` (plain
    containers), as a ConfigError: a needless plus, a section given one value or the reverse, an unknown key."""
    line = line or f"{key}={value}"
    parts = key.split(".")
    node, depth = tree, 0  # down the sections of the config that hold the start of `key`
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), Mapping):
        node, depth = node[parts[depth]], depth + 1
    head, old = parts[depth], node.get(parts[depth])  # the first part the config lacks, or the last
    if head in node:
        if depth < len(parts) - 1:
            raise ConfigError(key, value, f"{'.'.join(parts[:depth + 1])} is a value, not a section with keys")
        if line.startswith("+") and not line.startswith("++"):
            raise UsageError(f"{line} needs no plus: this config sets {key} already; write {line[1:]}")
        if isinstance(value, Mapping) and not line.startswith("~"):
            if isinstance(old, Mapping):
                for inner, item in value.items():
                    explain_override(tree, f"{key}.{inner}", item)
                return
            CHECKS.get(key, _text)(key, value)  # a value of the schema's says what it takes; any says one value
        if isinstance(old, Mapping) and not line.startswith("~"):
            raise not_a_section(key, value) if key in SECTIONS else \
                ConfigError(key, value, f"a section with keys {', '.join(old)}, not one value")
        return
    if line.startswith("+"):
        return  # an addition composes; whether the schema has the key is parse's to say
    section = ".".join(parts[:depth])
    exc = unknown_key(key, value, section, section_keys(section, tree) or set(node), tree)
    raise UsageError(f"{line} deletes nothing: {exc.allowed}") if line.startswith("~") else exc


def explain_composition(overrides: Any, compose: Any) -> ConfigError | None:
    """Why Hydra's parsed `overrides` do not compose, or None: each key's override (not a group's choice) held
    against the config that the others compose to (`compose(lines)`: plain containers, Hydra's settings in)."""
    groups = config_groups()
    keys = [o for o in overrides if not (o.key_or_group in groups or "/" in o.key_or_group)]
    tree = compose([o.input_line for o in overrides if o not in keys])
    for o in keys:
        try:
            explain_override(tree, o.key_or_group, o.input_line.split("=", 1)[-1] if o.is_sweep_override()
                             else o.value(), o.input_line)
        except ConfigError as exc:
            return exc
    return None


def nearest_key(key: str, leaf: str, known: Collection[str], cfg: Mapping[str, Any]) -> str:
    """'; did you mean X?' for an unknown `key` whose unknown part is `leaf`, or '' when nothing is near: a key of
    that very name elsewhere in `cfg` by its full path (`epochs` -> train.epochs), then a close name at the same
    level (as it is written there), then a close name elsewhere (full path)."""
    last = key.rpartition(".")[2]
    elsewhere: dict[str, list[str]] = {}
    for path in _paths(cfg):
        if path != key:
            elsewhere.setdefault(path.rpartition(".")[2], []).append(path)
    if last in elsewhere:
        # The path that ends with all of `key` first (early_stopping.patience), then the shallower.
        return _did_you_mean(sorted(elsewhere[last], key=lambda p: (not p.endswith("." + key), p.count("."), p)))
    near = closest(leaf, sorted(known))
    if near:
        return near
    match = difflib.get_close_matches(last, list(elsewhere), n=1)
    return _did_you_mean(sorted(elsewhere[match[0]], key=lambda p: (p.count("."), p)) if match else [])


def _paths(cfg: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key of `cfg` (plain containers) by its dotted path, sections and values, Hydra's settings left out."""
    for key, value in cfg.items():
        if prefix or key != "hydra":
            yield f"{prefix}{key}"
            if isinstance(value, Mapping):
                yield from _paths(value, f"{prefix}{key}.")


def _read(cfg: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Section `path` of `cfg` ("" = the top level), each key checked and each subsection read in turn. It has
    every key of the schema's (conf/train.yaml sets them) and no other: one added with `+` would be ignored."""
    section = _select(cfg, path)
    if not isinstance(section, Mapping):
        raise not_a_section(path, section)
    keys, groups = section_keys(path, cfg), config_groups()
    for key in section:
        if key not in keys and (path or key != "hydra"):  # Hydra checks its own settings
            name, value = f"{path}.{key}" if path else str(key), section[key]
            while isinstance(value, Mapping) and len(value) == 1:  # +a.b=1 composes to a: {b: 1}
                inner, value = next(iter(value.items()))
                name = f"{name}.{inner}"
            raise unknown_key(name, value, path, keys, cfg)
    values = {}
    for key in keys:
        full = f"{path}.{key}" if path else key
        if key not in section:  # deleted (~key)
            choose = f"<name> (one of {', '.join(groups[full])})" if full in groups else "..."
            raise UsageError(f"{full} is missing: nnrun needs a value for it; add one with +{full}={choose}")
        values[key] = _read(cfg, full) if full in SECTIONS else CHECKS[full](full, section[key])
    return values


def parse(cfg: Mapping[str, Any]) -> TrainConfig:
    """Validate a composed config (DictConfig or dict) into a `TrainConfig`, or raise ConfigError. A DictConfig's
    `hydra` node (whose run dir resolves by making one) is neither read nor resolved."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, DictConfig):
        try:
            cfg = {key: OmegaConf.to_container(value, resolve=True, throw_on_missing=False)
                   if OmegaConf.is_config(value) else value
                   for key, value in ((key, OmegaConf.select(cfg, key, throw_on_missing=False))
                                      for key in cfg if key != "hydra")}
        except OmegaConfBaseException as exc:  # e.g. seed=${oops}: an interpolation that resolves to nothing
            key = getattr(exc, "full_key", None) or "config"
            raise ConfigError(key, getattr(exc, "value", None) or "${...}",
                              f"a value that resolves ({first_line(exc)})") from None
    top = _read(cfg, "")
    data, optimizer, train = DatasetConfig(**top["dataset"]), top["optimizer"], top["train"]
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError("dataset.val_fraction", data.val_fraction, "val_fraction + test_fraction must stay below 1 "
                          f"(test_fraction={data.test_fraction:g}), or no training data is left")
    if data.name == "xor" and data.n_samples < 4:
        raise ConfigError("dataset.n_samples", data.n_samples, "an integer >= 4 (a point per corner)")
    if data.classes is not None:
        check_loss_fits(top["loss"]["name"], data.classes)
        if data.n_samples is not None and data.n_samples < data.classes:
            raise ConfigError("dataset.n_samples", data.n_samples,
                              f"an integer >= dataset.classes={data.classes} (a point per class)")
    if optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise ConfigError("optimizer.nesterov", True, "false while optimizer.momentum is 0 (a Nesterov step is a "
                                                      "momentum step, as torch.optim.SGD requires)")
    return TrainConfig(**{
        **top, "dataset": data, "model": ModelConfig(**top["model"]), "activation": top["activation"]["name"],
        "loss": top["loss"]["name"],
        "optimizer": OptimizerConfig(name=optimizer.pop("name"), lr=optimizer.pop("lr"), params=optimizer),
        "train": TrainLoopConfig(**{**train, "early_stopping": EarlyStoppingConfig(**train["early_stopping"])})})


def check_loss_fits(loss: str, n_classes: int) -> None:
    """One logit + bce, one output + mse, K logits + cross_entropy: a mismatch is a config error."""
    if loss in ("bce", "mse") and n_classes != 2:
        raise ConfigError("loss", loss, f"bce and mse need 2 classes, the data has {n_classes};"
                                        " use loss=cross_entropy")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become strings (HParams takes scalars only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(list(value)) if isinstance(value, (list, tuple)) else value
    return out
