"""A real `tensorboard` server over a small sweep serves what the contract promises: one run per job, the
scalar tags, the train-vs-val loss chart, the config text, one HParams session group per job with its flattened
config and final metrics, and the loss and accuracy curves as the first charts a user sees."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import only_sweep_dir, read_metrics, run_dirs
from nnrun.cli import main

READY_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# One sweep and one server for the module's tests, on one xdist worker (addopts: --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tensorboard_server")]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A two-job `nnrun train -m`, run in this process (the CLI path is covered in test_sweeps.py)."""
    cwd = tmp_path_factory.mktemp("tensorboard")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(cwd)
        monkeypatch.setattr("sys.argv", ["nnrun"])
        code = main(["train", "-m", "dataset=xor", "model.hidden=[4]", "train.epochs=10", "train.log_every=5",
                     "exp_name=tb", "hydra/job_logging=none", "hydra/hydra_logging=none", "optimizer.lr=0.01,0.1"])
    assert code == 0
    return only_sweep_dir(cwd, "tb")


@pytest.fixture(scope="module")
def tensorboard_url(sweep_dir):
    """`tensorboard --logdir <sweep>` on 127.0.0.1 and a free port; the URL once it lists both runs."""
    port = free_port()
    log_path = sweep_dir.parent / "tensorboard.log"
    log = log_path.open("w")
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep_dir),
                               "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if len(get_json(f"{url}/data/runs")) == 2:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            assert time.monotonic() < deadline, f"tensorboard not ready in {READY_TIMEOUT_S} s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_tensorboard_serves_runs_scalars_and_one_hparams_row_per_job(sweep_dir, tensorboard_url):
    jobs = {job.name: job for job in run_dirs(sweep_dir)}
    assert sorted(get_json(f"{tensorboard_url}/data/runs")) == sorted(jobs)  # no stray timestamp sub-runs

    tags = get_json(f"{tensorboard_url}/data/plugin/scalars/tags")
    for name in jobs:
        assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr",
                "result/loss/val", "result/accuracy/val", "result/accuracy/test"} <= set(tags[name])

    # The custom-scalars tab: train and val loss on one chart; the text tab: each run's config.
    layout = get_json(f"{tensorboard_url}/data/plugin/custom_scalars/layout")
    charts = {chart["title"]: chart["multiline"]["tag"] for category in layout["category"]
              for chart in category["chart"]}
    assert charts["loss (train vs val)"] == ["loss/train", "loss/val"]
    assert get_json(f"{tensorboard_url}/data/plugin/text/tags") == {name: ["config/text_summary"] for name in jobs}

    experiment = get_json(f"{tensorboard_url}/data/plugin/hparams/experiment", {"experimentName": ""})
    hparams = {info["name"]: info for info in experiment["hparamInfos"]}
    assert hparams["optimizer.lr"]["differs"] is True
    assert {"seed", "model.hidden", "activation", "train.early_stopping.restore_best"} <= set(hparams)
    metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"result/loss/val", "result/accuracy/val", "result/accuracy/test"} <= metrics

    groups = get_json(f"{tensorboard_url}/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]})
    rows = {group["name"]: group for group in groups["sessionGroups"]}
    assert sorted(rows) == sorted(jobs)  # one row per job, named as its run
    for name, job in jobs.items():
        row = rows[name]
        assert row["hparams"]["optimizer.lr"] == pytest.approx(0.01 if "lr=0.01" in name else 0.1)
        assert row["hparams"]["train.early_stopping.restore_best"] == "true"
        served = {m["name"]["tag"]: m["value"] for m in row["metricValues"]}
        final = read_metrics(job)["final"]
        assert served["result/loss/val"] == pytest.approx(final["loss/val"], rel=1e-6)
        assert served["result/accuracy/test"] == pytest.approx(final["accuracy/test"], rel=1e-6)


def tensorboard_groups(tags) -> list[tuple[str, list[str]]]:
    """Tags as TensorBoard's Scalars and Time Series tabs lay them out, top to bottom: sorted, grouped by the part
    before the first '/' (Time Series sorts image tags in among the scalars'). Only the first two groups are
    expanded when the page opens; the others are one collapsed line each."""
    groups: dict[str, list[str]] = {}
    for tag in sorted(tags):
        groups.setdefault(tag.split("/", 1)[0], []).append(tag)
    return list(groups.items())


def test_the_loss_and_accuracy_curves_are_the_first_charts_tensorboard_shows(sweep_dir, tensorboard_url):
    """The first two groups are the curves, each chart more than one point; the pictures and the one-point final
    values come after them (and after lr), in both tabs."""
    scalars = get_json(f"{tensorboard_url}/data/plugin/scalars/tags")
    images = get_json(f"{tensorboard_url}/data/plugin/images/tags")
    assert sorted(scalars) == sorted(job.name for job in run_dirs(sweep_dir))
    for run, tags in scalars.items():
        points = {tag: len(get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?"
                                    + urlencode({"run": run, "tag": tag}))) for tag in tags}
        pictures = set(images[run])
        assert pictures, "the fixture's 2-D runs draw their decision boundary"
        one_point = {tag for tag, n in points.items() if n == 1}
        assert one_point, "the final values are one point each"
        for layout in (tensorboard_groups(points), tensorboard_groups([*points, *pictures])):  # Scalars, Time Series
            expanded, collapsed = dict(layout[:2]), [tag for _, group in layout[2:] for tag in group]
            assert expanded == {"accuracy": ["accuracy/train", "accuracy/val"], "loss": ["loss/train", "loss/val"]}
            assert all(points[tag] > 1 for group in expanded.values() for tag in group), points
            assert [name for name, _ in layout][:3] == ["accuracy", "loss", "lr"]
            assert one_point <= set(collapsed)
        assert pictures <= set(collapsed)
