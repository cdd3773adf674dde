"""The run's event file, written by nnrun.tensorboard_events from TensorBoard's protos without torch's SummaryWriter:
TensorBoard's readers get back what was logged, the file is a valid TFRecord stream under TensorBoard's name,
scalars reach the disk while the run goes on, and the plugin summaries are the ones torch's SummaryWriter would
have written."""

from __future__ import annotations

import io
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nnrun import tensorboard_events as nnrun_logging
from nnrun.tensorboard_events import RunLogger, hparam_value

CONFIG = "seed: 0\nmodel:\n  hidden: [4]\n"
HPARAMS = {"seed": 0, "optimizer.lr": 0.1, "model.hidden": [4], "model.activation": "sigmoid",
           "train.early_stopping": True, "dataset.path": None}
METRICS = {"loss/val": 0.25, "accuracy/test": 1.0, "accuracy/diverged": None}


def event_file(run_dir: Path) -> Path:
    (path,) = run_dir.glob("events.out.tfevents.*")
    return path


def records(path: Path) -> list[bytes]:
    """The serialized events of a TFRecord file, every length and CRC checked with TensorBoard's own
    (pure-Python) masked CRC-32C, independent of the one the writer uses."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data, pos, found = path.read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert len(body) == length, "record cut short"
        assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body)
        found.append(body)
        pos += 16 + length
    return found


def events(path: Path) -> list:
    from tensorboard.compat.proto.event_pb2 import Event

    return [Event.FromString(record) for record in records(path)]


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


@pytest.fixture
def pictures():
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 256, (2, 3, 20, 30), dtype=np.uint8))
    return {("pictures/decision_boundary", 1): batch[0],  # a torch tensor, a view into a batch as the sweeps pass them
            ("pictures/decision_boundary", 200): rng.integers(0, 256, (3, 20, 30), dtype=np.uint8),
            ("pictures/xor_1_original_data", 1): batch[1].transpose(1, 2).contiguous().transpose(1, 2)}


def test_event_accumulator_reads_back_the_scalars_images_and_config(tmp_path, pictures):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    logged = log_a_run(tmp_path, pictures)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()

    assert sorted(acc.Tags()["scalars"]) == sorted(logged)
    for tag, by_step in logged.items():
        read = acc.Scalars(tag)
        assert [e.step for e in read] == list(by_step)
        assert [e.value for e in read] == pytest.approx(list(by_step.values()), rel=1e-6)  # float32 on disk

    for (tag, step), picture in pictures.items():
        (image,) = [e for e in acc.Images(tag) if e.step == step]
        assert (image.width, image.height) == (30, 20)
        decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert decoded.shape == (20, 30, 3)
        assert np.array_equal(decoded, np.asarray(picture).transpose(1, 2, 0))
    assert sum(len(acc.Images(tag)) for tag in acc.Tags()["images"]) == len(pictures)

    (text,) = acc.Tensors("config/text_summary")
    assert text.tensor_proto.string_val == [("```yaml\n" + CONFIG + "\n```").encode()]

    (layout_event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts == {title: tags for _, charts in nnrun_logging.custom_scalars_layout().items()
                      for title, (_, tags) in charts.items()}


def test_hparams_session_start_and_end_parse_with_the_hparams_plugins_protos(tmp_path, pictures):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    log_a_run(tmp_path, pictures)
    acc = EventAccumulator(str(tmp_path))  # the one the TensorBoard server reads runs with
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}

    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
        "seed": "number_value", "optimizer.lr": "number_value", "model.hidden": "string_value",
        "model.activation": "string_value", "train.early_stopping": "string_value", "dataset.path": "string_value"}
    assert {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()} == \
        {k: hparam_value(v) for k, v in HPARAMS.items()}
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG]).version == \
        metadata.PLUGIN_DATA_VERSION

    # The table's metric columns come from the scalar tags: the final metrics are there, the None one is not.
    tags = set(acc.Tags()["tensors"])
    assert {"result/loss/val", "result/accuracy/test"} <= tags and "result/accuracy/diverged" not in tags


def test_the_event_file_has_tensorboards_name_and_first_event(tmp_path, pictures):
    log_a_run(tmp_path, pictures)
    path = event_file(tmp_path)
    pattern = rf"events\.out\.tfevents\.\d{{10}}\.{re.escape(socket.gethostname())}\.{os.getpid()}\.\d+"
    assert re.fullmatch(pattern, path.name)
    first, *rest = events(path)
    assert first.file_version == "brain.Event:2" and first.wall_time > 0
    assert all(e.wall_time >= first.wall_time and e.HasField("summary") for e in rest)
    assert max(e.step for e in rest) == 600


def test_two_loggers_in_one_second_write_two_files(tmp_path):
    for _ in range(2):
        RunLogger(tmp_path, CONFIG).close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2


def test_scalars_are_on_disk_after_flush_before_close(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(1, {"loss/train": 0.5})
    logger.scalars(2, {"loss/train": 0.25})
    logger.flush()
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train")] == [(1, 0.5), (2, 0.25)]
    logger.close()


def test_scalars_reach_the_disk_every_flush_seconds_without_a_flush_call(tmp_path, monkeypatch):
    monkeypatch.setattr(nnrun_logging, "FLUSH_SECONDS", 0.0)
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(1, {"loss/train": 0.5})
    assert [v.tag for e in events(event_file(tmp_path)) for v in e.summary.value if v.HasField("simple_value")] \
        == ["loss/train"]
    logger.close()


def test_scalars_wait_for_the_next_batch_between_flushes(tmp_path, monkeypatch):
    monkeypatch.setattr(nnrun_logging, "FLUSH_SECONDS", 3600.0)
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(1, {"loss/train": 0.5})
    assert not any(v.HasField("simple_value") for e in events(event_file(tmp_path)) for v in e.summary.value)
    logger.close()
    assert any(v.tag == "loss/train" for e in events(event_file(tmp_path)) for v in e.summary.value)


def test_plugin_summaries_are_the_ones_torchs_summary_writer_writes():
    from torch.utils.tensorboard import summary as torch_summary

    clean = {k: hparam_value(v) for k, v in {**HPARAMS, "big": 2**40, "neg": -1.5, "text": "a b"}.items()}
    _, torch_start, torch_end = torch_summary.hparams(clean, {"result/loss/val": 0.25})
    start, end = nnrun_logging.session_summaries(clean)
    assert start == torch_start and end == torch_end

    layout = {**nnrun_logging.custom_scalars_layout(), "margins": {"band": ["Margin", ["m", "lo", "hi"]]}}
    assert nnrun_logging.custom_scalars_summary(layout) == torch_summary.custom_scalars(layout)
    assert nnrun_logging.text_summary("config", "é: 1") == torch_summary.text("config", "é: 1")


@pytest.mark.parametrize("shape,dtype", [((3, 17, 9), torch.uint8), ((1, 5, 6), torch.uint8),
                                         ((4, 8, 8), torch.uint8), ((3, 6, 7), torch.float32)])
def test_images_hold_the_pixels_torchs_summary_writer_writes(shape, dtype):
    from PIL import Image
    from torch.utils.tensorboard import summary as torch_summary

    generator = torch.Generator().manual_seed(0)
    picture = (torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator) if dtype == torch.uint8
               else torch.rand(shape, generator=generator) * 1.2 - 0.1)  # out of [0, 1]: clipped as torch does
    ours = nnrun_logging.image_summary("picture", picture).value[0]
    theirs = torch_summary.image("picture", picture, dataformats="CHW").value[0]
    assert ours.tag == theirs.tag
    for field in ("height", "width", "colorspace"):
        assert getattr(ours.image, field) == getattr(theirs.image, field)

    def pixels(image):
        return np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))

    assert np.array_equal(pixels(ours.image), pixels(theirs.image))


def test_hparams_plugin_names_are_tensorboards():
    from tensorboard.plugins.hparams import metadata

    assert (nnrun_logging.HPARAMS_PLUGIN, nnrun_logging.HPARAMS_DATA_VERSION, nnrun_logging.SESSION_START_TAG,
            nnrun_logging.SESSION_END_TAG) == (metadata.PLUGIN_NAME, metadata.PLUGIN_DATA_VERSION,
                                               metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG)


def test_masked_crc32c_is_tensorboards():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = [b"", b"a", struct.pack("<Q", 123), bytes(range(256)) * 7]
    assert [nnrun_logging.masked_crc32c(d) for d in data] == [masked_crc32c(d) for d in data]


def test_per_step_losses_leave_the_last_epoch_where_final_metrics_go(tmp_path):
    logger = RunLogger(tmp_path, CONFIG)
    logger.scalars(10, {"loss/train": 0.5})
    logger.scalars(40, {"loss/step": 1.0})
    logger.hparams({"seed": 0}, {"loss/val": 0.25})
    logger.close()
    finals = [(e.step, v.tag) for e in events(event_file(tmp_path)) for v in e.summary.value
              if v.tag.startswith("result/")]
    assert finals == [(10, "result/loss/val")]


def test_logging_a_run_imports_no_gfile_boto3_or_summary_writer(tmp_path):
    """TensorBoard's gfile pulls in boto3 (half a second) for S3; the logger needs neither it nor torch's writer."""
    script = (
        "import sys, numpy as np\n"
        "from nnrun.tensorboard_events import RunLogger\n"
        f"logger = RunLogger({str(tmp_path)!r}, 'a: 1')\n"
        "logger.scalars(1, {'loss/train': 0.5})\n"
        "logger.image('picture', np.zeros((3, 4, 4), np.uint8), 1)\n"
        "logger.hparams({'lr': 0.1, 'name': 'x'}, {'loss/train': 0.5})\n"
        "logger.close()\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'tensorboard.compat.tensorflow_stub',\n"
        "                         'torch.utils.tensorboard') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(nnrun_logging.__file__).parents[1])})
    assert out.stdout.strip() == "[]"
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
