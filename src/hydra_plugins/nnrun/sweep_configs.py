"""A sweep's job configs from one composition per set of config-group choices, with Hydra's public APIs; and
the garbage collector's rule while many of them are made and kept.

Hydra composes every job from scratch (defaults list, YAML files, merges: about a tenth of a second a job). Jobs
that pick the same config-group choices and set the same keys differ only in those keys' values, so the first
such job is composed by Hydra (`config_loader.load_sweep_config`) and each other one is a copy of it with its
own values set as Hydra sets a value override (`OmegaConf.update(cfg, key, value, merge=True)`), its
`hydra.overrides.task` and its `hydra.job.override_dirname` (Hydra's rule: the override lines but excluded
keys, sorted, joined). Anything else (a `+`/`++`/`~` on a key, a value that is a mapping, a Hydra key) is
composed by Hydra. `tests/test_launcher.py` checks the configs equal Hydra's own over a matrix of overrides.
"""

import functools
import gc
import pickle
import re
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict


def override_dirname(overrides: Sequence[Any], exclude_keys: Sequence[str], item_sep: str, kv_sep: str) -> str:
    """`hydra.job.override_dirname` of these parsed overrides, by Hydra's documented rule."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in exclude_keys)
    return re.sub("=", kv_sep, item_sep.join(lines))


def copied(cfg: DictConfig) -> DictConfig:
    """An independent copy of `cfg`, flags, types and all, through OmegaConf's own pickling: a third of the time
    of `copy.deepcopy`, which walks OmegaConf's nodes in Python (about 17 against 6 ms for a job's config)."""
    return pickle.loads(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))


@contextmanager
def young_garbage_only() -> Iterator[Any]:
    """While a sweep's jobs are set up, Python's collector runs only on what each job left behind (call what this
    yields after each): its full passes would walk every config kept so far (each JobReturn keeps two copies), a
    cost per job that grows with the jobs before it."""
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
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.groups = set(config_loader.list_groups(""))
        self.composed: Dict[Tuple, DictConfig] = {}  # by (group choices, keys set): Hydra's config of one job
        self.lines: Dict[str, Any] = {}  # each override line parsed once: a sweep's jobs share most of them

    def load(self, overrides: List[str]) -> DictConfig:
        parsed = [self.parse(line) for line in overrides]
        choices = tuple(o.input_line for o in parsed if self._is_choice(o))
        values = [o for o in parsed if not self._is_choice(o)]
        if not all(self._is_plain_value(o) for o in values):
            return self.loader.load_sweep_config(self.master, list(overrides))
        key = (choices, tuple(o.key_or_group for o in values))
        template = self.composed.get(key)
        if template is None:
            template = self.composed[key] = self.loader.load_sweep_config(self.master, list(overrides))
            return copied(template)
        cfg = copied(template)
        for o in values:
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        naming = cfg.hydra.job.config.override_dirname
        with open_dict(cfg):
            cfg.hydra.overrides.task = list(overrides)
            cfg.hydra.job.override_dirname = override_dirname(parsed, list(naming.exclude_keys), naming.item_sep,
                                                              naming.kv_sep)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        return cfg

    def parse(self, line: str) -> Any:
        if line not in self.lines:
            (self.lines[line],) = self.parser.parse_overrides([line])
        return self.lines[line]

    def _is_choice(self, o: Any) -> bool:
        """A config-group choice (`dataset=spirals`, `+exp=xor_relu`) or a Hydra override: part of the key."""
        return o.is_hydra_override() or o.key_or_group.split("/")[0] in self.groups

    @staticmethod
    def _is_plain_value(o: Any) -> bool:
        return not (o.package is not None or o.is_delete() or o.is_add() or o.is_force_add()
                    or o.is_sweep_override() or isinstance(o.value(), dict))
