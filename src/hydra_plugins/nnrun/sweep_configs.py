"""A sweep's job configs from one composition per set of config-group choices, with Hydra's public APIs; each
job's subdir as Hydra names it from its config; and the garbage collector's rule while many of them are made and
kept.

Hydra composes every job from scratch (about a tenth of a second a job). Jobs that pick the same group choices and
set the same keys differ only in those keys' values: the first is composed by Hydra, each other one is a copy of it
with its values set as Hydra sets a value override, and its `hydra.overrides.task` and `hydra.job.override_dirname`
(Hydra's rule). Anything else (a `+`/`++`/`~` on a key, a mapping, a Hydra key) is composed by Hydra.
`tests/test_launcher.py` checks the configs equal Hydra's own over a matrix of overrides.
"""

import functools
import gc
import pickle
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict


@contextmanager
def young_garbage_only() -> Iterator[Any]:
    """Python's collector only on what each job left behind (call what this yields after each): its full passes
    would walk every config kept so far (each JobReturn keeps two), a cost growing with the jobs before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield functools.partial(gc.collect, 1)
    finally:
        if enabled:
            gc.enable()


class SweepConfigs:
    """`config_loader.load_sweep_config(master, overrides)`, composing once per set of group choices and keys."""

    def __init__(self, config_loader: Any, master: DictConfig) -> None:
        self.loader, self.master = config_loader, master
        parser = OverridesParser.create(config_loader=config_loader)
        # Each override line parsed once: a sweep's jobs share most of them.
        self.parse = functools.lru_cache(maxsize=None)(lambda line: parser.parse_overrides([line])[0])
        self.groups = set(config_loader.list_groups(""))
        self.composed: Dict[Tuple, DictConfig] = {}  # by (group choices, keys set): Hydra's config of one job

    def load(self, overrides: List[str]) -> DictConfig:
        parsed = [self.parse(line) for line in overrides]
        # A config-group choice (`dataset=spirals`, `+exp=xor_relu`) or a Hydra override is part of the key.
        is_choice = [o.is_hydra_override() or o.key_or_group.split("/")[0] in self.groups for o in parsed]
        values = [o for o, choice in zip(parsed, is_choice) if not choice]
        if any(o.package is not None or o.is_delete() or o.is_add() or o.is_force_add() or o.is_sweep_override()
               or isinstance(o.value(), dict) for o in values):
            return self.loader.load_sweep_config(self.master, list(overrides))
        choices = tuple(o.input_line for o, choice in zip(parsed, is_choice) if choice)
        key = (choices, tuple(o.key_or_group for o in values))
        if key not in self.composed:
            self.composed[key] = self.loader.load_sweep_config(self.master, list(overrides))
            return copied(self.composed[key])
        cfg = copied(self.composed[key])
        for o in values:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        naming = cfg.hydra.job.config.override_dirname
        excluded = set(naming.exclude_keys)
        named = sorted(o.input_line for o in parsed if o.key_or_group not in excluded)
        with open_dict(cfg):
            cfg.hydra.overrides.task = list(overrides)
            cfg.hydra.job.override_dirname = re.sub("=", naming.kv_sep, naming.item_sep.join(named))
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg


def job_subdir(cfg: DictConfig) -> str:
    """A numbered job's hydra.sweep.subdir, its dir below the sweep dir, as Hydra's `run_job` names it: resolved in
    the job's config while HydraConfig holds that config (what `${hydra:...}` reads), then put back. Held as
    `run_job` puts it back, not through `set_config`, which would make the config's hydra node read-only before a
    launcher numbers it again."""
    hydra_config = HydraConfig.instance()
    before, hydra_config.cfg = hydra_config.cfg, cfg
    try:
        return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    finally:
        hydra_config.cfg = before


def copied(cfg: DictConfig) -> DictConfig:
    """An independent copy of `cfg`, flags, types and all, through OmegaConf's own pickling: a third of the time
    of `copy.deepcopy`, which walks OmegaConf's nodes in Python (about 17 against 6 ms for a job's config)."""
    return pickle.loads(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))
