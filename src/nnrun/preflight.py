"""Pre-flight checks of `nnrun train`'s command line: every job's config is valid before any job starts.

Hydra would report an unknown key or group choice as a multi-line error with exit code 1, and a sweep over a
bad value only when its job runs. Here each override is checked against conf/ and the composed config, and
each value of each sweep is validated through the schema, so bad input is one line and exit 2, up front.
"""

from __future__ import annotations

from typing import Any

from nnrun.config import ConfigError, closest

# Hydra's own flags that take a value, and those that stand alone (see `nnrun train --hydra-help`).
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--shell-completion", "-sc", "--config-path", "-cp",
                    "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
FLAGS = {"--multirun", "-m", "--resolve", "--run", "-r", "--hydra-help", "--version", "--help", "-h"}


class UsageError(ConfigError):
    """A command line nnrun cannot use, with its own one-line message."""

    def __init__(self, message: str):
        self.key, self.value, self.allowed = "", None, message
        ValueError.__init__(self, message)


# Hydra runs one of these per call.
MODES = (("--run", "-r"), ("--multirun", "-m"), ("--cfg", "-c"), ("--info", "-i"), ("--shell-completion", "-sc"))


def split_args(args: list[str]) -> tuple[set[str], list[str]]:
    """(Hydra flags present, overrides); an unknown option or a flag without its value is a UsageError."""
    flags: set[str] = set()
    overrides: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in FLAGS_WITH_VALUE:
            flags.add(name)
            if "=" in arg or name in ("--info", "-i"):
                i += 1
                continue
            if i + 1 >= len(args):
                raise UsageError(f"{arg} needs a value (see nnrun train --hydra-help)")
            if name in ("--cfg", "-c") and args[i + 1] not in ("job", "hydra", "all"):
                raise ConfigError(arg, args[i + 1], "one of job, hydra, all")
            i += 2
            continue
        if arg in FLAGS:
            flags.add(arg)
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg!r}: nnrun train takes key=value overrides and Hydra's flags"
                             " (see nnrun train --hydra-help)")
        else:
            overrides.append(arg)
        i += 1
    modes = [long for long, short in MODES if {long, short} & flags]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be used together: pick one")
    return flags, overrides


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        try:
            return compose("train", overrides=overrides, return_hydra_config=True)
        except Exception as exc:  # Hydra's composition errors: keep the first line, or the choices
            raise _composition_error(exc, overrides) from None


def _composition_error(exc: Exception, overrides: list[str]) -> ConfigError:
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, choice = exc.missing_cfg_file.rpartition("/")
        options = tuple(sorted(exc.options))
        plugin = _sweep_extra(group, choice)
        hint = f" ({choice} is {plugin[1]}: {INSTALL_SWEEP_EXTRA})" if plugin else closest(choice, options)
        return ConfigError(group, choice, f"one of {', '.join(options)}{hint}")
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return UsageError(first)


def config_groups() -> dict[str, tuple[str, ...]]:
    """Each config group under conf/ and its choices, sorted."""
    from nnrun.app import config_dir

    return {g.name: tuple(sorted(p.stem for p in g.glob("*.yaml")))
            for g in sorted(config_dir().iterdir()) if g.is_dir()}


def defaults_list(path) -> list[tuple[str, str]]:
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
    from nnrun.app import config_dir

    return {group for group, _ in defaults_list(config_dir() / "train.yaml")}


def _check_plus(overrides, groups: dict[str, tuple[str, ...]], defaults: set[str]) -> None:
    """A group that has a default is overridden without a plus; one that has none (exp) is added with one."""
    for o in overrides:
        group = o.key_or_group
        if group not in groups or o.is_delete():
            continue
        line = o.input_line.lstrip("+")
        if group not in defaults and not (o.is_add() or o.is_force_add()):
            raise UsageError(f"{o.input_line} needs a plus: write +{line} ({group} has no default in "
                             "conf/train.yaml to override)")
        if group in defaults and o.is_add():
            raise UsageError(f"{o.input_line} needs no plus: write {line} ({group} has a default in "
                             "conf/train.yaml; this overrides it)")


# Hydra's plugins that nnrun's `sweep` extra installs: (group, choice) -> (the plugin's module, its name);
# choice None = every choice of that group.
SWEEP_EXTRA = {
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "Hydra's joblib launcher"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher"),
    ("hydra/launcher", "vectorized_slurm"): ("submitit", "submitit"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "Hydra's optuna sweeper"),
    ("hydra/sweeper/sampler", None): ("hydra_plugins.hydra_optuna_sweeper", "Hydra's optuna sweeper"),
}
INSTALL_SWEEP_EXTRA = 'it comes with nnrun\'s sweep extra: pip install -e ".[sweep]"'


def _sweep_extra(group: str, choice: str) -> tuple[str, str] | None:
    return SWEEP_EXTRA.get((group, choice)) or SWEEP_EXTRA.get((group, None))


def plugin_installed(module: str) -> bool:
    """Whether `module` can be imported (found, not imported)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def hydra_choices(overrides, groups: dict[str, tuple[str, ...]]) -> list[tuple[str, str, str | None]]:
    """(group, choice, the override of another group whose config file chose it, or None) of each Hydra group
    (`hydra/launcher`, `hydra/sweeper`, ...) chosen on the command line or by a config file it adds
    (+hparams_search=...); the command line's choice of a group wins over a file's."""
    from nnrun.app import config_dir

    given: list[tuple[str, str, str | None]] = []  # (group, choice, the override of another group that chose it)
    from_files: list[tuple[str, str, str | None]] = []
    for o in overrides:
        group = o.key_or_group
        if o.is_delete() or (o.is_sweep_override() and not o.is_discrete_sweep()):
            continue
        for choice in o.sweep_string_iterator() if o.is_sweep_override() else [o.value()]:
            if o.is_hydra_override() and "/" in group:
                given.append((group, str(choice), None))
            elif group in groups and choice in groups[group]:
                chosen = defaults_list(config_dir() / group / f"{choice}.yaml")
                from_files += [(g, c, o.input_line) for g, c in chosen if g.startswith("hydra/")]
    direct = {group for group, _, _ in given}
    return [*given, *(f for f in from_files if f[0] not in direct)]


def _check_sweep_extra(choices: list[tuple[str, str, str | None]]) -> None:
    """A launcher or sweeper of the sweep extra must be installed: Hydra would only list the choices it has."""
    for group, choice, origin in choices:
        plugin = _sweep_extra(group, choice)
        if plugin is None or plugin_installed(plugin[0]):
            continue
        if origin is None:
            raise ConfigError(group, choice, f"{plugin[1]} is not installed; {INSTALL_SWEEP_EXTRA}")
        raise UsageError(f"{origin} needs {plugin[1]} ({group}={choice}), which is not installed; "
                         f"{INSTALL_SWEEP_EXTRA}")


VECTORIZED_SLURM = ("hydra/launcher", "vectorized_slurm")


def _check_vectorized_slurm(choices: list[tuple[str, str, str | None]], flags: set[str], raw: list[str]) -> None:
    """hydra/launcher=vectorized_slurm submits a sweep's stacks with sbatch: it needs -m, and sbatch (printing
    the config with --cfg needs neither)."""
    import shutil

    if VECTORIZED_SLURM not in [(group, choice) for group, choice, _ in choices] or flags & {"--cfg", "-c"}:
        return
    multirun = bool(flags & {"-m", "--multirun"})
    if not multirun:
        raise UsageError("hydra/launcher=vectorized_slurm submits the stacks of a sweep as SLURM jobs; add -m "
                         f"(nnrun train -m {' '.join(raw)})")
    if shutil.which("sbatch") is None:
        raise ConfigError(*VECTORIZED_SLURM, "SLURM's sbatch is not on PATH here; run the sweep on a cluster's "
                          "login node, or train the stacks on this machine with hydra/launcher=vectorized")


def _check_key(cfg, key: str, value: Any) -> None:
    """An override of a key that the composed config lacks: a key the schema has needs a plus (this config does
    not set it); any other is unknown, with the nearest known key."""
    from omegaconf import OmegaConf

    from nnrun.config import section_keys, unknown_key

    tree = OmegaConf.to_container(cfg, resolve=False)
    parts = key.split(".")
    node, depth = tree, 0  # down the sections of the config that hold the start of `key`
    while depth < len(parts) - 1 and isinstance(node.get(parts[depth]), dict):
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


def check(args: list[str]) -> None:
    """Validate `nnrun train <args>`; raise ConfigError (one line) on the first problem found."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf

    from nnrun.config import parse

    flags, raw = split_args(args)
    if flags & {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}:
        return  # another config tree: Hydra's own checks apply
    parser = OverridesParser.create()
    overrides = []
    for line in raw:
        try:
            overrides += parser.parse_overrides([line])
        except OverrideParseException:
            raise UsageError(f"cannot read override {line!r}: write key=value, group=choice, +key=value"
                             " or a sweep key=a,b,c") from None
    multirun = bool(flags & {"-m", "--multirun"})
    sweeps = [o for o in overrides if o.is_sweep_override()]
    if sweeps and not multirun:
        o = sweeps[0]
        raise UsageError(f"{o.input_line} is a sweep: add -m to run one job per value "
                         f"(nnrun train -m {' '.join(raw)})")

    groups = config_groups()
    _check_plus(overrides, groups, default_groups())
    for o in overrides:
        key = o.key_or_group
        if o.is_hydra_override() or o.is_delete() or key not in groups or o.is_sweep_override():
            continue
        value = o.value()
        if isinstance(value, str) and value not in groups[key]:
            raise ConfigError(key, value, f"one of {', '.join(groups[key])}{closest(value, groups[key])}")
    choices = hydra_choices(overrides, groups)
    _check_sweep_extra(choices)
    _check_vectorized_slurm(choices, flags, raw)

    # The base job: fixed overrides plus the first value of each enumerable sweep (a real job of the sweep).
    pairs = [(o, o.input_line if not o.is_sweep_override()
              else f"{o.get_key_element()}={next(o.sweep_string_iterator())}")
             for o in overrides if not o.is_sweep_override() or o.is_discrete_sweep()]
    base = [line for _, line in pairs]
    plain_keys = [o for o in overrides if not (o.is_hydra_override() or o.is_add() or o.is_force_add()
                                               or o.is_delete() or o.key_or_group in groups)]
    try:
        cfg = _compose(base)
    except ConfigError:
        # Which key is unknown: each plain key against what the groups alone compose to (Hydra's own error is
        # less helpful). Only when composing failed: a plain key the config lacks always fails it.
        groups_only = _compose([line for o, line in pairs if o not in plain_keys])
        for o in plain_keys:
            value = o.input_line.split("=", 1)[-1] if o.is_sweep_override() else _plain(o.value())
            _check_key(groups_only, o.key_or_group, value)
        raise
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    parse(job)
    if not multirun:
        return
    # Sweeps from the command line and from the config (hydra.sweeper.params, as experiment files set).
    sweep_lines = [o.input_line for o in sweeps]
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    if params:
        given = {o.key_or_group for o in overrides}
        sweep_lines += [f"{k}={v}" for k, v in params.items() if k not in given]
    for line in sweep_lines:
        (o,) = parser.parse_overrides([line])
        others = [b for b in base if not b.lstrip("+~").startswith(o.key_or_group + "=")]
        _check_sweep(parser, line, others, job, groups)


def _check_sweep(parser, line: str, base: list[str], job, groups: dict[str, tuple[str, ...]]) -> None:
    """Each value of one sweep, on top of the base config: a group choice recomposes, a key is set in place."""
    from omegaconf import OmegaConf

    from nnrun.config import parse

    (o,) = parser.parse_overrides([line])
    if o.is_hydra_override() or not o.is_discrete_sweep() and o.is_sweep_override():
        return  # interval sweeps (optuna) are bounded by the sweeper, not enumerable here
    values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [line.split("=", 1)[1]]
    key = o.key_or_group
    trial = None  # the base job, each value of this one key set in it in turn
    for value in values:
        if key in groups:
            if value not in groups[key]:
                raise ConfigError(key, value, f"one of {', '.join(groups[key])}{closest(value, groups[key])}")
            cfg = _compose([*base, f"{o.get_key_element()}={value}"])
            parse(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
            continue
        if not (o.is_add() or o.is_force_add()):
            _check_key(job, key, value)
        (single,) = parser.parse_overrides([f"{key}={value}"])
        if trial is None:
            trial = OmegaConf.create(OmegaConf.to_container(job, resolve=False))
        OmegaConf.update(trial, key, _plain(single.value()), merge=False, force_add=True)
        parse(trial)


def _plain(value: Any) -> Any:
    """Hydra's parsed override values as plain Python (lists and dicts as such)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
