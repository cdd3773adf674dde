"""Composing a sweep's job configs without Hydra's full composition per job, with the same result.

Hydra composes every job of a sweep from scratch (defaults list, YAML files, merges): a few tenths of a second
per job, twice (once when the sweeper checks the batch, once when the launcher runs it), which for a 64-job
sweep of a tiny network costs more than the training. Jobs that pick the same config-group choices differ only
in values, so this composes once per distinct set of group choices and applies each job's value overrides to
a copy, exactly as Hydra applies them (`ConfigLoaderImpl._apply_overrides_to_config`), then fills in what
Hydra fills in per job (`hydra.overrides.task`, `hydra.job.override_dirname`). Anything unusual (a deletion,
a package override, a Hydra override, value keys that differ from the composed job's) is composed in full.
`tests/test_vectorized_launcher.py` checks the configs equal Hydra's own.
"""

import copy
from typing import Any, Callable, Dict, List, Tuple

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


class CachedSweepConfigs:
    """A drop-in for `config_loader.load_sweep_config(master, overrides)` that composes once per group choice."""

    def __init__(self, config_loader: Any, full: Callable[[DictConfig, List[str]], DictConfig]):
        self.full = full
        self.groups = set(config_loader.list_groups(""))
        self.parser = OverridesParser.create()
        self.templates: Dict[Tuple, Tuple[DictConfig, Tuple[str, ...]]] = {}

    def __call__(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(sweep_overrides))
        plain = all(o.package is None and not o.is_delete() and not o.is_hydra_override()
                    and not o.is_sweep_override() for o in parsed)
        if not plain:
            return self.full(master_config, list(sweep_overrides))
        choices = tuple(o.input_line for o in parsed if self._is_group(o.key_or_group))
        values = [o for o in parsed if not self._is_group(o.key_or_group)]
        value_keys = tuple(sorted(o.key_or_group for o in values))
        key = (id(master_config), choices)
        if key not in self.templates:
            cfg = self.full(master_config, list(sweep_overrides))
            self.templates[key] = (copy.deepcopy(cfg), value_keys)
            return cfg
        template, template_keys = self.templates[key]
        if value_keys != template_keys:
            return self.full(master_config, list(sweep_overrides))
        cfg = copy.deepcopy(template)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in parsed]
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=parsed, kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
                item_sep=cfg.hydra.job.config.override_dirname.item_sep,
                exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _is_group(self, key: str) -> bool:
        return key.split("/")[0] in self.groups or key.lstrip("+~") in self.groups


def install(config_loader: Any) -> CachedSweepConfigs:
    """Make `config_loader.load_sweep_config` the cached one, for the launcher and for the sweeper's own check
    of each batch (Hydra's BasicSweeper composes every job once more before launching it)."""
    if isinstance(getattr(config_loader, "load_sweep_config", None), CachedSweepConfigs):
        return config_loader.load_sweep_config
    cached = CachedSweepConfigs(config_loader, config_loader.load_sweep_config)
    config_loader.load_sweep_config = cached
    return cached
