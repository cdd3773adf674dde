"""`nnrun train -m hydra/launcher=vectorized`: run dirs as the basic launcher writes them, same results; bad input."""

from __future__ import annotations

import pytest

from conftest import read_metrics, run_dirs, run_nnrun

SWEEP = ["optimizer.lr=0.01,0.1", "seed=0,1", "model.hidden=[3],[4]", "train.epochs=15", "dataset=circles",
         "dataset.n_samples=60", "train.batch_size=16"]


def test_cached_sweep_configs_equal_hydras_own():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf, read_write

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import CachedSweepConfigs, YamlSections, set_hydra
    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", ["hydra/launcher=vectorized"], RunMode.MULTIRUN)
        cached = CachedSweepConfigs(loader, loader.load_sweep_config)
        yamls = YamlSections()
        jobs = [["optimizer=sgd", f"optimizer.lr={lr}", f"seed={seed}", "model.hidden=[8]"]
                for lr in (0.1, 0.01) for seed in (0, 1)] + [["optimizer=adam", "optimizer.lr=0.3", "seed=2"],
                                                             ["optimizer=adam", "+exp=xor_relu", "seed=3"]]
        emitted = []  # texts YamlSections has emitted, after each job
        for overrides in jobs:
            expected = loader.load_sweep_config(master, overrides)
            got = cached(master, overrides)
            for cfg in (expected, got):
                cfg.hydra.runtime.cwd = ""
            assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected), overrides
            for node in ("", "hydra", "hydra.job", "train", "optimizer"):  # flags and types too
                a, b = (OmegaConf.select(cfg, node) if node else cfg for cfg in (got, expected))
                assert (OmegaConf.is_struct(a), OmegaConf.is_readonly(a), OmegaConf.get_type(a)) == (
                    OmegaConf.is_struct(b), OmegaConf.is_readonly(b), OmegaConf.get_type(b)), (overrides, node)
            # The .hydra/ files' text, emitted a section at a time, is OmegaConf's.
            task = OmegaConf.masked_copy(expected, [key for key in expected if key != "hydra"])
            for node in (task, OmegaConf.masked_copy(expected, "hydra"), expected.hydra.overrides.task):
                assert yamls.dump(node) == OmegaConf.to_yaml(node), overrides
            assert yamls.dump(task, resolve=True) == OmegaConf.to_yaml(task, resolve=True), overrides
            emitted.append(len(yamls.texts))
            # The sweeper's check composes the job; the launcher takes that config rather than composing again,
            # with the copies of its parts that running a job makes.
            taken = cached.take(master, overrides)
            # What a job's set-up sets: converted to the node's type (id is a str), interpolations kept; the plain
            # copy of the hydra part behind hydra.yaml stays equal to the config.
            other = cached.compose(master, overrides)
            set_hydra(other, {("job", "id"): 7, ("job", "num"): 7, ("runtime", "output_dir"): "/x/${exp_name}",
                              ("overrides", "task", 0): "seed=${oc.env:HOME}"})
            assert other.hydra.hydra.job.id == "7" and other.config.hydra.runtime.output_dir.startswith("/x/")
            assert YamlSections().dump_plain(other.plain_hydra()) == OmegaConf.to_yaml(other.hydra), overrides
            assert YamlSections().dump_plain(other.plain_hydra()) == OmegaConf.to_yaml(
                OmegaConf.masked_copy(other.config, "hydra")), overrides
            assert taken.config is got and cached.take(master, overrides).config is not got
            with read_write(taken.hydra):
                taken.hydra.hydra.runtime.cwd = ""  # as above
            for part, keys in ((taken.task, [key for key in expected if key != "hydra"]), (taken.hydra, "hydra")):
                assert OmegaConf.to_yaml(part) == OmegaConf.to_yaml(OmegaConf.masked_copy(expected, keys))
            assert OmegaConf.get_type(taken.hydra, "hydra") is OmegaConf.get_type(expected, "hydra")
            # HydraConfig's part is the config's own hydra node, parented to the config: it resolves the config's
            # keys (hydra.sweep.dir holds ${exp_name}), as HydraConfig.set_config's copy does.
            assert taken.hydra._get_node("hydra") is taken.config._get_node("hydra")
            assert taken.hydra.hydra.sweep.dir == expected.hydra.sweep.dir
        assert len(cached.templates) == 3  # one full composition per set of group choices
        # The second job differs from the first in its seed: only its lines are emitted (seed, the override
        # lists, the job's dir name), not the rest of its four files' 200-odd lines.
        assert emitted[1] - emitted[0] <= 5, emitted


@pytest.mark.parametrize("overrides", [
    [], ["+exp=xor_relu"], ["optimizer=rmsprop", "model.hidden=[8,8]", "train.early_stopping.patience=3"],
    ["exp_name=${optimizer.name}_${seed}", "+note=lr_${optimizer.lr}"], ["dataset=spirals", "activation=tanh"]])
def test_a_jobs_config_reads_the_same_from_its_plain_containers(overrides):
    """The launcher parses and logs a job's config from plain containers, resolved only where it holds an
    interpolation: the same TrainConfig as from the DictConfig, and the same text as OmegaConf's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import YamlSections
    from hydra_plugins.nnrun_vectorized_launcher.vectorized_launcher import _has_interpolation
    from nnrun import config as schema
    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        task = compose("train", overrides=overrides)
    plain = OmegaConf.to_container(task, enum_to_str=True)
    resolved = OmegaConf.to_container(task, resolve=True, enum_to_str=True)
    assert _has_interpolation(plain) == any("${" in o for o in overrides)
    if not _has_interpolation(plain):
        assert plain == resolved
    assert schema.parse(resolved) == schema.parse(task)
    assert YamlSections().dump_plain(resolved) == OmegaConf.to_yaml(task, resolve=True)


def test_interpolations_parsed_once_resolve_as_before_and_only_while_it_lasts():
    """Each interpolation string is parsed once inside the block, values resolve as without it (in any config,
    in any order), a bad one raises every time, and OmegaConf's own parse is back afterwards."""
    from omegaconf import OmegaConf, base
    from omegaconf.errors import GrammarParseError

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import interpolations_parsed_once

    original = base.parse
    parsed = []

    def counting(value, *args):
        parsed.append(value)
        return original(value, *args)

    text = {"a": 2, "b": "x_${a}_${oc.select:c.d,no}", "c": {"d": "${a}"}, "e": "${b}/${c.d}"}
    want = [OmegaConf.create({**text, "a": a}) for a in (1, 2, 3)]
    want = [{k: cfg[k] for k in ("b", "c", "e")} for cfg in want]
    base.parse = counting
    try:
        with interpolations_parsed_once():
            for _ in range(2):
                for a, expected in zip((1, 2, 3), want):
                    cfg = OmegaConf.create({**text, "a": a})
                    assert {k: cfg[k] for k in ("b", "c", "e")} == expected
            for _ in range(2):
                with pytest.raises(GrammarParseError):
                    base.parse("${a")
            assert len(parsed) == len(set(parsed)) + 1 and parsed.count("${a") == 2
        assert base.parse is counting
    finally:
        base.parse = original


def test_job_logs_write_each_jobs_log_where_hydras_configure_log_would(tmp_path, monkeypatch):
    """Hydra's job logging (a console and a file handler per job): after each job's set-up a message lands in that
    job's own log file, as after Hydra's configure_log; the full configuration runs once, and again for a
    config that differs in more than the file name, or whose handlers are not logging's plain ones."""
    import logging.config

    import hydra.core.utils
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import JobLogs

    full = []
    configure_log = hydra.core.utils.configure_log
    monkeypatch.setattr(hydra.core.utils, "configure_log", lambda *args: (full.append(1), configure_log(*args)))

    def job_logging(job: str, level: str = "INFO", handler: str = "logging.FileHandler"):
        return OmegaConf.create({
            "version": 1, "formatters": {"simple": {"format": "[%(levelname)s] %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple",
                                     "stream": "ext://sys.stdout"},
                         "file": {"class": handler, "formatter": "simple", "filename": f"{tmp_path}/{job}.log"}},
            "root": {"level": level, "handlers": ["console", "file"]}, "disable_existing_loggers": False})

    logs, root = JobLogs(), logging.getLogger()
    saved = root.handlers[:], root.level
    disabled = {name: lg.disabled for name, lg in logging.Logger.manager.loggerDict.items()
                if isinstance(lg, logging.Logger)}
    try:
        for job in ("a", "b", "c"):
            logs.configure(job_logging(job), False)
            logging.getLogger("nnrun.test").info("in %s", job)
        assert len(full) == 1
        for job in ("a", "b", "c"):
            assert (tmp_path / f"{job}.log").read_text() == f"[INFO] in {job}\n"
        logs.configure(job_logging("d", level="WARNING"), False)  # another level: configured in full
        logs.configure(job_logging("e", level="WARNING"), OmegaConf.create(["x"]))  # another verbose: in full
        logs.configure(job_logging("f", level="WARNING"), OmegaConf.create(["x"]))
        assert len(full) == 3
        logging.getLogger("nnrun.test").warning("in f")
        assert (tmp_path / "f.log").read_text() == "[WARNING] in f\n" and (tmp_path / "e.log").read_text() == ""
        for job in ("g", "h"):  # a handler class other than logging's own: always in full
            logs.configure(job_logging(job, handler="logging.handlers.WatchedFileHandler"), "x")
        assert len(full) == 5 and (tmp_path / "h.log").is_file()
        for job in ("i", "j"):  # disabling the loggers made since: always in full
            logs.configure(OmegaConf.merge(job_logging(job), {"disable_existing_loggers": True}), "x")
        assert len(full) == 7 and (tmp_path / "j.log").is_file()
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        root.handlers[:], root.level = saved
        logging.getLogger("x").setLevel(logging.NOTSET)
        for name, lg in logging.Logger.manager.loggerDict.items():  # as they were before the test
            if isinstance(lg, logging.Logger):
                lg.disabled = disabled.get(name, False)


def test_yaml_sections_write_what_omegaconf_writes_for_awkward_values():
    """Key by key and item by item, the text is OmegaConf.to_yaml's: nested and empty lists and mappings, strings
    that need quotes, long lines the emitter folds, unicode, numbers of every kind; and again from the cache."""
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import YamlSections

    long = "a fairly long value " * 8
    configs = [
        {"a": [1, [2, [3, []]], {"b": [], "c": {}}, [{"d": 1.0, "e": "1"}]], "f": {"g": {"h": [long, "x: y"]}}},
        {"a": [1, [2, [3, [4]]], {"b": [None], "c": {"z": True}}], "f": {"g": {"h": ["yes", "null", "", "ü ✓"]}}},
        {"top": ["- dash", "# hash", "'quoted'", '"double"', "multi\nline", 1e-5, -0.0, 10**20], "k": long},
        [{"x": 1, "y": [1, 2]}, [1, [2]], "plain", "0x1F", "~", {"z": {}}],
        ["seed=1", "optimizer.lr=0.01", "model.hidden=[4,4]", "dataset.path=${oc.env:HOME}/data.csv"],
        # Like the first but for a few values deep inside, in several mappings and lists: only those are new.
        {"a": [1, [2, [3, []]], {"b": [], "c": {}}, [{"d": 2.0, "e": "1"}]], "f": {"g": {"h": [long, "x: z"]}},
         "i": {"j": {}, "k": [[]]}},
        ["seed=2", "optimizer.lr=0.01", "model.hidden=[4,4]", "dataset.path=${oc.env:HOME}/data.csv"],
    ]
    yamls = YamlSections()
    for _ in range(2):
        for config in configs:
            assert yamls.dump_plain(config) == OmegaConf.to_yaml(OmegaConf.create(config)), config


@pytest.mark.slow
def test_vectorized_sweep_writes_the_run_dirs_of_the_basic_launcher_with_the_same_results(tmp_path):
    runs = {}
    for launcher in ("basic", "vectorized"):
        extra = ["hydra.launcher.max_models=3"] if launcher == "vectorized" else []
        done = run_nnrun(["train", "-m", f"hydra/launcher={launcher}", f"exp_name={launcher}", *SWEEP, *extra],
                         tmp_path)
        assert done.returncode == 0, done.stderr
        runs[launcher] = run_dirs(tmp_path / "experiments" / launcher)
    assert "2 separate stacks" in done.stderr  # hidden [3] and [4] cannot share a stack
    assert done.stdout.count("as one stacked model") == 4  # 2 stacks of 4 jobs, in chunks of at most 3
    basic, vectorized = runs["basic"], runs["vectorized"]
    assert [d.name.replace("=vectorized", "=basic") for d in vectorized] == [d.name for d in basic]
    assert len(basic) == 8
    for b, v in zip(basic, vectorized):
        assert sorted(p.name for p in (v / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
        for name in ("config.yaml", "overrides.yaml"):  # the same text, but for the launcher's own words
            text = (v / ".hydra" / name).read_text().replace("- hydra.launcher.max_models=3\n", "")
            assert text.replace("vectorized", "basic") == (b / ".hydra" / name).read_text(), name
        assert (v / "train.log").is_file()  # the job's log, as Hydra's job_logging makes it
        assert (v / "checkpoint.pt").is_file() and list(v.glob("events.out.tfevents.*"))
        mb, mv = read_metrics(b), read_metrics(v)
        assert mv.keys() == mb.keys() and mv["status"] == mb["status"] and mv["best"] == pytest.approx(mb["best"])
        assert mv["final"] == pytest.approx(mb["final"], abs=1e-5)
    predicted = run_nnrun(["predict", str(vectorized[0]), "0.5", "-0.5"], tmp_path)
    assert predicted.returncode == 0, predicted.stderr


def test_vectorized_launcher_without_multirun_is_one_line_and_exit_2(tmp_path):
    done = run_nnrun(["train", "hydra/launcher=vectorized"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "add -m" in done.stderr


def test_vectorized_sweep_over_an_unreadable_data_file_is_one_line_and_exit_2(tmp_path):
    """The data are read once per stack, before it trains: a file that is not there is bad input, as for a single
    run, not a traceback."""
    done = run_nnrun(["train", "-m", "hydra/launcher=vectorized", "dataset=csv",
                      f"dataset.path={tmp_path / 'missing.csv'}", "seed=0,1"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert "dataset.path" in done.stderr and "no such file" in done.stderr


def test_vectorized_sweep_never_imports_torch_dynamo(tmp_path):
    # torch.optim's first optimizer imports torch._dynamo (about 2 s, a tenth of a 64-job sweep of small nets):
    # the stacked rules and the checkpoints' optimizer state need no torch.optim optimizer.
    import os
    import subprocess
    import sys

    from conftest import SRC

    code = ("import sys\nfrom nnrun import cli\n"
            "sys.argv = ['nnrun', 'train', '-m', 'hydra/launcher=vectorized', 'seed=0,1', 'train.epochs=3',"
            " 'optimizer=adagrad']\n"
            "try:\n    cli.main()\nfinally:\n    print('dynamo imported:', 'torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dynamo imported: False" in done.stdout
    assert len(run_dirs(tmp_path / "experiments")) == 2
