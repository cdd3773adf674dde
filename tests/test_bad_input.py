"""Bad input: one clear line and exit 2, never a traceback; HYDRA_FULL_ERROR=1 still shows one."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_main, run_nnrun

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
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not allowed: a number"),
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
