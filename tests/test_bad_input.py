"""Bad input: one clear line and exit 2, never a traceback; HYDRA_FULL_ERROR=1 still shows one."""

import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import needs_extra, run_main, run_nnrun

KEYS = ["seed", "device", "threads", "exp_name", "optimizer.lr", "optimizer.betas", "optimizer.momentum",
        "model.hidden", "model.dropout", "model.init_std", "dataset.n_samples", "dataset.noise",
        "dataset.val_fraction", "dataset.test_fraction", "dataset.classes", "train.epochs", "train.batch_size",
        "train.log_every", "train.early_stopping.patience", "train.early_stopping.monitor", "train.epoch",
        "optimizer", "dataset", "model", "activation", "loss", "+exp", "hydra/launcher", "nonsense.key"]
VALUES = st.one_of(
    st.integers(-10, 10_000).map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["adam", "sgdd", "xor", "spirals", "relu", "null", "true", "[4,0]", "[]", "[a]", "fast",
                     "${oops}", "${seed}", "cuda", "loss/val", "???", "'quoted'", "{a:1}", "1,2", "range(3)"]),
    st.text(string.printable, max_size=8),
)
OVERRIDE = st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                     st.text(string.printable, min_size=1, max_size=12))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
@example(["0", "--hydra-help"])  # an unreadable line beside a flag that runs nothing: still one line
def test_junk_overrides_never_trace_back(capsys, overrides):
    code, out, err = run_main(["train", "--cfg", "job", *overrides], capsys)
    assert code in (0, 2), (overrides, code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("nnrun: error: "), err
    else:
        assert "exp_name:" in out or out.startswith("Hydra ")  # the config, or `--version`'s line


@pytest.mark.parametrize("args,fragment", [
    (["optimizer=adamm"], "optimizer='adamm' is not allowed: one of adadelta, adagrad, adam, momentum, rmsprop, "
                          "sgd; did you mean 'adam'?"),
    (["train.epoch=5"], "did you mean 'epochs'?"),
    (["activation=Relu"], "did you mean 'relu'?"),  # not 'elu': a choice typed in capitals is still that choice
    (["loss=BCE"], "did you mean 'bce'?"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not allowed: a number"),
    (["seed=null"], "seed=null is not allowed: an integer"),  # as typed: not Python's None
    (["train.epochs=true"], "train.epochs=true is not allowed: an integer"),
    (["optimizer.lr=0"], "a number > 0"),
    (["model.dropout=1"], "a number in [0, 1)"),
    (["model.hidden=[4,0]"], "model.hidden[1]=0"),
    (["train.epochs=0"], "train.epochs=0"),
    (["train.batch_size=0"], "train.batch_size=0"),
    (["model.init_std=-1"], "model.init_std=-1.0"),
    (["dataset=spirals", "dataset.classes=1"], "dataset.classes=1"),
    (["dataset=spirals", "dataset.val_fraction=0.5", "dataset.test_fraction=0.5"], "no training data"),
    (["dataset=spirals", "dataset.classes=3", "loss=bce"], "use loss=cross_entropy"),
    (["seed=${oops}"], "seed"),
    (["optimizer.lr=0.1,0.2"], "add -m"),
])
def test_bad_value_names_key_value_and_what_is_allowed(capsys, args, fragment):
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    assert code == 2
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_a_bad_sweep_value_fails_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "-m", "optimizer.lr=0.1,-1", "seed=0,1"], capsys)
    assert code == 2 and "optimizer.lr=-1.0" in err
    code, _, err = run_main(["train", "-m", "optimizer=adam,sgdd"], capsys)
    assert code == 2 and "did you mean 'sgd'" in err
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow
@pytest.mark.parametrize("content,fragment", [
    (None, "no such file"),
    ("", "empty"),
    ("a,b,y\n1,x,0\n2,3,1\n", "row 2, column 'b': 'x' is not a number"),
    ("a,b,y\n1,2,0\n2,3,0\n", "one class only"),
    ("a,b,c\n1,2,0\n2,3,1\n", "no target column 'y'"),
])
def test_bad_csv_is_one_line_naming_file_row_column(tmp_path, content, fragment):
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_text(content)
    out = run_nnrun(["train", "dataset=csv", f"dataset.path={path}", "dataset.target=y"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    out = run_nnrun(["train", "optimizer.lr=-1"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0 and "Traceback" in out.stderr


@pytest.mark.slow
def test_explicit_cuda_without_cuda_is_bad_input(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = run_nnrun(["train", "device=cuda", "train.epochs=1"], tmp_path)
    assert out.returncode == 2 and "device='cuda'" in out.stderr and "CUDA is not available" in out.stderr


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nnrun: error: "), (code, err)
    return lines[0].removeprefix("nnrun: error: ")


# -- a section given one value, a value given a section: anywhere in the config ------------------------------------

@pytest.mark.parametrize("args,line", [
    (["train.early_stopping=5"], "train.early_stopping=5 is not allowed: a section with keys patience, min_delta, "
                                 "monitor, restore_best, not one value; did you mean train.early_stopping.patience=5?"),
    (["train.early_stopping=abc"], "train.early_stopping='abc' is not allowed: a section with keys patience, "
                                   "min_delta, monitor, restore_best, not one value; set one of them: "
                                   "train.early_stopping.patience=..."),
    (["train=5"], "did you mean train.epochs=5?"),
    (["train={a:1}"], "train.a=1 is not allowed: no such key in train"),
    (["optimizer=5"], "optimizer=5 is not allowed: one of adadelta, adagrad, adam, momentum, rmsprop, sgd"),
    (["dataset={noise:0.1}"], "dataset={'noise': 0.1} is not allowed: one of circles, csv, gaussians, pass_fail, "
                              "spirals, xor (a config group: set its keys one by one, as dataset.noise=...)"),
    (["model=[4]"], "model=4 is not allowed: one of mlp, perceptron"),
    (["hydra/launcher=5"], "hydra/launcher=5 is not allowed: one of basic, "),
    (["seed={a:1}"], "seed={'a': 1} is not allowed: an integer"),
    (["exp_name={a:1}"], "exp_name={'a': 1} is not allowed: a non-empty name"),
    (["dataset.noise={a:1}"], "dataset.noise={'a': 1} is not allowed: a number"),
    (["model.hidden={a:1}"], "model.hidden={'a': 1} is not allowed: a list of layer widths"),
    (["activation.name={a:1}"], "activation.name={'a': 1} is not allowed: one of elu, "),
    (["optimizer.betas={a:1}"], "optimizer.betas={'a': 1} is not allowed: a pair [beta1, beta2]"),
    (["train.resume={a:1}"], "train.resume={'a': 1} is not allowed: a name or a path"),
    (["dataset=csv", "dataset.path=x.csv", "dataset.target={a:1}"], "dataset.target={'a': 1} is not allowed"),
    (["train.epochs.x=1"], "train.epochs.x=1 is not allowed: train.epochs is a value, not a section with keys"),
    (["hydra.run=5"], "hydra.run=5 is not allowed: a section with keys dir, not one value"),
])
def test_a_section_given_one_value_or_a_value_given_a_section_is_one_line(capsys, args, line):
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    assert line in _one_line(code, err)


def test_a_sweep_giving_a_section_one_value_is_refused_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "-m", "train.early_stopping=5,10"], capsys)
    assert _one_line(code, err).startswith("job #0 (train.early_stopping=5): train.early_stopping=5 is not allowed: "
                                           "a section with keys patience")
    assert "train.early_stopping.patience=5?" in err
    assert not (tmp_path / "experiments").exists()


# -- no key is silently accepted -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args,line", [
    (["+hydra.foo=1"], "hydra.foo=1 is not allowed: Hydra has no setting hydra.foo"),
    (["hydra.foo=1"], "hydra.foo=1 is not allowed: Hydra has no setting hydra.foo"),
    (["++hydra.launcher.foo=1"], "hydra.launcher.foo=1 is not allowed: Hydra has no setting hydra.launcher.foo"),
    (["hydra.job.env_set.FOO=1"], "hydra.job.env_set.FOO=1 needs a plus: hydra.job.env_set takes keys of your own; "
                                  "write +hydra.job.env_set.FOO=1"),
    (["+dataset.classes=3"], "dataset.classes=3 is not allowed: no such key in dataset=xor (known: n_samples, name, "
                             "noise, seed, test_fraction, val_fraction); classes is a field of dataset=gaussians, "
                             "spirals"),
    (["dataset.classes=3"], "classes is a field of dataset=gaussians, spirals"),
    (["dataset=csv", "dataset.path=x.csv", "+dataset.noise=0.1"],
     "no such key in dataset=csv (known: name, path, seed, target, test_fraction, val_fraction); noise is a field of "
     "dataset=circles, gaussians, pass_fail, spirals, xor"),
    (["dataset.path=x.csv"], "path is a field of dataset=csv"),
    (["optimizer=sgd", "+optimizer.betas=[0.9,0.99]"], "no such key in optimizer=sgd"),
])
def test_a_key_nothing_reads_is_refused(capsys, args, line):
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    assert line in _one_line(code, err)


@pytest.mark.parametrize("args", [["+hydra.job.env_set.FOO=1"], ["dataset=spirals", "dataset.classes=3",
                                                                  "loss=cross_entropy"]])
def test_a_key_something_reads_is_taken(capsys, args):
    code, out, err = run_main(["train", "--cfg", "job", *args], capsys)
    assert code == 0 and "exp_name:" in out, err


def test_a_hydra_key_added_with_a_plus_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "+hydra.foo=1", "train.epochs=1"], capsys)
    assert "Hydra has no setting hydra.foo" in _one_line(code, err)
    code, _, err = run_main(["train", "-m", "+hydra.foo=1", "seed=0,1", "train.epochs=1"], capsys)
    assert "Hydra has no setting hydra.foo" in _one_line(code, err)
    assert not (tmp_path / "experiments").exists()


# -- a sweep that another sweeper runs (Optuna's): checked before its study or sweep dir exists ----------------------

# Small, so that a search let through ends soon; a test's own n_trials comes after (the last one is taken).
OPTUNA = ["+hparams_search=spirals_optuna", "train.epochs=1", "hydra.sweeper.n_trials=2"]
TRIES = "(hydra/sweeper=optuna may try"


@pytest.mark.parametrize("args,line", [
    (["model.hidden=[0]"], "model.hidden[0]=0 is not allowed: an integer >= 1"),
    (["optimizer.lr=-1"], "optimizer.lr=-1.0 is not allowed: a number > 0"),
    (["optimizer.lr=interval(-1,-0.5)"],
     f"optimizer.lr=-1.0 is not allowed: a number > 0 {TRIES} it, from optimizer.lr=interval(-1,-0.5))"),
    (["model.dropout=interval(0.2,1)"],  # Optuna's interval includes its high bound
     f"model.dropout=1.0 is not allowed: a number in [0, 1) {TRIES} it, from model.dropout=interval(0.2,1))"),
    (["train.epochs=interval(10,100)"],  # an interval draws any number between its bounds
     f"train.epochs=32.5 is not allowed: an integer {TRIES} it, from train.epochs=interval(10,100))"),
    (["model.dropout=range(0,1,0.25)"],  # Optuna's range includes its stop, where Hydra's ends before it
     f"model.dropout=1.0 is not allowed: a number in [0, 1) {TRIES} it, from model.dropout=range(0,1,0.25))"),
    (["dataset.classes=choice(2,3)", "loss=bce"], "loss='bce' is not allowed: bce and mse need 2 classes, the data "
     f"has 3; use loss=cross_entropy {TRIES} dataset.classes=3, from dataset.classes=choice(2,3))"),
    (["optimizer.lrr=interval(0.1,1)"], "optimizer.lrr=0.1 is not allowed: no such key in optimizer (known: betas, "
     f"eps, lr, name, weight_decay); did you mean 'lr'? {TRIES} it, from optimizer.lrr=interval(0.1,1))"),
    (['+hydra.sweeper.params.seed="range(-1,2)"'],
     f"seed=-1 is not allowed: an integer >= 0 {TRIES} it, from seed=range(-1,2) in hydra.sweeper.params)"),
    (["hydra.sweeper.params.activation='choice(relu,tanhh)'"], "activation='tanhh' is not allowed: one of elu, gelu, "
     "leaky_relu, linear, relu, sigmoid, softplus, tanh; did you mean 'tanh'?"),
    (["optimizer.lr=interval(0.1,0.01)"],
     "optimizer.lr=interval(0.1,0.01) holds no value for hydra/sweeper=optuna to try"),
    (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 is not allowed: an integer >= 1"),
    (["hydra.sweeper.n_trials=-1"], "hydra.sweeper.n_trials=-1 is not allowed: an integer >= 1"),
    (["hydra.sweeper.n_jobs=0"], "hydra.sweeper.n_jobs=0 is not allowed: an integer >= 1"),  # would never end
])
def test_an_optuna_search_with_a_trial_that_would_fail_is_refused_leaving_nothing(nnrun_here, tmp_path, args, line):
    """nnrun's sweeper checks every job; Optuna's draws its trials as it goes: each value its search space can give
    a key is checked with the command line's fixed values, before the study (optuna.db) or a sweep dir is made."""
    needs_extra("optuna", "hydra_plugins.hydra_optuna_sweeper")
    assert _one_line(*nnrun_here(["train", "-m", *OPTUNA, *args])[::2]) == line
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("sweep", [["seed=0,1"], OPTUNA], ids=["nnrun", "optuna"])
def test_joblib_with_no_process_at_a_time_is_refused_leaving_nothing(nnrun_here, tmp_path, sweep):
    needs_extra("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_optuna_sweeper")
    code, _, err = nnrun_here(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", *sweep])
    assert _one_line(code, err) == ("hydra.launcher.n_jobs=0 is not allowed: an integer >= 1, or -1 for every core "
                                    "(-2 for all but one, ...)")
    assert not any(tmp_path.iterdir())


def test_hydras_basic_sweeper_gets_its_values_checked_too(nnrun_here, tmp_path):
    code, _, err = nnrun_here(["train", "-m", "hydra/sweeper=basic", "optimizer.lr=0.1,-1", "train.epochs=1"])
    assert _one_line(code, err) == ("optimizer.lr=-1.0 is not allowed: a number > 0 (hydra/sweeper=basic may try it, "
                                    "from optimizer.lr=0.1,-1)")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    [],  # the search of conf/hparams_search/spirals_optuna.yaml as it is
    ["model.dropout=interval(0,0.9)", "train.epochs=range(1,10)", "model.hidden=choice([4],[8,8])"],
    ["optimizer=choice(sgd,momentum)", "optimizer.lr=tag(log,interval(0.01,1))", "hydra.sweeper.n_trials=1"],
    ["dataset.classes=choice(3,4)", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-1", "hydra.sweeper.n_jobs=2"],
])
def test_an_optuna_search_whose_every_trial_can_run_is_taken(tmp_path, monkeypatch, args):
    needs_extra("optuna", "hydra_plugins.hydra_optuna_sweeper", "hydra_plugins.hydra_joblib_launcher")
    from nnrun.app import TrainTask
    from nnrun.preflight import check

    monkeypatch.chdir(tmp_path)
    check(["-m", "+hparams_search=spirals_optuna", *args], TrainTask().check)
    assert not any(tmp_path.iterdir())


# -- every message a sentence a user can act on: none of Hydra's own --------------------------------------------------

@pytest.mark.parametrize("args,line", [
    (["~model.bogus"], "~model.bogus deletes nothing: no such key in model (known: dropout, hidden, init_std)"),
    (["~dataset.classes"], "~dataset.classes deletes nothing: no such key in dataset=xor"),
    (["~train.epochs"], "train.epochs is missing: nnrun needs a value for it; add one with +train.epochs=..."),
    (["~dataset"], "dataset is missing: nnrun needs a value for it; add one with +dataset=<name> (one of circles, "),
    (["+dataset.noise=0.1"], "+dataset.noise=0.1 needs no plus: this config sets dataset.noise already; write "
                             "dataset.noise=0.1"),
    (["optimizer=5"], "optimizer=5 is not allowed: one of "),
    (["hydra.job=5"], "hydra.job=5 is not allowed: a section with keys name, chdir, "),
])
def test_hydras_composition_errors_are_said_in_nnruns_words(capsys, args, line):
    code, _, err = run_main(["train", "--cfg", "job", *args], capsys)
    said = _one_line(code, err)
    assert said.startswith(line), said
    for hydras in ("Could not", "Error merging", "Config group override", "does not exist"):
        assert hydras not in said


@pytest.mark.parametrize("flags", [["--resolve"], ["--cfg", "hydra", "--resolve"], ["--cfg=all", "--resolve"],
                                   ["-m", "--resolve", "seed=0,1"]])
def test_resolve_other_than_with_cfg_job_is_one_line_and_makes_no_dir(flags, tmp_path, capsys, monkeypatch):
    """A run's dir is made as its name resolves: --resolve of anything but the job's config would leave one behind
    (and --cfg hydra cannot resolve the exp_name the dirs name)."""
    monkeypatch.chdir(tmp_path)
    said = _one_line(*run_main(["train", *flags], capsys)[::2])
    assert said.startswith("--resolve goes with --cfg job (nnrun train --cfg job --resolve"), said
    code, out, err = run_main(["train", "--cfg", "job", "--resolve", "exp_name=e${seed}"], capsys)
    assert code == 0 and "exp_name: e0\n" in out, err
    code, out, err = run_main(["train", "--help", "--resolve"], capsys)
    assert code == 0 and out.startswith("nnrun train: "), err
    assert not (tmp_path / "experiments").exists()


def test_a_resumed_sweep_that_is_another_sweep_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["train", "-m", "seed=0,1", "train.epochs=1"], capsys)
    assert code == 0, err
    code, _, err = run_main(["train", "-m", "seed=0,1,2", "train.epochs=1", "train.resume=latest"], capsys)
    said = _one_line(code, err)
    assert said.startswith("train.resume=latest names the sweep ") and "is not allowed" not in said
    assert said.endswith("which ran with seed=0,1 where this command has seed=0,1,2: a sweep goes on with the "
                         "command line it was started with (give that one, or leave out train.resume to start a "
                         "new sweep)")


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    from conftest import train

    run_dir = tmp_path_factory.mktemp("xor")
    train(["train.epochs=2"], run_dir)
    return run_dir


@pytest.mark.parametrize("values,line", [
    ([], "no point to predict: the run takes 2 numbers, one per feature (x1, x2), or --csv FILE"),
    (["1"], "cannot predict from '1': the run takes 2 numbers, one per feature (x1, x2), or --csv FILE"),
    (["1", "a"], "cannot predict from '1 a': the run takes 2 numbers, one per feature (x1, x2), or --csv FILE"),
])
def test_predict_says_what_point_to_type(xor_run, capsys, values, line):
    code, out, err = run_main(["predict", str(xor_run), *values], capsys)
    assert _one_line(code, err) == line and not out
