"""The run's event file, read back with TensorBoard's own readers: the scalars, the loss chart layout, the config
text, the images and the HParams session a user sees, a file TensorBoard recognises by name and first event, and
scalars that reach the disk while the run goes on."""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import events, server_events
from nnrun.tensorboard_events import RunLogger, hparam_value

CONFIG = "seed: 0\nmodel:\n  hidden: [4]\n"
HPARAMS = {"seed": 0, "optimizer.lr": 0.1, "model.hidden": [4], "model.activation": "sigmoid",
           "train.early_stopping": True, "dataset.path": None}
METRICS = {"loss/val": 0.25, "accuracy/test": 1.0, "accuracy/diverged": None}


def event_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("events.out.tfevents.*")
    return path


def records(path: Path) -> list:
    """The events of a file as TensorBoard's loader reads them: it checks every record's length and CRCs and
    stops at the first that fails, so a test that finds the last event written has read every record."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    return list(LegacyEventFileLoader(str(path)).Load())


def log_a_run(run_dir: Path, pictures: dict) -> dict[str, dict[int, float]]:
    """An XOR-like run: 5 tags every 10 epochs, per-step losses, pictures, HParams; returns the scalars logged."""
    logger = RunLogger(run_dir, CONFIG)
    logged: dict[str, dict[int, float]] = {}
    for epoch in [1, *range(10, 201, 10)]:
        values = {"loss/train": 1 / epoch, "loss/val": 2 / epoch, "accuracy/train": epoch / 200,
                  "accuracy/val": epoch / 400, "lr": 0.1}
        logger.scalars(epoch, values)
        logger.scalars(epoch * 3, {"loss/step": 3 / epoch})
        for tag, v in {**values, "loss/step": 3 / epoch}.items():
            logged.setdefault(tag, {})[epoch * 3 if tag == "loss/step" else epoch] = v
    for (tag, step), picture in pictures.items():
        logger.image(tag, picture, step)
    logger.hparams(HPARAMS, METRICS)
    logger.close()
    for k, v in METRICS.items():
        if v is not None:
            logged[f"result/{k}"] = {200: v}
    return logged


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 256, (2, 3, 20, 30), dtype=np.uint8))
    return {("pictures/decision_boundary", 1): batch[0],  # a torch tensor, a view into a batch as the sweeps pass them
            ("pictures/decision_boundary", 200): rng.integers(0, 256, (3, 20, 30), dtype=np.uint8),
            # laid out pixel by pixel, as nnrun.pictures draws them
            ("pictures/xor_1_original_data", 1): batch[1].permute(1, 2, 0).contiguous().permute(2, 0, 1)}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, pictures) -> tuple[Path, dict[str, dict[int, float]]]:
    """One run logged by `log_a_run`, read back by the tests that take it: its dir and the scalars logged."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, log_a_run(run_dir, pictures)


def test_scalars_read_back_with_their_steps_and_values(logged_run):
    run_dir, logged = logged_run
    acc = events(run_dir)  # the reader `nnrun report` uses
    assert sorted(acc.Tags()["scalars"]) == sorted(logged)
    for tag, by_step in logged.items():
        read = acc.Scalars(tag)
        assert [e.step for e in read] == list(by_step)
        assert [e.value for e in read] == pytest.approx(list(by_step.values()), rel=1e-6)  # float32 on disk


def test_images_read_back_with_their_size_and_pixels(logged_run, pictures):
    from PIL import Image

    run_dir, _ = logged_run
    acc = events(run_dir)
    assert sorted(acc.Tags()["images"]) == ["pictures/decision_boundary", "pictures/xor_1_original_data"]
    for (tag, step), picture in pictures.items():
        (image,) = [e for e in acc.Images(tag) if e.step == step]
        assert (image.width, image.height) == (30, 20)
        decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert decoded.shape == (20, 30, 3)
        assert np.array_equal(decoded, np.asarray(picture).transpose(1, 2, 0))


def test_a_float_picture_is_taken_as_0_to_1(tmp_path):
    from PIL import Image

    logger = RunLogger(tmp_path, CONFIG)
    logger.image("pictures/grey", torch.full((3, 4, 5), 0.5), 1)
    logger.close()
    (image,) = events(tmp_path).Images("pictures/grey")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), np.full((4, 5, 3), 127))


def test_the_layout_puts_train_and_val_loss_on_one_chart(logged_run):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    run_dir, _ = logged_run
    (layout_event,) = server_events(run_dir).Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts == {"loss (train vs val)": ["loss/train", "loss/val"],
                      "accuracy (train vs val)": ["accuracy/train", "accuracy/val"]}


def test_the_config_is_text_in_a_yaml_block(logged_run):
    from tensorboard.plugins.text import metadata

    run_dir, _ = logged_run
    acc = server_events(run_dir)
    assert acc.PluginTagToContent(metadata.PLUGIN_NAME).keys() == {"config/text_summary"}
    (text,) = acc.Tensors("config/text_summary")
    assert text.tensor_proto.string_val == [("```yaml\n" + CONFIG + "\n```").encode()]


def test_hparams_session_holds_the_config_in_the_runs_own_file(logged_run):
    """One session (start and end, success) with every key, and no experiment summary: TensorBoard then takes
    the table's columns from every run's session and its metric columns from the scalar tags."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    run_dir, _ = logged_run
    acc = server_events(run_dir)  # the one the TensorBoard server reads runs with
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}

    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
        "seed": "number_value", "optimizer.lr": "number_value", "model.hidden": "string_value",
        "model.activation": "string_value", "train.early_stopping": "string_value", "dataset.path": "string_value"}
    assert {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()} == {
        "seed": 0, "optimizer.lr": 0.1, "model.hidden": "[4]", "model.activation": "sigmoid",
        "train.early_stopping": "true", "dataset.path": "null"}
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS

    # The table's metric columns come from the scalar tags: the final metrics are there, the None one is not.
    tags = set(acc.Tags()["tensors"])
    assert {"result/loss/val", "result/accuracy/test"} <= tags and "result/accuracy/diverged" not in tags


def test_hparam_values_are_numbers_or_text():
    assert [hparam_value(v) for v in (3, 0.5, "adam", True, False, None, [4, 4])] == \
        [3, 0.5, "adam", "true", "false", "null", "[4, 4]"]


def test_the_event_file_has_tensorboards_name_and_first_event(logged_run):
    path = event_file(logged_run[0])
    pattern = rf"events\.out\.tfevents\.\d{{10}}\.{re.escape(socket.gethostname())}\.{os.getpid()}\.\d+"
    assert re.fullmatch(pattern, path.name)
    first, *rest = records(path)
    assert first.file_version == "brain.Event:2" and first.wall_time > 0
    assert all(e.wall_time >= first.wall_time and e.HasField("summary") for e in rest)
    assert max(e.step for e in rest) == 600
    assert rest[-1].summary.value[0].tag == "_hparams_/session_end_info"  # the last record: every one read


def test_two_loggers_in_one_second_write_two_files(tmp_path):
    for _ in range(2):
        RunLogger(tmp_path, CONFIG).close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def test_one_steps_scalars_are_one_event(tmp_path):
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(1, {"loss/train": 0.5, "loss/val": 0.75, "lr": 0.1})
    logger.close()
    (event,) = [e for e in records(event_file(tmp_path)) if e.step == 1]
    assert [(v.tag, v.simple_value) for v in event.summary.value] == [("loss/train", 0.5), ("loss/val", 0.75),
                                                                      ("lr", pytest.approx(0.1))]


def test_scalars_are_on_disk_after_flush_before_close(tmp_path):
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(1, {"loss/train": 0.5})
    logger.scalars(2, {"loss/train": 0.25})
    logger.flush()
    assert [(e.step, e.value) for e in events(tmp_path).Scalars("loss/train")] == [(1, 0.5), (2, 0.25)]
    logger.close()


def scalar_tags_on_disk(run_dir: Path) -> list[str]:
    return [v.tag for e in records(event_file(run_dir)) for v in e.summary.value if v.HasField("simple_value")]


def test_scalars_reach_the_disk_every_flush_seconds_without_a_flush_call(tmp_path):
    logger = RunLogger(tmp_path, CONFIG, flush_seconds=0.0)
    logger.scalars(1, {"loss/train": 0.5})
    assert scalar_tags_on_disk(tmp_path) == ["loss/train"]
    logger.close()


def test_scalars_wait_for_the_next_batch_between_flushes(tmp_path):
    logger = RunLogger(tmp_path, CONFIG, flush_seconds=3600.0)
    logger.scalars(1, {"loss/train": 0.5})
    assert scalar_tags_on_disk(tmp_path) == []
    logger.close()
    assert scalar_tags_on_disk(tmp_path) == ["loss/train"]


def test_per_step_losses_leave_the_last_epoch_where_final_metrics_go(tmp_path):
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(10, {"loss/train": 0.5})
    logger.scalars(40, {"loss/step": 1.0})
    logger.hparams({"seed": 0}, {"loss/val": 0.25})
    logger.close()
    finals = [(e.step, v.tag) for e in records(event_file(tmp_path)) for v in e.summary.value
              if v.tag.startswith("result/")]
    assert finals == [(10, "result/loss/val")]
