"""What a new user trips over in the first hour: a forgotten or extra plus, a key nnrun does not know, a key
written without its section, a launcher or sweeper of the sweep extra that is not installed. Each is one line
that says what to write instead, and exit 2."""

import sys
from pathlib import Path

import pytest

from conftest import compose, needs_extra, run_dirs, run_main
from nnrun import preflight
from nnrun.config import ConfigError, parse

CONF = Path(__file__).resolve().parents[1] / "conf"
INSTALL = 'pip install -e ".[sweep]"'


def _one_error_line(code, err) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nnrun: error: "), (code, err)
    return lines[0]


# -- the plus on config groups ---------------------------------------------------------------------------------

def test_groups_without_a_default_are_exp_and_hparams_search():
    """conf/train.yaml's defaults list decides which groups are overridden (group=x) and which added (+group=x)."""
    assert preflight.default_groups() == {"dataset", "model", "activation", "loss", "optimizer"}
    assert set(preflight.config_groups()) - preflight.default_groups() == {"exp", "hparams_search"}


@pytest.mark.parametrize("args,advice", [
    (["exp=xor_relu"], "write +exp=xor_relu "),
    (["optimizer=sgd", "exp=xor_relu"], "write +exp=xor_relu "),
    (["hparams_search=spirals_optuna"], "write +hparams_search=spirals_optuna "),
])
def test_forgotten_plus_on_exp_says_to_write_plus_exp(capsys, args, advice):
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    line = _one_error_line(code, err)
    assert advice in line and "defaults list" not in line


def test_forgotten_plus_on_a_sweep_over_experiments_fails_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "-m", "exp=xor_relu,xor_sigmoid"], capsys)
    assert "write +exp=xor_relu,xor_sigmoid " in _one_error_line(code, err)
    assert not (tmp_path / "experiments").exists()


def test_a_plus_on_a_group_with_a_default_says_to_drop_it(capsys):
    code, _, err = run_main(["train", "--cfg", "job", "+optimizer=sgd"], capsys)
    assert "write optimizer=sgd " in _one_error_line(code, err)


def test_train_help_shows_groups_without_a_default_with_their_plus(capsys):
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    assert "  +exp=<name>: batch_size, capacity," in out
    assert "  +hparams_search=<name>: spirals_optuna\n" in out
    assert "  exp: " not in out and "  hparams_search: " not in out
    assert "  optimizer: adadelta, adagrad, adam, momentum, rmsprop, sgd\n" in out


# -- keys nnrun does not know ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override,key", [
    ("optimiser=sgd", "optimiser"),
    ("+optimiser=sgd", "optimiser"),
    ("++optimiser=sgd", "optimiser"),
    ("+train.foo=1", "train.foo"),
    ("+train.early_stopping.foo=1", "train.early_stopping.foo"),
    ("+optimizer.momentum=0.9", "optimizer.momentum"),  # adam has no momentum
    ("++model.bogus=1", "model.bogus"),
    ("+dataset.bogus=1", "dataset.bogus"),
    ("+activation.slope=0.1", "activation.slope"),
    ("+loss.weight=2", "loss.weight"),
])
def test_a_key_the_schema_lacks_is_bad_input_with_or_without_plus(capsys, override, key):
    code, _, err = run_main(["train", "--cfg", "job", override], capsys)
    line = _one_error_line(code, err)
    assert f"error: {key}=" in line and "no such key" in line
    assert "plus" not in line and f"+{key}" not in line  # never advise adding a key nnrun would ignore


def test_the_schema_refuses_unknown_top_level_keys():
    with pytest.raises(ConfigError) as err:
        parse(compose(["+optimiser=sgd"]))
    assert err.value.key == "optimiser" and "did you mean 'optimizer'?" in str(err.value)


def test_the_schema_leaves_hydras_own_settings_to_hydra():
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(compose(["+exp=xor_relu"]), resolve=True)
    assert parse({**tree, "hydra": {"sweeper": {"n_trials": 3}, "anything": 1}}).exp_name == "xor_relu"


@pytest.mark.parametrize("group,name", [(p.parent.name, p.stem) for p in sorted(CONF.glob("*/*.yaml"))
                                        if p.parent.name in ("exp", "hparams_search")])
def test_every_experiment_and_search_file_passes_the_key_check(group, name):
    if name == "spirals_optuna":
        needs_extra("hydra_plugins.hydra_optuna_sweeper")
    preflight.check(["--cfg", "job", f"+{group}={name}"])  # raises ConfigError if refused
    parse(compose([f"+{group}={name}"]))


def test_an_optimizer_field_of_another_rule_names_the_rules_that_have_it(capsys):
    code, _, err = run_main(["train", "--cfg", "job", "+optimizer.momentum=0.9"], capsys)
    assert "momentum is a field of optimizer=momentum, rmsprop" in _one_error_line(code, err)


def test_an_unknown_key_with_a_plus_trains_nothing(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "+optimiser=sgd", "train.epochs=1"])
    assert code == 2 and "did you mean 'optimizer'?" in err
    assert len(err.strip().splitlines()) == 1
    assert not run_dirs(tmp_path)


# -- a key written without its section ---------------------------------------------------------------------------

@pytest.mark.parametrize("override,path", [
    ("epochs=100", "train.epochs"),
    ("+epochs=100", "train.epochs"),
    ("patience=5", "train.early_stopping.patience"),
    ("+patience=5", "train.early_stopping.patience"),
    ("early_stopping.patience=5", "train.early_stopping.patience"),
    ("train.patience=5", "train.early_stopping.patience"),
    ("lr=0.1", "optimizer.lr"),
    ("batchsize=8", "train.batch_size"),  # close to a name deeper down
    ("hidden=[8]", "model.hidden"),
])
def test_a_leaf_name_that_exists_deeper_is_suggested_by_its_full_path(capsys, override, path):
    code, _, err = run_main(["train", "--cfg", "job", override], capsys)
    line = _one_error_line(code, err)
    assert line.endswith(f"did you mean {path!r}?")
    assert "plus" not in line


def test_a_sweep_over_a_key_without_its_section_fails_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, job in ((["-m", "epochs=10,20"], "epochs=10"), (["-m", "+epochs=10,20"], "+epochs=10"),
                      (["-m", "seed=0,1", "+epochs=10"], "seed=0 +epochs=10")):
        code, _, err = run_main(["train", *args], capsys)
        line = _one_error_line(code, err)
        assert line.startswith(f"nnrun: error: job #0 ({job}): epochs=10 is not allowed: ") and line.endswith(
            "did you mean 'train.epochs'?"), line
    assert not (tmp_path / "experiments").exists()


def test_a_near_miss_at_the_same_level_is_suggested_as_written_there(capsys):
    code, _, err = run_main(["train", "--cfg", "job", "train.epoch=5"], capsys)
    assert _one_error_line(code, err).endswith("did you mean 'epochs'?")


def test_a_key_another_dataset_has_is_refused_with_or_without_plus(capsys):
    """xor's dataset file sets no `classes`: xor does not read it, so no plus is advised and none is taken."""
    for override in ("dataset.classes=2", "+dataset.classes=2"):
        code, _, err = run_main(["train", "--cfg", "job", override], capsys)
        line = _one_error_line(code, err)
        assert "classes is a field of dataset=gaussians, spirals" in line and "+dataset.classes" not in line


# -- the sweep extra ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,fragments", [
    (["hydra/launcher=joblib"], ["hydra/launcher='joblib'", "joblib launcher is not installed"]),
    (["hydra/launcher=submitit_local"], ["hydra/launcher='submitit_local'", "submitit launcher is not installed"]),
    (["hydra/launcher=submitit_slurm"], ["hydra/launcher='submitit_slurm'", "submitit launcher is not installed"]),
    (["+hparams_search=spirals_optuna"], ["+hparams_search=spirals_optuna needs Hydra's optuna sweeper"]),
])
def test_without_the_sweep_extra_its_launchers_and_sweeper_say_what_to_install(capsys, monkeypatch, args,
                                                                                fragments):
    monkeypatch.setattr(preflight, "plugin_installed", lambda module: False)
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    line = _one_error_line(code, err)
    assert line.endswith(INSTALL) and all(f in line for f in fragments), line


@pytest.mark.parametrize("args", [["hydra/launcher=basic"], ["hydra/launcher=vectorized"], ["+exp=optimizers"]])
def test_without_the_sweep_extra_nnruns_own_choices_still_work(capsys, monkeypatch, args):
    monkeypatch.setattr(preflight, "plugin_installed", lambda module: False)
    code, out, err = run_main(["train", "--cfg", "job", *args], capsys)
    assert code == 0 and "exp_name:" in out, err


class HiddenPlugins:
    """An import finder that finds nothing of the given packages, as where the sweep extra is not installed."""

    def __init__(self, *names: str):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.startswith(self.names):
            raise ModuleNotFoundError(name)


def test_the_sweep_extra_check_reads_the_import_system(nnrun_here, monkeypatch):
    """Plugins hidden from imports (as where the extra is not installed): the real check says what to install."""
    hidden = ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_optuna_sweeper")
    for name in [name for name in sys.modules if name.startswith(hidden)]:  # imported already: forget them here
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [HiddenPlugins(*hidden), *sys.meta_path])
    for args, fragment in ((["hydra/launcher=joblib"], "hydra/launcher='joblib'"),
                           (["+hparams_search=spirals_optuna"], "+hparams_search=spirals_optuna")):
        code, _, err = nnrun_here(["train", "--cfg", "job", *args])
        line = _one_error_line(code, err)
        assert fragment in line and line.endswith(INSTALL)


def test_hydras_missing_choice_of_the_sweep_extra_says_what_to_install():
    """Should Hydra itself not find a plugin of the extra (a broken install), its error still says what to do."""
    from hydra.errors import MissingConfigException

    exc = MissingConfigException("missing", missing_cfg_file="hydra/launcher/joblib", options=["vectorized", "basic"])
    message = str(preflight._composition_error(exc))
    assert message.startswith("hydra/launcher='joblib' is not allowed: one of basic, vectorized")
    assert message.endswith(f"{INSTALL})")


def test_with_the_sweep_extra_installed_the_search_composes(capsys):
    needs_extra("hydra_plugins.hydra_optuna_sweeper")
    code, out, err = run_main(["train", "--cfg", "job", "+hparams_search=spirals_optuna"], capsys)
    assert code == 0 and "exp_name: spirals_optuna" in out, err
