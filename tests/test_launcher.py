"""`nnrun train -m hydra/launcher=vectorized`: job configs as Hydra composes them, run dirs and results as the
basic launcher writes them, bad input before any job."""

from __future__ import annotations

import pytest

from conftest import events, read_metrics, run_dirs, run_nnrun, run_python

# Value overrides of every kind a sweep sets (numbers, lists, strings, interpolations, nested keys), on
# different group choices, in different orders.
JOBS = [
    ["optimizer=sgd", "optimizer.lr=0.1", "seed=0", "model.hidden=[8]"],
    ["optimizer=sgd", "optimizer.lr=0.01", "seed=1", "model.hidden=[8,8]"],
    ["optimizer=sgd", "seed=1", "optimizer.lr=0.01", "model.hidden=[8,8]"],
    ["optimizer=adam", "optimizer.lr=0.3", "seed=2"],
    ["optimizer=adam", "optimizer.lr=1e-3", "seed=3"],
    ["+exp=xor_relu", "optimizer=adam", "seed=3", "optimizer.betas=[0.5,0.9]"],
    ["+exp=xor_relu", "optimizer=adam", "seed=4", "optimizer.betas=[0.1,0.2]"],
    ["exp_name=${optimizer.name}_${seed}", "seed=5", "train.early_stopping.patience=3"],
    ["exp_name=run_${seed}", "seed=6", "train.early_stopping.patience=null"],
    ["dataset=csv", "dataset.path=data/a.csv", "dataset.target=label"],
    ["dataset=csv", "dataset.path='b c.csv'", "dataset.target=null"],
    ["+train.extra=1", "seed=1"],
    ["~train.resume", "seed=2"],
]


def test_sweep_configs_equal_hydras_own_composition():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from hydra_plugins.nnrun.sweep_configs import SweepConfigs
    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", ["hydra/launcher=vectorized"], RunMode.MULTIRUN)
        configs = SweepConfigs(loader, master)
        for overrides in JOBS:
            try:
                expected = loader.load_sweep_config(master, overrides)
            except Exception as exc:  # Hydra refuses it: so must the launcher
                with pytest.raises(type(exc)):
                    configs.load(overrides)
                continue
            got = configs.load(overrides)
            for cfg in (expected, got):
                cfg.hydra.runtime.cwd = ""
            assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected), overrides
            task = [key for key in expected if key != "hydra"]
            assert OmegaConf.to_yaml(OmegaConf.masked_copy(got, task), resolve=True) == OmegaConf.to_yaml(
                OmegaConf.masked_copy(expected, task), resolve=True), overrides
            for node in ("", "hydra", "hydra.job", "train", "optimizer", "model"):  # flags and types too
                a, b = (OmegaConf.select(cfg, node) if node else cfg for cfg in (got, expected))
                assert (OmegaConf.is_struct(a), OmegaConf.is_readonly(a), OmegaConf.get_type(a)) == (
                    OmegaConf.is_struct(b), OmegaConf.is_readonly(b), OmegaConf.get_type(b)), (overrides, node)
        # One of Hydra's compositions per set of group choices and keys; the others derived from it.
        assert len(configs.composed) == 6


def tags_and_steps(run_dir):
    """{tag: steps} of a run's scalars, and {tag: steps} of its images, through TensorBoard's own reader."""
    acc = events(run_dir)
    scalars = {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    images = {tag: [e.step for e in acc.Images(tag)] for tag in acc.Tags()["images"]}
    return scalars, images, {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_basic_and_vectorized_sweeps_write_the_same_runs(tmp_path):
    """Every rule of the loop under both launchers: early stopping, log_every, image_every, log_steps, the loss
    landscape and checkpoint_every, over two lrs x two seeds."""
    import torch

    sweep = ["optimizer.lr=0.02,0.3", "seed=0,1", "dataset=circles", "dataset.n_samples=80",
             "dataset.val_fraction=0.25", "model.hidden=[6]", "train.epochs=40", "train.batch_size=20",
             "train.early_stopping.patience=4", "train.log_every=7", "train.image_every=15", "train.log_steps=true",
             "train.landscape=true", "train.checkpoint_every=10"]
    runs = {}
    for launcher in ("basic", "vectorized"):
        done = run_nnrun(["train", "-m", f"hydra/launcher={launcher}", f"exp_name={launcher}", *sweep], tmp_path)
        assert done.returncode == 0, done.stderr
        runs[launcher] = run_dirs(tmp_path / "experiments" / launcher)
    assert len(runs["basic"]) == len(runs["vectorized"]) == 4
    statuses = set()
    for b, v in zip(runs["basic"], runs["vectorized"]):
        mb, mv = read_metrics(b), read_metrics(v)
        assert [o.replace("vectorized", "basic") for o in mv["overrides"]] == mb["overrides"]
        statuses.add(mb["status"])
        assert (mv["status"], mv["epochs_run"], mv["best"]["epoch"]) == (mb["status"], mb["epochs_run"],
                                                                         mb["best"]["epoch"])
        assert mv["best"] == pytest.approx(mb["best"], abs=1e-5)
        assert mv["final"] == pytest.approx(mb["final"], abs=1e-5)
        (sb, ib, vb), (sv, iv, vv) = tags_and_steps(b), tags_and_steps(v)
        assert sv == sb and iv == ib
        for tag in vb:
            assert vv[tag] == pytest.approx(vb[tag], abs=1e-5, nan_ok=True), tag
        cb, cv = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (b, v))
        assert cv.keys() == cb.keys() and cv["resume"].keys() == cb["resume"].keys()
        assert cv["resume"]["optimizer"]["state"].keys() == cb["resume"]["optimizer"]["state"].keys()
        for key, value in cb["model"].items():
            torch.testing.assert_close(cv["model"][key], value, atol=1e-5, rtol=1e-5)
    assert statuses == {"stopped_early", "completed"}  # both ends of the loop: the rule that stops, and the last epoch


@pytest.mark.slow
def test_a_sweep_over_architectures_trains_in_stacks_of_max_models(tmp_path):
    done = run_nnrun(["train", "-m", "hydra/launcher=vectorized", "hydra.launcher.max_models=3",
                      "optimizer.lr=0.01,0.1", "seed=0,1", "model.hidden=[3],[4]", "train.epochs=15"], tmp_path)
    assert done.returncode == 0, done.stderr
    dirs = run_dirs(tmp_path / "experiments")
    assert len(dirs) == 8 and all(read_metrics(d)["status"] == "completed" for d in dirs)
    assert "trained 8 jobs in 4 stacks" in done.stdout  # [3] and [4] apart, each 4 jobs in chunks of at most 3
    predicted = run_nnrun(["predict", str(dirs[0]), "0.5", "-0.5"], tmp_path)
    assert predicted.returncode == 0, predicted.stderr


def test_vectorized_launcher_without_multirun_is_one_line_and_exit_2(nnrun_here):
    code, _, err = nnrun_here(["train", "hydra/launcher=vectorized"])
    assert code == 2
    assert err.strip().count("\n") == 0 and "add -m" in err


def test_vectorized_sweep_over_an_unreadable_data_file_is_one_line_and_exit_2(tmp_path, nnrun_here):
    """The data are read once per stack, before any stack trains: a file that is not there is bad input, as for
    a single run, not a traceback."""
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized", "dataset=csv",
                               f"dataset.path={tmp_path / 'missing.csv'}", "seed=0,1"])
    assert code == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert "dataset.path" in err and "no such file" in err


@pytest.mark.parametrize("setting", ["hydra.launcher.max_models=0", "hydra.launcher.memory_budget_mb=-1"])
def test_a_launcher_setting_out_of_range_is_one_line_and_exit_2(setting, tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=vectorized", setting, "seed=0,1"])
    assert code == 2, err
    assert err.strip().count("\n") == 0 and setting.split("=")[0] in err
    assert not run_dirs(tmp_path)


@pytest.mark.slow
def test_vectorized_sweep_never_imports_torch_dynamo(tmp_path):
    # torch.optim's first optimizer imports torch._dynamo (about 2 s, a tenth of a 64-job sweep of small nets):
    # the stacked rules and the checkpoints' optimizer state need no torch.optim optimizer.
    code = ("import sys\nfrom nnrun import cli\n"
            "sys.argv = ['nnrun', 'train', '-m', 'hydra/launcher=vectorized', 'seed=0,1', 'train.epochs=3',"
            " 'optimizer=adagrad']\n"
            "try:\n    cli.main()\nfinally:\n    print('dynamo imported:', 'torch._dynamo' in sys.modules)\n")
    done = run_python(code, tmp_path)  # a new interpreter: this one may have imported torch._dynamo already
    assert done.returncode == 0, done.stderr
    assert "dynamo imported: False" in done.stdout
    assert len(run_dirs(tmp_path / "experiments")) == 2
