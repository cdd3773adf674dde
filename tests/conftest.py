"""Shared test helpers, one of each: compose configs through Hydra's compose API; train and run `nnrun` in this
process (the default: no interpreter start-up); run it in a new interpreter where a test needs a real process
(signals, exit codes, a fresh interpreter's imports) and signal it; read TensorBoard's events; the sweep extra and
the SLURM test cluster, skipped where missing and a failure under CI."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def compose(overrides: list[str] | tuple[str, ...] = ()):
    """The composed DictConfig of `nnrun train <overrides>` (no run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nnrun.app import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="train"):
        return hydra_compose("train", overrides=list(overrides))


def parsed(overrides: list[str] | tuple[str, ...] = ()):
    """The validated TrainConfig of `nnrun train <overrides>` (a frozen dataclass: composed once per process for
    the same overrides, as a test that trains a stack and then each run alone asks twice)."""
    return _parsed(tuple(overrides))


@functools.lru_cache(maxsize=256)
def _parsed(overrides: tuple[str, ...]):
    from nnrun.config import parse

    return parse(compose(overrides))


def train(overrides, run_dir: Path):
    """Train in this process (fast: no interpreter start-up); returns the engine's RunResult."""
    import torch

    from nnrun import engine

    cfg = parsed(overrides)
    torch.set_num_threads(cfg.threads)
    return engine.train(cfg, run_dir, overrides=list(overrides), show_progress=False)


def train_stacked(runs: list[tuple[list[str], Path]]) -> list:
    """Train several runs in this process as the vectorized launcher does, in as few stacks as they allow
    (`engine.train_jobs`): each run's results are its run alone's (tests/test_stacking.py checks it), for a
    fraction of the time. `runs`: (overrides, run dir) pairs; returns their RunResults in that order."""
    from nnrun import engine

    return engine.train_jobs([engine.Job(parsed(overrides), run_dir, overrides=list(overrides))
                              for overrides, run_dir in runs])


def child_env(env: dict | None = None) -> dict:
    """The environment of a child `python`: this checkout's src/ first on the path, 200 columns, no
    HYDRA_FULL_ERROR (so errors are nnrun's one line), then `env` on top."""
    full = {**os.environ, "COLUMNS": "200",
            "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    full.pop("HYDRA_FULL_ERROR", None)
    return {**full, **(env or {})}


def run_nnrun(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300,
              **kwargs) -> subprocess.CompletedProcess:
    """`python -m nnrun <args>` in `cwd`, a new interpreter: for what needs a real process (the console
    script's exit code, signals, several processes at once). Everything else runs in-process (`nnrun_here`)."""
    return subprocess.run([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=child_env(env), capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def run_python(program: str, cwd: Path, args: list[str] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c <program> <args>` in `cwd`: for what a fresh interpreter shows (what gets imported, exit)."""
    return subprocess.run([sys.executable, "-c", program, *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m nnrun <args>` started in `cwd`, its output piped, Ctrl-C (SIGINT) heard as at a terminal: a
    shell starts a background job (`bash .ci/run &`) with SIGINT ignored, and its children inherit that."""
    return subprocess.Popen([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=child_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_until(ready, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll `ready()` until it holds, while `process` runs (its output in the failure if it ends first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.05)


def interrupt_when(process: subprocess.Popen, ready, signum: int = signal.SIGINT,
                   timeout: float = 120) -> tuple[int, str, str]:
    """Send `signum` (Ctrl-C) once `ready()` holds, then the exit code and output."""
    wait_until(ready, process, timeout)
    process.send_signal(signum)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def into_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`python -m nnrun <args>` writing into a pipe whose reader has gone, as after `| head -1`."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=child_env(), stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)


def results(sweep_dir: Path) -> dict[tuple, dict]:
    """metrics.json of each job of a sweep, by its overrides (train.resume aside)."""
    return {tuple(o for o in m["overrides"] if not o.startswith(("train.resume", "exp_name"))): m
            for m in (read_metrics(d) for d in run_dirs(sweep_dir))}


def assert_same_results(got: dict, expected: dict, tolerance: float = 1e-6) -> None:
    """Each job's status, epochs, best epoch and metrics, by its overrides (`results`), equal to `tolerance`."""
    assert got.keys() == expected.keys()
    for key, m in expected.items():
        r = got[key]
        assert (r["status"], r["epochs_run"], r["best"]["epoch"]) == (m["status"], m["epochs_run"],
                                                                      m["best"]["epoch"]), key
        assert r["final"] == pytest.approx(m["final"], abs=tolerance), key
        assert r["best"] == pytest.approx(m["best"], abs=tolerance), key


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """`nnrun <args>` in this process: (exit code, stdout, stderr)."""
    from nnrun.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def nnrun_here(tmp_path, monkeypatch, capsys):
    """`nnrun <args>` in this process with tmp_path as the working dir and 200 columns, as `run_nnrun` runs it in
    a new one: a function of the args that returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("sys.argv", ["nnrun"])  # cli.main sets it for Hydra: put back after the test
    capsys.readouterr()
    return lambda args: run_main(args, capsys)


def run_dirs(root: Path) -> list[Path]:
    """Every run dir (a dir holding .hydra/) under root, sorted."""
    return sorted(p.parent for p in Path(root).rglob(".hydra") if p.is_dir())


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def only_sweep_dir(cwd: Path, exp_name: str) -> Path:
    """The one sweep dir of `exp_name` under cwd/experiments."""
    (sweep_dir,) = (cwd / "experiments" / exp_name / "multirun").iterdir()
    return sweep_dir


def summary_count(stdout: str, status: str) -> int:
    """The count of a status in a sweep's summary table."""
    match = re.search(rf"│ {status}\s*│\s*(\d+) │", stdout)
    assert match, f"no {status} row in the sweep summary:\n{stdout}"
    return int(match.group(1))


def needs_extra(*modules: str) -> None:
    """Skip where a package of the `sweep` extra is not installed (`pip install -e ".[dev]"` alone); under CI
    (CI=true), which installs the extra, a missing one is a failure."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI installs the sweep extra, yet {', '.join(missing)} is missing")
    if missing:
        pytest.skip(f"needs the sweep extra ({', '.join(missing)}): pip install -e \".[sweep]\"")


# -- TensorBoard's readers ---------------------------------------------------------------------------------------

def events(run_dir: Path):
    """A run's event files as `nnrun report` reads them (tensorboard's EventAccumulator), every event kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def server_events(run_dir: Path):
    """A run's event files as TensorBoard's server reads them (its plugins' tensors, scalars included)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def curve(run_dir: Path, tag: str = "loss/train") -> list[float]:
    """The values of one scalar tag, in step order."""
    return [e.value for e in events(run_dir).Scalars(tag)]


def images(run_dir: Path) -> dict[str, list]:
    """{tag: [image events]} of a run."""
    acc = events(run_dir)
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


# -- the SLURM test cluster --------------------------------------------------------------------------------------

PARTITION = "debug"  # the partition .ci/slurm-cluster makes


def cluster_problem() -> str | None:
    """Why no SLURM sweep can run here, or None when sbatch is there and the partition has a node up."""
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (start a one-node cluster with .ci/slurm-cluster, as root)"
    try:
        states = subprocess.run(["sinfo", "--noheader", f"--partition={PARTITION}", "--format=%T"],
                                capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo did not answer: {exc}"
    # completing: the node is up, finishing a job that has ended (the test before this one's, say).
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"partition {PARTITION} has no node up (sinfo: {states or 'nothing'}); run .ci/slurm-cluster"
    return None


def require_cluster() -> None:
    """Skip where no cluster is up, with the reason; under CI (CI=true) a missing cluster is a failure."""
    problem = cluster_problem()
    if problem is not None and os.environ.get("CI") == "true":
        pytest.fail(f"CI needs a SLURM cluster: {problem}")
    if problem is not None:
        pytest.skip(problem)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_interpreter_unless_slow(request, monkeypatch):
    """A test not marked slow runs in this process: one that starts a Python interpreter fails at once, saying
    to mark it slow (it needs a real process) or to run nnrun in-process (`nnrun_here`, `run_main`, `train`)."""
    if "slow" in request.keywords:
        return
    real_init = subprocess.Popen.__init__

    def refuse_python(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if argv and os.path.realpath(str(argv[0])) == os.path.realpath(sys.executable):
            raise AssertionError(f"{request.node.nodeid} starts a Python interpreter ({argv[:3]}...): mark it slow, "
                                 "or run nnrun in this process")
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_python)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)
