"""Pre-flight checks of `nnrun train`'s command line, before Hydra runs: flags, overrides, group choices, plugins.

Hydra reports an unknown key or choice in many lines with exit 1; here the config is composed as Hydra will (a
run's whole config, read through the schema; a sweep's fixed part, and under a sweeper other than nnrun's, such as
Optuna's, the configs its search space can give a job), so bad input is one line and exit 2, up front.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import shutil
from functools import partial
from typing import Any, Callable

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hydra_plugins.nnrun.sweep_configs import SweepConfigs
from nnrun.config import (ConfigError, UsageError, closest, config_dir, config_groups, default_groups, defaults_list,
                          explain_composition, first_line, flatten, integer, parse, sampled_range, unknown_key)

# Hydra's own flags that take a value, and those that stand alone (see `nnrun train --hydra-help`).
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--shell-completion", "-sc", "--config-path", "-cp",
                    "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
FLAGS = {"--multirun", "-m", "--resolve", "--run", "-r", "--hydra-help", "--version", "--help", "-h"}
# Each short flag's long name, the one split_args gives it.
LONG = {"-c": "--cfg", "-p": "--package", "-sc": "--shell-completion", "-cp": "--config-path", "-cn": "--config-name",
        "-cd": "--config-dir", "-i": "--info", "-m": "--multirun", "-r": "--run", "-h": "--help"}
# What `--info` (Hydra's) prints, when a choice follows it: all without one.
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
# Hydra runs one of these per call.
MODES = ("--run", "--multirun", "--cfg", "--info", "--shell-completion")

# Hydra's plugins that nnrun's `sweep` extra installs: (group, choice) -> (the plugin's module, its name);
# choice None = every choice of that group.
SWEEP_EXTRA = {
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "Hydra's joblib launcher"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher"),
    # Its settings are the submitit plugin's (SlurmQueueConf); it submits with submitit, which comes with it.
    ("hydra/launcher", "vectorized_slurm"): ("hydra_plugins.hydra_submitit_launcher", "Hydra's submitit launcher"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "Hydra's optuna sweeper"),
    ("hydra/sweeper/sampler", None): ("hydra_plugins.hydra_optuna_sweeper", "Hydra's optuna sweeper"),
}
INSTALL_SWEEP_EXTRA = 'it comes with nnrun\'s sweep extra: pip install -e ".[sweep]"'
# nnrun's launchers that train a sweep's jobs together: they need -m.
STACKING_LAUNCHERS = {"vectorized": "trains the jobs of a sweep together",
                      "vectorized_slurm": "submits the stacks of a sweep as SLURM jobs"}


def _cores(key: str, value) -> int:
    """joblib's n_jobs: processes at once, -1 every core, -2 all but one, ...; 0 is none (joblib raises)."""
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        raise ConfigError(key, value, "an integer >= 1, or -1 for every core (-2 for all but one, ...)")
    return value


# The counts of Hydra's sweepers and launchers that they take unchecked, then hang on or trace back with, after
# the sweep dir (and an Optuna study) is made: (group, choice) -> {key of that node: its check}.
PLUGIN_COUNTS = {
    # No trial leaves no best one to report (a traceback); no trial at a time, or fewer, never ends.
    ("hydra/sweeper", "optuna"): {"n_trials": partial(integer, minimum=1), "n_jobs": partial(integer, minimum=1)},
    ("hydra/launcher", "joblib"): {"n_jobs": _cores},
}


def split_args(args: list[str]) -> tuple[dict[str, str | None], list[str]]:
    """(Hydra's flags present by their long names, each with its value or None; overrides); an unknown option, a flag
    without its value or one given twice with two values is a UsageError."""
    flags: dict[str, str | None] = {}
    overrides: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name not in FLAGS | FLAGS_WITH_VALUE:
            if arg.startswith("-"):
                raise UsageError(f"unknown option {arg!r}: nnrun train takes key=value overrides and Hydra's flags"
                                 " (see nnrun train --hydra-help)")
            overrides.append(arg)
            continue
        value = None
        if name in ("--info", "-i"):
            value = arg.split("=", 1)[1] if "=" in arg else (
                rest.pop(0) if rest and rest[0] in INFO_CHOICES else None)
        elif name in FLAGS_WITH_VALUE:
            value = arg.split("=", 1)[1] if "=" in arg else (rest.pop(0) if rest else None)
            if value is None or value in FLAGS | FLAGS_WITH_VALUE:  # `-sc --resolve`: a flag, not -sc's value
                raise UsageError(f"{arg} needs a value (see nnrun train --hydra-help)")
            if name in ("--cfg", "-c") and value not in ("job", "hydra", "all"):
                raise ConfigError(name, value, "one of job, hydra, all")
        long = LONG.get(name, name)
        if None not in (flags.get(long), value) and flags[long] != value:  # Hydra takes the last: one is a mistake
            raise UsageError(f"{long} is given twice, as {flags[long]} and {value}: give it once")
        flags[long] = flags.get(long) if value is None else value
    modes = [mode for mode in MODES if mode in flags]
    if len(modes) > 1:
        raise UsageError(f"{' and '.join(modes)} cannot be used together: pick one")
    if "--resolve" in flags and flags.get("--cfg") != "job" and not flags.keys() & {"--help", "--version"}:
        # A run's dir is made as its name resolves, and the dirs' names read the job's exp_name.
        raise UsageError("--resolve goes with --cfg job (nnrun train --cfg job --resolve: the config with its "
                         "interpolations resolved); Hydra's run and sweep dirs are named when a run starts")
    return flags, overrides


def read_overrides(parser, lines: list[str]) -> list:
    """Hydra's parsed overrides of `lines` (`parser` None: one without a config loader), or UsageError."""
    parser = parser or OverridesParser.create()
    overrides = []
    for line in lines:
        try:
            overrides += parser.parse_overrides([line])
        except OverrideParseException:
            raise UsageError(f"cannot read override {line!r}: write key=value, group=choice, +key=value"
                             " or a sweep key=a,b,c") from None
    return overrides


def compose(loader, lines: list[str], run_mode: RunMode):
    """The config `lines` compose to (a sweep's fixed part with `run_mode` MULTIRUN), or ConfigError."""
    try:
        return loader.load_configuration("train", lines, run_mode=run_mode)
    except Exception as exc:  # Hydra's composition errors: keep the first line, or the choices
        raise _composition_error(exc) from None


def _composition_error(exc: Exception) -> ConfigError:
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, choice = exc.missing_cfg_file.rpartition("/")
        options = tuple(sorted(exc.options))
        plugin = _sweep_extra(group, choice)
        hint = f" ({choice} is {plugin[1]}: {INSTALL_SWEEP_EXTRA})" if plugin else closest(choice, options)
        return ConfigError(group, choice, f"one of {', '.join(options)}{hint}")
    return UsageError(first_line(exc))


def _sweep_extra(group: str, choice: str) -> tuple[str, str] | None:
    return SWEEP_EXTRA.get((group, choice)) or SWEEP_EXTRA.get((group, None))


def plugin_installed(module: str) -> bool:
    """Whether `module` can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def hydra_choices(overrides, groups: dict[str, tuple[str, ...]]) -> list[tuple[str, str, str | None]]:
    """(group, choice, the override whose config file chose it or None) of each Hydra group (`hydra/launcher`, ...)
    the command line or a file it adds (+hparams_search=...) chooses, the command line's first; glob() not read."""
    given, from_files = [], []  # the command line's choices; those of the files its choices add
    for o in overrides:
        group = o.key_or_group
        if o.is_delete() or (o.is_sweep_override() and not o.is_discrete_sweep()) \
                or o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            continue
        for choice in o.sweep_string_iterator() if o.is_sweep_override() else [o.value()]:
            if o.is_hydra_override() and "/" in group:
                given.append((group, str(choice), None))
            elif group in groups and choice in groups[group]:
                chosen = defaults_list(config_dir() / group / f"{choice}.yaml")
                from_files += [(g, c, o.input_line) for g, c in chosen if g.startswith("hydra/")]
    direct = {group for group, _, _ in given}
    return [*given, *(f for f in from_files if f[0] not in direct)]


def _check_hydra_choices(choices: list[tuple[str, str, str | None]], flags: dict, raw: list[str]) -> None:
    """A launcher or sweeper of the sweep extra must be installed (Hydra would only list the choices it has);
    vectorized and vectorized_slurm launch a sweep: they need -m, vectorized_slurm sbatch too (--cfg neither)."""
    for group, choice, origin in choices:
        plugin = _sweep_extra(group, choice)
        if plugin is not None and not plugin_installed(plugin[0]):
            if origin is None:
                raise ConfigError(group, choice, f"{plugin[1]} is not installed; {INSTALL_SWEEP_EXTRA}")
            raise UsageError(f"{origin} needs {plugin[1]} ({group}={choice}), which is not installed; "
                             f"{INSTALL_SWEEP_EXTRA}")
    for group, choice, _ in choices:
        if group != "hydra/launcher" or choice not in STACKING_LAUNCHERS or "--cfg" in flags:
            continue
        if "--multirun" not in flags:
            raise UsageError(f"hydra/launcher={choice} {STACKING_LAUNCHERS[choice]}; add -m "
                             f"(nnrun train -m {' '.join(raw)})")
        if choice == "vectorized_slurm" and shutil.which("sbatch") is None:
            raise ConfigError(group, choice, "SLURM's sbatch is not on PATH here; run the sweep on a cluster's "
                              "login node, or train the stacks on this machine with hydra/launcher=vectorized")


def check(args: list[str], job_check: Callable[[Any], Any] = parse) -> None:
    """Validate `nnrun train <args>`; raise ConfigError (one line) on the first problem found. `job_check` reads a
    job's config as the task will (the task's own check: cli passes it). (The run-dir resolver is the command
    line's to register: cli, which knows whether a job runs.)"""
    flags, raw = split_args(args)
    if flags.keys() & {"--config-path", "--config-name", "--config-dir", "--experimental-rerun"}:
        return  # another config tree: Hydra's own checks apply
    multirun = "--multirun" in flags
    overrides = read_overrides(None, raw)
    sweeps = [o for o in overrides if o.is_sweep_override()]
    if sweeps and not multirun:
        raise UsageError(f"{sweeps[0].input_line} is a sweep: add -m to run one job per value "
                         f"(nnrun train -m {' '.join(raw)})")
    groups, defaults = config_groups(), default_groups()
    for o in overrides:  # a group that has a default is overridden without a plus; one that has none with one
        group, line = o.key_or_group, o.input_line.lstrip("+")
        if group not in groups or o.is_delete():
            continue
        if group not in defaults and not (o.is_add() or o.is_force_add()):
            raise UsageError(f"{o.input_line} needs a plus: write +{line} ({group} has no default in "
                             "conf/train.yaml to override)")
        if group in defaults and o.is_add():
            raise UsageError(f"{o.input_line} needs no plus: write {line} ({group} has a default in "
                             "conf/train.yaml; this overrides it)")
    # Before Hydra starts (and imports the plugins it finds): which of them the command line needs.
    choices = hydra_choices(overrides, groups)
    _check_hydra_choices(choices, flags, raw)
    sweeper = next((choice for group, choice, _ in choices if group == "hydra/sweeper"), "nnrun")
    sampled = [o for o in overrides if o.is_sweep_override() and not o.is_discrete_sweep()]
    if multirun and sampled and sweeper in ("nnrun", "basic"):  # Hydra's basic sweeper would trace back
        raise sampled_range(sampled[0].input_line)

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        overrides = read_overrides(OverridesParser.create(config_loader=loader), raw)  # glob() lists a group
        for o in overrides:  # Hydra's groups (hydra/launcher, ...) as nnrun's
            hydra_group = o.is_hydra_override() and "/" in o.key_or_group
            _check_choice(o, groups.get(o.key_or_group) or
                          (tuple(sorted(loader.get_group_options(o.key_or_group))) if hydra_group else ()))
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        fixed = [o for o in overrides if not (multirun and o.is_sweep_override())]
        settings = [o for o in fixed if o.key_or_group.startswith("hydra.") and not o.is_delete()]
        try:
            cfg = compose(loader, raw, mode)
        except ConfigError:
            # Which override is why, in nnrun's words (Hydra's own error is less helpful): one of Hydra's settings
            # against the config the others compose to, each key against what the groups alone compose to.
            if settings:
                _check_hydra_keys(settings, compose(loader, [o.input_line for o in fixed if o not in settings], mode))
            explained = explain_composition(fixed, lambda lines: OmegaConf.to_container(compose(loader, lines, mode)))
            if explained is not None:
                raise explained from None
            raise
        _check_hydra_keys(settings, cfg)
        if multirun:
            _check_counts(cfg)
            if cfg.hydra.runtime.choices.get("hydra/sweeper") != "nnrun":  # nnrun's checks every job itself
                _check_search(loader, cfg, groups, job_check)
    package = flags.get("--package")
    if "--cfg" in flags and package not in (None, "_global_") and "--help" not in flags:  # Hydra's help goes first
        _check_package(package, flags["--cfg"], cfg)
    if not multirun:  # a sweep's jobs: above, or by nnrun's sweeper, all before the first starts
        parse(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def _check_counts(cfg) -> None:
    """The chosen sweeper's and launcher's counts (PLUGIN_COUNTS)."""
    for (group, choice), checks in PLUGIN_COUNTS.items():
        if cfg.hydra.runtime.choices.get(group) == choice:
            node = group.replace("/", ".")
            for key, check_count in checks.items():
                check_count(f"{node}.{key}", OmegaConf.select(cfg, f"{node}.{key}"))


def _check_search(loader, cfg, groups: dict[str, tuple[str, ...]], check: Callable[[Any], Any]) -> None:
    """The jobs of a sweeper other than nnrun's (Optuna's, Hydra's basic), checked before Hydra starts as nnrun's
    sweeper checks each of its own: built by `SweepConfigs`, read through the task's `check`. Optuna draws its trials
    as it goes, so there is no list of jobs to check: each key the sweep varies is tried at each value it can take
    (`_tries`), every other varied key at its first; the keys it does not vary are in each of those configs."""
    sweeper = cfg.hydra.runtime.choices["hydra/sweeper"]
    parser = OverridesParser.create(config_loader=loader)
    params = [(f"{key}={value}", " in hydra.sweeper.params")
              for key, value in (cfg.hydra.sweeper.get("params") or {}).items()]
    given = {}  # each key's override, as the sweeper reads them: hydra.sweeper.params, then the command line's
    for line, where in [*params, *((line, "") for line in cfg.hydra.overrides.task)]:
        (o,) = read_overrides(parser, [line])
        _check_choice(o, groups.get(o.key_or_group, ()))
        given[o.get_key_element()] = (o, f"{line}{where}")
    fixed = [o.input_line for o, _ in given.values() if not o.is_sweep_override()]
    tries = {key: _tries(o, where, sweeper) for key, (o, where) in given.items() if o.is_sweep_override()}
    first = {key: values[0] for key, values in tries.items()}
    configs = SweepConfigs(loader, cfg)
    for key, value in [(None, None), *((key, value) for key, values in tries.items() for value in values[1:])]:
        lines = [f"{k}={value if k == key else v}" for k, v in first.items()] + fixed  # as Optuna orders a trial's
        try:
            check(configs.load(lines))
        except (ConfigError, HydraException, OmegaConfBaseException) as exc:
            why = exc if isinstance(exc, ConfigError) else explain_composition(
                read_overrides(None, lines), lambda ls: OmegaConf.to_container(compose(loader, ls, RunMode.RUN)))
            why = why or UsageError(first_line(exc))
            if key is None:  # each varied key at its first value: the one that the refusal names, if one
                named = [k for k in first if why.key == k or why.key.startswith((f"{k}[", f"{k}."))]
                key = max(named, key=len, default=None)  # optimizer.momentum, not optimizer
                value = first.get(key)
            if key is None:
                raise why from None
            tried = "it" if why.key == key else f"{key}={value}"
            raise ConfigError(why.key, why.value, f"{why.allowed} (hydra/sweeper={sweeper} may try {tried}, from "
                                                  f"{given[key][1]})") from None


def _tries(o, where: str, sweeper: str) -> list[str]:
    """The values of a swept key to check a job with, as override values. Each value a choice lists; a range's first,
    second and last (those between, one step apart, nnrun's checks of a number take or refuse alike: they check
    bounds and whether it is whole), Optuna's up to its stop, which its distributions include; an interval's bounds
    and a value between them that is not whole (Optuna draws any number there, its bounds included)."""
    value = o.value()
    if o.is_interval_sweep():
        low, high = value.start, value.end
        if "log" in value.tags and low <= 0:
            raise UsageError(f"{where}: a log scale needs a low bound above 0")
        step = (high - low) / 2
        while step > 0 and float(low + step).is_integer():  # interval(10,100): 32.5, not 55.0
            step /= 2
        tries = [low, *([low + step] if step > 0 else []), high] if low <= high else []
    elif o.is_range_sweep():
        start, stop, step = value.start, value.stop, value.step
        inclusive = sweeper == "optuna" and not value.shuffle
        steps = (stop - start) / step if step and (step > 0 or not inclusive) else -1
        last = math.floor(steps) if inclusive else math.ceil(steps) - 1
        tries = [start + n * step for n in sorted({0, min(1, last), last})] if last >= 0 else []
    else:
        return list(o.sweep_string_iterator())
    if not tries:
        raise UsageError(f"{where} holds no value for hydra/sweeper={sweeper} to try")
    return [str(v) for v in tries]


def _check_choice(o, choices: tuple[str, ...]) -> None:
    """A config group's choice (or each of a sweep's, or of a list) is one of the group's, by name."""
    if not choices or o.is_delete() or (o.is_sweep_override() and not o.is_discrete_sweep()):
        return
    values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
    for value in (v for value in values for v in (value if isinstance(value, list) else [value])):
        if not isinstance(value, str) or value not in choices:
            hint = closest(value, choices) if isinstance(value, str) else ""
            if isinstance(value, dict) and value:  # optimizer={lr: 0.1}: the group's keys are set one by one
                hint = f" (a config group: set its keys one by one, as {o.key_or_group}.{next(iter(value))}=...)"
            raise ConfigError(o.key_or_group, value, f"one of {', '.join(choices)}{hint}")


def _check_hydra_keys(overrides, cfg) -> None:
    """Each override of Hydra's settings against `cfg`: a key a structured config lacks is refused, plus or not
    (added, it would be ignored); an open section (hydra.job.env_set) takes any key, added with a plus."""
    whole = OmegaConf.to_container(cfg.hydra, resolve=False) if overrides else {}  # read without resolving
    for o in overrides:
        parts, added = o.key_or_group.split("."), o.is_add() or o.is_force_add()
        node, tree = cfg.hydra, whole
        for depth, part in enumerate(parts[1:], start=1):
            kind, section = OmegaConf.get_type(node), ".".join(parts[:depth])
            settings = [f.name for f in dataclasses.fields(kind)] if dataclasses.is_dataclass(kind) else None
            if settings is not None and part not in settings:
                raise unknown_key(o.key_or_group, o.value(), section, settings, {})
            if part not in tree:
                if not added:
                    raise UsageError(f"{o.input_line} needs a plus: {section} takes keys of your own; write "
                                     f"+{o.input_line}")
                break
            if depth == len(parts) - 1 or not isinstance(tree[part], dict):
                break
            node, tree = node[part], tree[part]


def _check_package(package: str, part: str, cfg) -> None:
    """--cfg's --package: a key of the part of `cfg` that --cfg prints, with a value Hydra can print (it resolves
    one; a null or ??? one it calls not found)."""
    printed = OmegaConf.masked_copy(cfg, [k for k in cfg if part == "all" or (k == "hydra") == (part == "hydra")])
    if part == "hydra":  # as Hydra prints it: without its help texts
        printed = OmegaConf.create({"hydra": OmegaConf.masked_copy(cfg.hydra, [
            k for k in cfg.hydra if k not in ("help", "hydra_help")])})
    absent = object()
    parent = package.rpartition(".")[0]
    whole = f"--cfg {part} --package {parent}" if parent else f"--cfg {part}"
    try:
        value = OmegaConf.select(printed, package, default=absent, throw_on_missing=True)
    except Exception as exc:  # ??? until a job starts (hydra.job.num), or it reads what this part leaves out
        why = first_line(exc)
        raise UsageError(f"--cfg {part} cannot print {package} ({why}); {whole} shows it as set") from None
    if value is absent:
        paths = [p for path in flatten(OmegaConf.to_container(printed)) for p in _prefixes(path)]
        other = " (Hydra's settings: --cfg hydra)" if part == "job" and package.startswith("hydra.") else ""
        raise ConfigError("--package", package, f"a key of the config --cfg {part} prints{other}"
                                                f"{closest(package, sorted(set(paths)))}")
    if value is None:
        raise UsageError(f"{package} is null, which Hydra's --package prints as not found; {whole} shows it")


def _prefixes(path: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b', 'a.b.c']."""
    parts = path.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
