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
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun_vectorized_launcher.sweep_configs import CachedSweepConfigs
    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", ["hydra/launcher=vectorized"], RunMode.MULTIRUN)
        cached = CachedSweepConfigs(loader, loader.load_sweep_config)
        jobs = [["optimizer=sgd", f"optimizer.lr={lr}", f"seed={seed}", "model.hidden=[8]"]
                for lr in (0.1, 0.01) for seed in (0, 1)] + [["optimizer=adam", "optimizer.lr=0.3", "seed=2"],
                                                             ["optimizer=adam", "+exp=xor_relu", "seed=3"]]
        for overrides in jobs:
            expected = loader.load_sweep_config(master, overrides)
            got = cached(master, overrides)
            for cfg in (expected, got):
                cfg.hydra.runtime.cwd = ""
            assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected), overrides
        assert len(cached.templates) == 3  # one full composition per set of group choices


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
