"""Shared test helpers: compose configs through Hydra's compose API, train in-process, run the real CLI."""

from __future__ import annotations

import json
import os
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
    """The validated TrainConfig of `nnrun train <overrides>`."""
    from nnrun.config import parse

    return parse(compose(overrides))


def train(overrides, run_dir: Path):
    """Train in this process (fast: no interpreter start-up); returns the engine's RunResult."""
    import torch

    from nnrun import engine

    cfg = parsed(overrides)
    torch.set_num_threads(cfg.threads)
    return engine.train(cfg, run_dir, overrides=list(overrides), show_progress=False)


def run_nnrun(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300,
              **kwargs) -> subprocess.CompletedProcess:
    """`python -m nnrun <args>` in `cwd`, with this checkout's src/ first on the path."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
                "COLUMNS": "200", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if not (env and "HYDRA_FULL_ERROR" in env) else None
    return subprocess.run([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m nnrun <args>` started in `cwd` (this checkout's src/ first), its output piped."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "nnrun", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def interrupt_when(process: subprocess.Popen, ready, timeout: float = 120) -> tuple[int, str, str]:
    """Ctrl-C once `ready()` holds (polled), then the exit code and output."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never got there"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


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


def run_dirs(root: Path) -> list[Path]:
    """Every run dir (a dir holding .hydra/) under root, sorted."""
    return sorted(p.parent for p in Path(root).rglob(".hydra") if p.is_dir())


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)
