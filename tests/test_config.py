"""The schema: defaults compose into typed config; each bad value is one ConfigError naming key and value."""

import pytest

from conftest import parsed
from nnrun.config import ConfigError, flatten


def test_defaults_compose_into_a_typed_config():
    cfg = parsed()
    assert cfg.dataset.name == "xor" and cfg.model.hidden == (4,) and cfg.activation == "relu"
    assert cfg.loss == "bce" and cfg.optimizer.name == "adam" and cfg.optimizer.params["betas"] == (0.9, 0.999)
    assert cfg.train.batch_size is None and cfg.train.early_stopping.patience is None


def test_experiment_file_sets_groups_and_name():
    cfg = parsed(["+exp=xor_relu"])
    assert cfg.exp_name == "xor_relu" and cfg.activation == "relu" and cfg.dataset.name == "xor"


@pytest.mark.parametrize("override,key,allowed", [
    ("optimizer.lr=0", "optimizer.lr", "> 0"),
    ("optimizer.lr=-1", "optimizer.lr", "> 0"),
    ("model.dropout=1.0", "model.dropout", "[0, 1)"),
    ("model.hidden=[4,0]", "model.hidden[1]", ">= 1"),
    ("train.epochs=0", "train.epochs", ">= 1"),
    ("train.batch_size=0", "train.batch_size", ">= 1"),
    ("model.init_std=-0.1", "model.init_std", ">= 0"),
    ("dataset=spirals", None, None),
    ("dataset.val_fraction=0.6", None, None),
    ("device=gpu", "device", "one of auto, cpu, cuda"),
    ("train.early_stopping.monitor=loss", "train.early_stopping.monitor", "loss/val"),
    ("dataset=gaussians dataset.classes=5 dataset.n_samples=4 loss=cross_entropy", "dataset.n_samples",
     ">= dataset.classes=5 (a point per class)"),
    ("optimizer=momentum optimizer.momentum=0 optimizer.nesterov=true", "optimizer.nesterov",
     "false while optimizer.momentum is 0"),
    ("optimizer=momentum optimizer.momentum=0.5 optimizer.nesterov=true", None, None),
])
def test_out_of_range_values_name_key_and_what_is_allowed(override, key, allowed):
    if key is None:
        parsed(override.split())  # valid on its own
        return
    with pytest.raises(ConfigError) as err:
        parsed(override.split())
    assert err.value.key == key
    assert allowed in str(err.value)
    assert "\n" not in str(err.value)


def test_fractions_leaving_no_training_data_are_refused():
    with pytest.raises(ConfigError, match="no training data"):
        parsed(["dataset=spirals", "dataset.val_fraction=0.5", "dataset.test_fraction=0.5"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"optimizer.lr='fast' is not allowed: a number"):
        parsed(["optimizer.lr=fast"])


def test_bce_with_three_classes_is_a_config_error_not_a_shape_traceback():
    with pytest.raises(ConfigError, match="cross_entropy"):
        parsed(["dataset=spirals", "dataset.classes=3", "loss=bce"])
    assert parsed(["dataset=spirals", "dataset.classes=3", "loss=cross_entropy"]).loss == "cross_entropy"


def test_flatten_makes_hparams_scalars():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": None}


def test_to_dict_is_a_new_plain_tree_each_time():
    """Made once and copied: equal to dataclasses.asdict, tuples kept, and changing one tree changes no other."""
    from dataclasses import asdict

    cfg = parsed(["optimizer=adam", "model.hidden=[8,4]"])
    first = cfg.to_dict()
    assert first == asdict(cfg) and isinstance(first["optimizer"]["params"]["betas"], tuple)
    first["optimizer"]["lr"] = -1.0
    first["optimizer"]["params"]["eps"] = 5.0
    again = cfg.to_dict()
    assert again == asdict(cfg) and again is not first and again["optimizer"]["params"]["eps"] == 1e-8
    assert cfg == parsed(["optimizer=adam", "model.hidden=[8,4]"])  # the cache is not part of the config


# -- each default and each list of choices written once, in conf/ ----------------------------------------------------

def _conf(group: str, choice: str) -> dict:
    import yaml

    from nnrun.config import config_dir

    return yaml.safe_load((config_dir() / group / f"{choice}.yaml").read_text())


def test_the_dataclasses_hold_no_defaults_conf_does():
    """The numbers are conf/'s alone: no field has a default, but a dataset's key its file does not set (None)."""
    from dataclasses import MISSING, fields

    from nnrun import config

    for cls in (config.TrainConfig, config.TrainLoopConfig, config.EarlyStoppingConfig, config.ModelConfig,
                config.OptimizerConfig, config.DatasetConfig):
        for f in fields(cls):
            assert f.default_factory is MISSING and f.default in (MISSING, None), (cls.__name__, f.name)
            assert f.default is MISSING or cls is config.DatasetConfig, (cls.__name__, f.name)


def test_a_key_deleted_from_the_config_is_missing_not_a_default_in_code():
    with pytest.raises(ConfigError, match=r"^train.epochs is missing: .* \+train.epochs="):
        parsed(["~train.epochs"])
    with pytest.raises(ConfigError, match=r"^optimizer.momentum is missing"):
        parsed(["optimizer=momentum", "~optimizer.momentum"])


def test_each_choice_is_a_file_under_conf_named_as_it_is_chosen_and_done_by_a_registry():
    from nnrun import data, losses, models, optim
    from nnrun.config import config_groups

    groups = config_groups()
    for group, registry in (("dataset", data.GENERATORS), ("activation", models.ACTIVATIONS),
                            ("loss", losses.LOSSES), ("optimizer", optim.RULES)):
        assert groups[group] == tuple(sorted(registry)), group
        assert all(_conf(group, choice)["name"] == choice for choice in groups[group]), group


def test_every_key_a_file_under_conf_sets_is_one_the_schema_checks():
    from nnrun.config import CHECKS, DatasetConfig, config_groups

    for group in ("dataset", "model", "activation", "loss", "optimizer"):
        for choice in config_groups()[group]:
            assert {f"{group}.{key}" for key in _conf(group, choice)} <= set(CHECKS), (group, choice)
    dataset_keys = {key.split(".")[1] for key in CHECKS if key.startswith("dataset.")}
    assert set(DatasetConfig.__dataclass_fields__) == dataset_keys


@pytest.mark.parametrize("name", ["xor", "pass_fail", "spirals", "circles", "gaussians", "csv"])
def test_a_dataset_reads_the_keys_its_file_sets(name):
    """conf/dataset/<name>.yaml decides which keys that dataset takes; the others are None, not another's value."""
    cfg = parsed([f"dataset={name}", *(["dataset.path=x.csv"] if name == "csv" else [])]).dataset
    keys = set(_conf("dataset", name))
    assert {key for key, value in cfg.__dict__.items() if value is not None} <= keys
    assert {key: getattr(cfg, key) for key in keys if key != "path"} == \
        {key: value for key, value in _conf("dataset", name).items() if key != "path"}


def test_hparams_are_the_keys_as_typed_and_only_the_datasets_own():
    xor = parsed([]).hparams()
    assert xor["optimizer.betas"] == "[0.9, 0.999]" and not any(k.startswith("optimizer.params") for k in xor)
    assert {k for k in xor if k.startswith("dataset.")} == {"dataset.name", "dataset.n_samples", "dataset.noise",
                                                           "dataset.val_fraction", "dataset.test_fraction",
                                                           "dataset.seed"}
    csv = parsed(["dataset=csv", "dataset.path=points.csv"]).hparams()
    assert csv["dataset.path"] == "points.csv" and csv["dataset.target"] is None and "dataset.noise" not in csv
