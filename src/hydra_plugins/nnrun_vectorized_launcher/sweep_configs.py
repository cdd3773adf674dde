"""Composing a sweep's job configs without Hydra's full composition per job, with the same result.

Hydra composes every job of a sweep from scratch (defaults list, YAML files, merges): a few tenths of a second
per job, twice (once when the sweeper checks the batch, once when the launcher runs it), which for a 64-job
sweep of a tiny network costs more than the training. Jobs that pick the same config-group choices differ only
in values, so this composes once per distinct set of group choices and applies each job's value overrides to
a copy, exactly as Hydra applies them (`ConfigLoaderImpl._apply_overrides_to_config`), then fills in what
Hydra fills in per job (`hydra.overrides.task`, `hydra.job.override_dirname`). Anything unusual (a deletion,
a package override, a Hydra override, value keys that differ from the composed job's) is composed in full.
`tests/test_vectorized_launcher.py` checks the configs equal Hydra's own.

Hydra's sweepers compose each job once to check it (`validate_batch_is_legal`) and the launcher composes it
again; the checked config is kept and handed to the launcher (`take`), so each job is composed once. With it
come the two parts of it that running a job copies out (`JobConfigs`: the task's config and the hydra node),
made from the same template rather than copied per job.

`YamlSections` writes a job's `.hydra/*.yaml` as `OmegaConf.to_yaml` does, emitting only the `key: value` lines
and list items not seen in a job before, all in one dump (PyYAML's emitter is pure Python: the whole hydra.yaml
costs several milliseconds a job, nearly all of it the same text every time).
"""

import contextlib
import functools
import itertools
import logging
import os
import pickle
import secrets
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, ListConfig, OmegaConf, flag_override, open_dict, read_write
from omegaconf._utils import get_omega_conf_dumper


class JobConfigs(NamedTuple):
    """A job's config, and the copies of its parts that Hydra's `run_job` makes: the task's config (all keys but
    `hydra`) and HydraConfig's (only `hydra`); with `hydra_plain`, the hydra part as plain containers
    (`OmegaConf.to_container`) kept in step by `set_hydra`, for `.hydra/hydra.yaml`, or None to be made.

    HydraConfig's part holds the config's own `hydra` node rather than a copy of it: Hydra parents that node to
    the whole config too (so that it resolves interpolations into the user's keys), both are read-only once the
    job is set up, and one node is half the copying and setting per job.
    """

    config: DictConfig
    task: DictConfig
    hydra: DictConfig
    hydra_plain: Optional[Dict[str, Any]] = None

    @classmethod
    def of(cls, config: DictConfig) -> "JobConfigs":
        hydra = DictConfig({})
        with flag_override(hydra, "no_deepcopy_set_nodes", True):
            hydra["hydra"] = config._get_node("hydra")
        hydra.hydra._set_parent(config)
        return cls(config, OmegaConf.masked_copy(config, [key for key in config if key != "hydra"]), hydra)

    def plain_hydra(self) -> Dict[str, Any]:
        """`OmegaConf.to_container(self.hydra, enum_to_str=True)`, from `hydra_plain` where it is kept."""
        if self.hydra_plain is not None:
            return self.hydra_plain
        return OmegaConf.to_container(self.hydra, enum_to_str=True)  # type: ignore[return-value]


class Template(NamedTuple):
    """One set of group choices composed: its JobConfigs pickled, its value overrides' keys, its override lines
    (hydra.overrides.task), how Hydra names a job's dir from its overrides, and its hydra part as plain
    containers, pickled (a job's value overrides never change it: it differs only where `set_hydra` sets)."""

    configs: bytes
    value_keys: Tuple[str, ...]
    lines: Tuple[str, ...]
    dirname: Dict[str, Any]
    hydra_plain: bytes


class CachedSweepConfigs:
    """A drop-in for `config_loader.load_sweep_config(master, overrides)` that composes once per group choice."""

    def __init__(self, config_loader: Any, full: Callable[[DictConfig, List[str]], DictConfig]):
        self.full = full
        self.groups = set(config_loader.list_groups(""))
        self.parser = OverridesParser.create()
        # Per set of group choices: the composed JobConfigs, pickled (a copy by pickle.loads is about 4x faster
        # than copy.deepcopy or masked_copy of a DictConfig), and what a job's own overrides change in it.
        self.templates: Dict[Tuple, Template] = {}
        self.checked: Dict[Tuple, JobConfigs] = {}  # composed to be checked, not yet taken by the launcher
        self.parsed: Dict[str, Any] = {}  # override line -> Hydra's Override

    def __call__(self, master_config: DictConfig, sweep_overrides: List[str]) -> DictConfig:
        """Compose a job's config (the sweeper's check); the launcher's `take` then gets this very config."""
        job = self.compose(master_config, sweep_overrides)
        self.checked[(id(master_config), tuple(sweep_overrides))] = job
        return job.config

    def take(self, master_config: DictConfig, sweep_overrides: List[str]) -> JobConfigs:
        """The job's configs for the launcher: those composed for the sweeper's check, or new ones."""
        checked = self.checked.pop((id(master_config), tuple(sweep_overrides)), None)
        return checked if checked is not None else self.compose(master_config, sweep_overrides)

    def compose(self, master_config: DictConfig, sweep_overrides: List[str]) -> JobConfigs:
        parsed = [self._parse(line) for line in sweep_overrides]
        plain = all(o.package is None and not o.is_delete() and not o.is_hydra_override()
                    and not o.is_sweep_override() for o in parsed)
        if not plain:
            return JobConfigs.of(self.full(master_config, list(sweep_overrides)))
        choices = tuple(o.input_line for o in parsed if self._is_group(o.key_or_group))
        values = [o for o in parsed if not self._is_group(o.key_or_group)]
        value_keys = tuple(sorted(o.key_or_group for o in values))
        key = (id(master_config), choices)
        if key not in self.templates:
            job = JobConfigs.of(self.full(master_config, list(sweep_overrides)))
            naming = job.config.hydra.job.config.override_dirname
            self.templates[key] = Template(
                pickle.dumps(tuple(job[:3]), protocol=pickle.HIGHEST_PROTOCOL), value_keys, tuple(sweep_overrides),
                dict(kv_sep=naming.kv_sep, item_sep=naming.item_sep, exclude_keys=list(naming.exclude_keys)),
                pickle.dumps(job.plain_hydra(), protocol=pickle.HIGHEST_PROTOCOL))
            return job
        template = self.templates[key]
        if value_keys != template.value_keys:
            return JobConfigs.of(self.full(master_config, list(sweep_overrides)))
        job = JobConfigs(*pickle.loads(template.configs), pickle.loads(template.hydra_plain))
        # Only the values that differ from the template's (a sweep's jobs share most of theirs).
        changed = [o for o in values if o.input_line not in template.lines]
        for cfg in (job.config, job.task):
            ConfigLoaderImpl._apply_overrides_to_config(changed, cfg)
        lines = list(sweep_overrides)
        if len(lines) == len(template.lines):  # hydra.overrides.task: only the lines that differ
            updates: Dict[Tuple, Any] = {("overrides", "task", i): line
                                         for i, (line, was) in enumerate(zip(lines, template.lines)) if line != was}
        else:
            updates = {("overrides", "task"): lines}
        updates[("job", "override_dirname")] = get_overrides_dirname(overrides=parsed, **template.dirname)
        set_hydra(job, updates)
        OmegaConf.copy_cache(from_config=master_config, to_config=job.config)
        return job

    def _parse(self, line: str) -> Any:
        """One override, parsed once per sweep: jobs share most of theirs (ANTLR parsing is ~1 ms each)."""
        parsed = self.parsed.get(line)
        if parsed is None:
            parsed = self.parsed[line] = self.parser.parse_overrides([line])[0]
        return parsed

    def _is_group(self, key: str) -> bool:
        return key.split("/")[0] in self.groups or key.lstrip("+~") in self.groups


def set_hydra(job: JobConfigs, values: Dict[Tuple, Any]) -> None:
    """Set each path under `hydra` (a tuple of keys and list indices, e.g. ("job", "num")) to its value, in the
    job's hydra node (its config's and its hydra part's: one node, see JobConfigs) and in `hydra_plain`."""
    hydra = job.config.hydra
    with read_write(hydra), open_dict(hydra):
        for (*parents, name), value in values.items():
            node = hydra
            for parent in parents:
                node = node[parent]
            node[name] = value
    if job.hydra_plain is not None:
        # The value as the config holds it (converted to the node's type, interpolations unresolved).
        for (*parents, name), value in values.items():
            node, plain = job.config.hydra, job.hydra_plain["hydra"]
            for parent in parents:
                node, plain = node._get_node(parent), plain[parent]
            held = node._get_node(name)
            plain[name] = OmegaConf.to_container(held) if isinstance(held, (DictConfig, ListConfig)) \
                else held._value()


@contextlib.contextmanager
def interpolations_parsed_once() -> Iterator[None]:
    """While it lasts, OmegaConf parses each interpolation string once: a sweep's job configs resolve the same
    few (the sweep dir, the job dir, the job log's file name, ...) in every job, and each resolution parses its
    string again with ANTLR (about half a millisecond). The parse tree is only read by OmegaConf's resolver
    (`GrammarVisitor`), so one tree serves every resolution of its string; a string that fails to parse raises
    as before, each time (failures are not cached)."""
    from omegaconf import base

    original = base.parse
    base.parse = functools.lru_cache(maxsize=1024)(original)
    try:
        yield
    finally:
        base.parse = original


class JobLogs:
    """Hydra's `configure_log(hydra.job_logging, hydra.verbose)` for a sweep's jobs one after another: the same
    handlers writing to the same files, at a tenth of the cost.

    Hydra's job logging is a console handler and a `logging.FileHandler` writing to `<job dir>/<job name>.log`,
    and between two jobs only that file's name differs; each full configuration (logging's dictConfig, through
    Hydra's target checks) costs a few milliseconds a job. So when a job's logging config equals the last one
    configured in full but for its file handlers' file names, those handlers are pointed at the new files,
    opened as FileHandler opens them. Any other difference, handlers, formatters or filters other than logging's
    own stream and file handlers (a custom class could do anything when made), or a configuration that disables
    existing loggers, are configured in full.
    """

    PLAIN_HANDLERS = ("logging.StreamHandler", "logging.FileHandler")

    def __init__(self) -> None:
        self._applied: Any = None  # the config last applied in full, without its file names; and `verbose`
        self._files: Dict[str, logging.FileHandler] = {}  # its file handlers by name

    def configure(self, job_logging: Any, verbose: Any) -> None:
        from hydra.core.utils import configure_log

        conf = OmegaConf.to_container(job_logging, resolve=True) if job_logging is not None else None
        files = self._file_handlers(conf)
        plain_verbose = OmegaConf.to_container(verbose) if isinstance(verbose, ListConfig) else verbose
        key = None if files is None else (self._without_file_names(conf, files), plain_verbose)
        if key is not None and key == self._applied and self._repoint(conf, files):
            return
        configure_log(job_logging, verbose)
        self._applied, self._files = (key, self._find(conf, files)) if key is not None else (None, {})

    def _file_handlers(self, conf: Any) -> Optional[List[str]]:
        """The names of the file handlers, or None when `conf` is not one to re-point (see the class)."""
        # A configuration that disables the loggers made since the last one (logging's default) must run in full.
        if not isinstance(conf, dict) or conf.get("root") is None or conf.get("incremental") or \
                conf.get("disable_existing_loggers", True):
            return None
        handlers = conf.get("handlers") or {}
        sections = [*handlers.values(), *(conf.get("formatters") or {}).values(),
                    *(conf.get("filters") or {}).values()]
        if any(not isinstance(section, dict) or "()" in section for section in sections) or any(
                h.get("class") not in self.PLAIN_HANDLERS for h in handlers.values()):
            return None
        files = [name for name, h in handlers.items() if h["class"] == "logging.FileHandler"]
        return None if any(handlers[name].get("delay") for name in files) else files

    @staticmethod
    def _without_file_names(conf: Dict[str, Any], files: List[str]) -> Dict[str, Any]:
        handlers = {name: {k: v for k, v in h.items() if not (name in files and k == "filename")}
                    for name, h in conf["handlers"].items()}
        return {**conf, "handlers": handlers}

    @staticmethod
    def _find(conf: Dict[str, Any], files: List[str]) -> Dict[str, logging.FileHandler]:
        """The file handlers the full configuration made, on the root logger and the configured ones."""
        loggers = [logging.getLogger(), *(logging.getLogger(name) for name in conf.get("loggers") or {})]
        found = {h.name: h for logger in loggers for h in logger.handlers
                 if type(h) is logging.FileHandler and h.name in files}
        return found if len(found) == len(files) else {}

    def _repoint(self, conf: Dict[str, Any], files: List[str]) -> bool:
        if set(self._files) != set(files):
            return False
        for name in files:
            handler = self._files[name]
            # What FileHandler.__init__ does with a file name, then its own _open (mode, encoding, errors).
            handler.baseFilename = os.path.abspath(os.fspath(conf["handlers"][name]["filename"]))
            old = handler.setStream(handler._open())
            if old is not None:
                old.close()
        return True


def install(config_loader: Any) -> CachedSweepConfigs:
    """Make `config_loader.load_sweep_config` the cached one, for the launcher and for the sweeper's own check
    of each batch (Hydra's BasicSweeper composes every job once more before launching it)."""
    if isinstance(getattr(config_loader, "load_sweep_config", None), CachedSweepConfigs):
        return config_loader.load_sweep_config
    cached = CachedSweepConfigs(config_loader, config_loader.load_sweep_config)
    config_loader.load_sweep_config = cached
    return cached


class YamlSections:
    """`OmegaConf.to_yaml(cfg)` for many similar configs, emitting only the values not seen before.

    A block-style mapping is the concatenation of its entries' texts, at any depth, so each `key: value` below a
    mapping is reused once emitted (keyed by its path and the plain value's repr, which tells 1 from 1.0 from
    "1"). A block sequence is likewise the concatenation of its items' texts (`- item`), and a mapping's or
    sequence's own line (`key:`) is a text too. The texts a document lacks are emitted together, each in place
    in its parents (so its indentation and line folding are the emitter's own) with a mark line before it and
    at the end of every mapping and sequence, and cut out between the marks: one PyYAML dump per document that
    has anything new (a sweep's next job: its id, num, dir and dir name), however many texts it lacks.
    """

    def __init__(self) -> None:
        self.texts: Dict[Tuple[Any, ...], str] = {}
        self.dumper = get_omega_conf_dumper()
        # Keys (and items) no config has; the random part keeps a user's value from ever reading as a mark.
        self.mark = f"nnrun_yaml_mark_{secrets.token_hex(4)}_"

    def dump(self, cfg: Any, resolve: bool = False) -> str:
        return self.dump_plain(OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True))

    def dump_plain(self, container: Any) -> str:
        """The YAML of a plain container, as `OmegaConf.to_yaml` writes the config it came from."""
        if not container or not isinstance(container, (dict, list)):
            return self._emit(container)
        pieces: List[Any] = []  # texts, and the keys of texts not emitted yet
        wanted: Dict[Tuple[Any, ...], Tuple] = {}  # cache key -> (parents, key, kind, value)
        if isinstance(container, list):
            for item in container:
                self._want(pieces, wanted, (), None, "item", item)
        else:
            for key, value in container.items():
                self._walk(pieces, wanted, (), key, value)
        if wanted:
            self._emit_wanted(wanted, isinstance(container, list))
        return "".join(piece if isinstance(piece, str) else self.texts[piece] for piece in pieces)

    def _walk(self, pieces: List[Any], wanted: Dict, parents: Tuple[Any, ...], key: Any, value: Any) -> None:
        if isinstance(value, (dict, list)) and value:
            self._want(pieces, wanted, parents, key, "dict" if isinstance(value, dict) else "list", None)
            if isinstance(value, list):  # its items follow, at the key's own indentation
                for item in value:
                    self._want(pieces, wanted, parents, key, "item", item)
            else:
                for k, v in value.items():
                    self._walk(pieces, wanted, parents + (key,), k, v)
        else:
            self._want(pieces, wanted, parents, key, "value", value)

    def _want(self, pieces: List[Any], wanted: Dict, parents: Tuple[Any, ...], key: Any, kind: str,
              value: Any) -> None:
        """The text of `key: value` ("value"), of the line opening a mapping or list at key ("dict", "list"),
        or of `- value` in the list at key ("item"; key None: the document is the list), inside `parents`."""
        cache_key = (parents, repr(key), kind, repr(value))
        text = self.texts.get(cache_key)
        if text is not None:
            pieces.append(text)
            return
        pieces.append(cache_key)
        wanted.setdefault(cache_key, (parents, key, kind, value))

    def _emit_wanted(self, wanted: Dict[Tuple[Any, ...], Tuple], is_list: bool) -> None:
        """Emit every wanted text in one document, each after a mark of its own, and cut them out."""
        counter = itertools.count()
        root: Any = [] if is_list else {}
        made = [root]  # the mappings and lists of this document (the values inside them are the config's own)
        starts = {}  # mark -> cache key of the text after it

        def opened(node: Dict, key: Any, empty: Any) -> Any:
            """node[key], made (after a mark of its own, which keeps its line out of the text before) if new."""
            if key not in node:
                node[f"{self.mark}{next(counter)}"] = 0
                node[key] = empty
                made.append(empty)
            return node[key]

        for cache_key, (parents, key, kind, value) in wanted.items():
            node = root
            for parent in parents:
                node = opened(node, parent, {})
            mark = f"{self.mark}{next(counter)}"
            starts[mark] = cache_key
            if kind == "item":
                sequence = root if key is None else opened(node, key, [])
                sequence += (mark, value)
            elif kind == "value":
                node[mark] = 0
                node[key] = value
            else:  # a mapping's or list's own line, which ends at the mark that opens its contents
                node[mark] = 0
                inner = f"{self.mark}{next(counter)}"
                node[key] = {inner: 0} if kind == "dict" else [inner]
                made.append(node[key])
        for node in made:  # a mark ends every mapping and list: no text runs past its container
            if isinstance(node, dict):
                node[f"{self.mark}{next(counter)}"] = 0
            else:
                node.append(f"{self.mark}{next(counter)}")
        current, text = None, []
        for line in self._emit(root).splitlines(keepends=True):
            content = line.strip()
            if content.startswith(("- " + self.mark, self.mark)):
                name = content[2:] if content.startswith("- ") else content[:-3]  # "- mark" / "mark: 0"
                if current is not None:
                    self.texts[current] = "".join(text)
                current, text = starts.get(name), []
            elif current is not None:
                text.append(line)
        assert all(key in self.texts for key in wanted), "a mark went missing"

    def _emit(self, container: Any) -> str:
        return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                         Dumper=self.dumper)
