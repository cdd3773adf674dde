"""The config schema: typed dataclasses, validated once at the edge from Hydra's composed DictConfig.

Everything past `parse()` works with these objects, never with raw `DictConfig` keys. A bad value raises
`ConfigError`, which the CLI prints as one line (key, value, what is allowed) and exits 2.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

DATASETS = ("xor", "pass_fail", "spirals", "circles", "gaussians", "csv")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear", "leaky_relu", "elu", "gelu", "softplus")
LOSSES = ("bce", "mse", "cross_entropy")
DEVICES = ("auto", "cpu", "cuda")
MONITORS = ("loss/val", "loss/train", "accuracy/val", "accuracy/train")


def config_dir() -> Path:
    """conf/ inside the installed wheel, else the repository's top-level conf/ (an editable install)."""
    packaged = Path(__file__).resolve().parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "conf"


def config_groups() -> dict[str, tuple[str, ...]]:
    """Each config group under conf/ and its choices, sorted."""
    return {g.name: tuple(sorted(p.stem for p in g.glob("*.yaml")))
            for g in sorted(config_dir().iterdir()) if g.is_dir()}


def defaults_list(path: Path) -> list[tuple[str, str]]:
    """(group, choice) of each group a config file's defaults list chooses, as `hydra/launcher` or `dataset`."""
    from omegaconf import OmegaConf

    chosen = []
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []:
        if isinstance(entry, dict):
            for key, choice in entry.items():
                # `override /hydra/sweeper@pkg: optuna` and `optional dataset: x` name the groups hydra/sweeper
                # and dataset.
                group = key.split()[-1].lstrip("/").split("@")[0]
                chosen.append((group, str(choice)))
    return chosen


def default_groups() -> set[str]:
    """The groups conf/train.yaml chooses: `group=choice` overrides them; any other group is added, `+group=choice`."""
    return {group for group, _ in defaults_list(config_dir() / "train.yaml") if not group.startswith("hydra/")}


class ConfigError(ValueError):
    """A config value that nnrun cannot use; its message is the one line the user sees."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)} is not allowed: {allowed}")


class UsageError(ConfigError):
    """Bad input that is no one key's value (a command line nnrun cannot use, a resumed sweep that is another
    sweep), with its own one-line message."""

    def __init__(self, message: str):
        self.key, self.value, self.allowed = "", None, message
        ValueError.__init__(self, message)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def closest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """'; did you mean X?' for the nearest choice, or '' when nothing is near."""
    match = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def one_of(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, value, f"one of {', '.join(choices)}{closest(value, choices)}")
    return value


def _number(key: str, value: Any, kind: type) -> Any:
    # bool is an int subclass; `epochs=true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, value, f"a{'n integer' if kind is int else ' number'}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(key, value, "an integer")
        return int(value)
    if not math.isfinite(value):
        raise ConfigError(key, value, "a finite number")
    return float(value)


def integer(key: str, value: Any, *, minimum: int | None = None) -> int:
    value = _number(key, value, int)
    if minimum is not None and value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")
    return value


def real(key: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    value = _number(key, value, float)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
        if low is not None and high is not None:
            what = f"a number in {lo}, {hi}"
        elif low is not None:
            what = f"a number {'>' if low_open else '>='} {low:g}"
        else:
            what = f"a number {'<' if high_open else '<='} {high:g}"
        raise ConfigError(key, value, what)
    return value


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "true or false")
    return value


@dataclass(frozen=True)
class DatasetConfig:
    name: str = "xor"
    n_samples: int = 4
    noise: float = 0.0
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    classes: int = 2
    seed: int = 0
    path: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (4,)
    dropout: float = 0.0
    init_std: float | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    """`name` picks the update rule; `params` holds that rule's own fields (lr, betas, momentum, ...)."""

    name: str = "adam"
    lr: float = 0.01
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "loss/val"
    restore_best: bool = True

    @property
    def maximize(self) -> bool:
        return self.monitor.startswith("accuracy/")


@dataclass(frozen=True)
class TrainLoopConfig:
    epochs: int = 200
    batch_size: int | None = None
    log_every: int = 10
    image_every: int | None = None
    log_steps: bool = False
    landscape: bool = False
    checkpoint_every: int | None = None
    resume: str | None = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


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
        """The config as plain dicts, lists and tuples: a new tree at each call (the caller may change it), copied
        from one made once (`asdict` walks the dataclasses and deep-copies every value: a run's checkpoint, its
        HParams and a sweep's batching each ask for it)."""
        tree = self.__dict__.get("_tree")
        if tree is None:
            tree = asdict(self)
            object.__setattr__(self, "_tree", tree)  # frozen: kept beside the fields (not one of them)
        return _copy_tree(tree)


def _copy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tree(item) for item in value)
    return value


# Each optimizer's own fields, with how to check them. `lr` and `weight_decay` are common to all.
OPTIMIZER_FIELDS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "momentum": {"momentum": lambda k, v: real(k, v, low=0, high=1, high_open=True),
                 "nesterov": boolean},
    "adagrad": {"lr_decay": lambda k, v: real(k, v, low=0),
                "initial_accumulator_value": lambda k, v: real(k, v, low=0),
                "eps": lambda k, v: real(k, v, low=0, low_open=True)},
    "adadelta": {"rho": lambda k, v: real(k, v, low=0, high=1, high_open=True),
                 "eps": lambda k, v: real(k, v, low=0, low_open=True)},
    "adam": {"betas": lambda k, v: _betas(k, v),
             "eps": lambda k, v: real(k, v, low=0, low_open=True)},
    "rmsprop": {"alpha": lambda k, v: real(k, v, low=0, high=1, high_open=True),
                "eps": lambda k, v: real(k, v, low=0, low_open=True),
                "momentum": lambda k, v: real(k, v, low=0, high=1, high_open=True)},
}
OPTIMIZERS = tuple(OPTIMIZER_FIELDS)


# The keys each section of the config has, by dotted path ("" = the top level); `optimizer` also has its update
# rule's own fields. `hydra` holds Hydra's settings, which Hydra checks itself.
SECTIONS: dict[str, frozenset[str]] = {
    "": frozenset({f.name for f in fields(TrainConfig)} | {"hydra"}),
    "dataset": frozenset(f.name for f in fields(DatasetConfig)),
    "model": frozenset(f.name for f in fields(ModelConfig)),
    "activation": frozenset({"name"}),
    "loss": frozenset({"name"}),
    "optimizer": frozenset({"name", "lr", "weight_decay"}),
    "train": frozenset(f.name for f in fields(TrainLoopConfig)),
    "train.early_stopping": frozenset(f.name for f in fields(EarlyStoppingConfig)),
}


def section_keys(path: str, cfg: Mapping[str, Any]) -> frozenset[str] | None:
    """The keys the schema has in section `path` of `cfg`; None where `path` is no section of the schema."""
    known = SECTIONS.get(path)
    if path == "optimizer":
        name = _select(cfg, "optimizer.name")
        # An unknown update rule is reported by its name; until then, any rule's field is a key.
        own = OPTIMIZER_FIELDS[name] if name in OPTIMIZER_FIELDS else \
            {key for rule in OPTIMIZER_FIELDS.values() for key in rule}
        known = known | frozenset(own)
    return known


def _select(cfg: Any, path: str) -> Any:
    """The value at dotted `path` of a config (plain containers), or None where there is none."""
    for part in path.split(".") if path else ():
        if not isinstance(cfg, Mapping) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def check_keys(cfg: Mapping[str, Any]) -> None:
    """Every key in each section of `cfg` is one the schema has, else ConfigError. A key set with `+` or `++` on
    the command line composes into the config, and one nnrun does not read would be ignored without a word."""
    for path in SECTIONS:
        section = _select(cfg, path)
        if not isinstance(section, Mapping):
            continue  # a missing or non-mapping group is reported where it is read
        known = section_keys(path, cfg)
        for key in section:
            if key not in known:
                name, value = f"{path}.{key}" if path else str(key), section[key]
                while isinstance(value, Mapping) and len(value) == 1:  # +a.b=1 composes to a: {b: 1}
                    inner, value = next(iter(value.items()))
                    name = f"{name}.{inner}"
                raise unknown_key(name, value, path, known, cfg)


def unknown_key(key: str, value: Any, section: str, known: Collection[str], cfg: Mapping[str, Any]) -> ConfigError:
    """The error for `key` (dotted), which `section` ("" = top level) lacks: the keys it has, and the nearest."""
    leaf = key.split(".")[section.count(".") + 1 if section else 0]  # the part of `key` that `section` lacks
    hint = nearest_key(key, leaf, known, cfg)
    if section == "optimizer" and not hint:
        rules = [name for name, own in OPTIMIZER_FIELDS.items() if leaf in own]
        hint = f"; {leaf} is a field of optimizer={', '.join(rules)}" if rules else ""
    return ConfigError(key, value, f"no such key in {section or 'the config'} (known: {', '.join(sorted(known))})"
                                   f"{hint}")


def explain_override(tree: Mapping[str, Any], key: str, value: Any) -> None:
    """Why an override of dotted `key` cannot go into the config `tree` (plain containers) that lacks it, as a
    ConfigError: a key the schema has needs a plus (this config does not set it), a value is not a section, any
    other key is unknown (with the nearest known key). Returns when `tree` has the key after all."""
    parts = key.split(".")
    node, depth = tree, 0  # down the sections of the config that hold the start of `key`
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), Mapping):
        node, depth = node[parts[depth]], depth + 1
    head, whole = parts[depth], depth == len(parts) - 1  # the first part the config lacks; is it the last?
    if whole and head in node:
        return
    section = ".".join(parts[:depth])
    known = section_keys(section, tree)
    if whole and known is not None and head in known:
        raise ConfigError(key, value, f"this config's {section} does not set {head}; add it with a plus: +{key}=...")
    if head in node:
        raise ConfigError(key, value, f"{'.'.join(parts[:depth + 1])} is a value, not a section with keys")
    raise unknown_key(key, value, section, known if known is not None else set(node), tree)


def explain_composition(overrides: Any, compose: Any) -> ConfigError | None:
    """Why Hydra's parsed `overrides` do not compose, in nnrun's words, or None where no key explains it: each
    override of a plain key held against the config that the others (group choices, additions) compose to.
    `compose(lines)` composes override lines to a config as plain containers."""
    groups = config_groups()
    plain = [o for o in overrides if not (o.is_hydra_override() or o.is_add() or o.is_force_add() or o.is_delete()
                                          or o.key_or_group in groups)]
    tree = compose([o.input_line for o in overrides if o not in plain])
    for o in plain:
        value = o.input_line.split("=", 1)[-1] if o.is_sweep_override() else plain_value(o.value())
        try:
            explain_override(tree, o.key_or_group, value)
        except ConfigError as exc:
            return exc
    return None


def plain_value(value: Any) -> Any:
    """A value of Hydra's parsed overrides as plain Python (its lists and dicts as such)."""
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: plain_value(v) for k, v in value.items()}
    return value


def nearest_key(key: str, leaf: str, known: Collection[str], cfg: Mapping[str, Any]) -> str:
    """'; did you mean X?' for an unknown `key` whose unknown part is `leaf`, or '' when nothing is near.

    A key of that very name elsewhere in `cfg` comes first, by its full dotted path (`epochs` -> train.epochs),
    then a close name at the same level (as it is written there), then a close name elsewhere (full path).
    """
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
    return _did_you_mean(sorted(elsewhere[match[0]], key=lambda p: (p.count("."), p))) if match else ""


def _did_you_mean(paths: list[str]) -> str:
    names = ", ".join(map(repr, paths))
    return f"; did you mean {names}?" if len(paths) == 1 else f"; did you mean one of {names}?"


def _paths(cfg: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key of `cfg` (plain containers) by its dotted path, sections and values, Hydra's settings left out."""
    for key in cfg.keys():
        if not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        yield path
        if isinstance(cfg[key], Mapping):
            yield from _paths(cfg[key], f"{path}.")


def _betas(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(key, value, "a pair [beta1, beta2], each in [0, 1)")
    return tuple(real(f"{key}[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(value))


def _section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = cfg.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a config group (choose one with " f"{key}=<choice>)")
    return value


def parse_dataset(d: Mapping[str, Any]) -> DatasetConfig:
    name = one_of("dataset.name", d.get("name"), DATASETS)
    defaults = DatasetConfig()
    val = real("dataset.val_fraction", d.get("val_fraction", 0.0), low=0, high=1, high_open=True)
    test = real("dataset.test_fraction", d.get("test_fraction", 0.0), low=0, high=1, high_open=True)
    if val + test >= 1:
        raise ConfigError("dataset.val_fraction", val,
                          f"val_fraction + test_fraction must stay below 1 (test_fraction={test:g}),"
                          " or no training data is left")
    path = d.get("path")
    if name == "csv" and (not isinstance(path, str) or path == "???"):
        raise ConfigError("dataset.path", path, "the path of a CSV file (dataset.path=my.csv)")
    target = d.get("target")
    if target is not None and not isinstance(target, str):
        target = str(target)
    return DatasetConfig(
        name=name,
        n_samples=integer("dataset.n_samples", d.get("n_samples", defaults.n_samples),
                          minimum=4 if name == "xor" else 2),
        noise=real("dataset.noise", d.get("noise", 0.0), low=0),
        val_fraction=val,
        test_fraction=test,
        classes=integer("dataset.classes", d.get("classes", 2), minimum=2),
        seed=integer("dataset.seed", d.get("seed", 0), minimum=0),
        path=path,
        target=target,
    )


def parse_model(m: Mapping[str, Any]) -> ModelConfig:
    hidden = m.get("hidden", [])
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)):
        raise ConfigError("model.hidden", hidden, "a list of layer widths, e.g. [4] or [32,32] ([] = perceptron)")
    widths = tuple(integer(f"model.hidden[{i}]", w, minimum=1) for i, w in enumerate(hidden))
    init_std = m.get("init_std")
    return ModelConfig(
        hidden=widths,
        dropout=real("model.dropout", m.get("dropout", 0.0), low=0, high=1, high_open=True),
        init_std=None if init_std is None else real("model.init_std", init_std, low=0),
    )


def parse_optimizer(o: Mapping[str, Any]) -> OptimizerConfig:
    name = one_of("optimizer.name", o.get("name"), OPTIMIZERS)
    own = OPTIMIZER_FIELDS[name]
    params: dict[str, Any] = {
        "weight_decay": real("optimizer.weight_decay", o.get("weight_decay", 0.0), low=0)}
    for key, check in own.items():
        if key in o:
            params[key] = check(f"optimizer.{key}", o[key])
    return OptimizerConfig(name=name, lr=real("optimizer.lr", o.get("lr"), low=0, low_open=True),
                           params=params)


def parse_train(t: Mapping[str, Any]) -> TrainLoopConfig:
    es = t.get("early_stopping") or {}
    patience = es.get("patience")
    batch_size = t.get("batch_size")
    image_every = t.get("image_every")
    return TrainLoopConfig(
        epochs=integer("train.epochs", t.get("epochs", 200), minimum=1),
        batch_size=None if batch_size is None else integer("train.batch_size", batch_size, minimum=1),
        log_every=integer("train.log_every", t.get("log_every", 10), minimum=1),
        image_every=None if image_every is None else integer("train.image_every", image_every, minimum=0),
        log_steps=boolean("train.log_steps", t.get("log_steps", False)),
        landscape=boolean("train.landscape", t.get("landscape", False)),
        checkpoint_every=None if t.get("checkpoint_every") is None else integer(
            "train.checkpoint_every", t["checkpoint_every"], minimum=1),
        resume=None if t.get("resume") is None else str(t["resume"]),
        early_stopping=EarlyStoppingConfig(
            patience=None if patience is None else integer("train.early_stopping.patience", patience,
                                                           minimum=1),
            min_delta=real("train.early_stopping.min_delta", es.get("min_delta", 0.0), low=0),
            monitor=one_of("train.early_stopping.monitor", es.get("monitor", "loss/val"), MONITORS),
            restore_best=boolean("train.early_stopping.restore_best", es.get("restore_best", True)),
        ),
    )


def parse(cfg: Mapping[str, Any]) -> TrainConfig:
    """Validate a composed config (a DictConfig or plain dict) into a `TrainConfig`, or raise ConfigError. A
    DictConfig's `hydra` node (Hydra's settings, whose run dir resolves by making one) is neither read nor resolved."""
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
                              f"a value that resolves ({str(exc).splitlines()[0]})") from None
    check_keys(cfg)
    activation = _section(cfg, "activation")
    loss = _section(cfg, "loss")
    exp_name = cfg.get("exp_name", "default")
    if not isinstance(exp_name, str) or not exp_name or "/" in exp_name or exp_name.startswith("."):
        raise ConfigError("exp_name", exp_name, "a non-empty name without '/'")
    parsed = TrainConfig(
        exp_name=exp_name,
        seed=integer("seed", cfg.get("seed", 0), minimum=0),
        device=one_of("device", cfg.get("device", "auto"), DEVICES),
        threads=integer("threads", cfg.get("threads", 1), minimum=1),
        dataset=parse_dataset(_section(cfg, "dataset")),
        model=parse_model(_section(cfg, "model")),
        activation=one_of("activation.name", activation.get("name"), ACTIVATIONS),
        loss=one_of("loss.name", loss.get("name"), LOSSES),
        optimizer=parse_optimizer(_section(cfg, "optimizer")),
        train=parse_train(_section(cfg, "train")),
    )
    n_classes = parsed.dataset.classes if parsed.dataset.name in ("spirals", "gaussians") else 2
    check_loss_fits(parsed.loss, n_classes)
    return parsed


def check_loss_fits(loss: str, n_classes: int) -> None:
    """One logit + bce, one output + mse, K logits + cross_entropy: a mismatch is a config error."""
    if loss in ("bce", "mse") and n_classes != 2:
        raise ConfigError("loss", loss, f"bce and mse need 2 classes, the data has {n_classes};"
                                        " use loss=cross_entropy")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become strings (HParams takes scalars only)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = str(list(value))
        else:
            out[name] = value
    return out
