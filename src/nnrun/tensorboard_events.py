"""TensorBoard output of one run: scalars, the loss chart layout, HParams, images and the config text.

Everything goes into the run's own directory (one event file), so `tensorboard --logdir <sweep>` shows one
run per job and the HParams table one row per job, with no stray sub-runs.

Tag names decide what a user sees first. TensorBoard's Scalars and Time Series tabs sort tags, group them by the
part before the first `/` and expand only the first two groups (Time Series sorts images among them). The
per-epoch curves are `accuracy/...` and `loss/...`, the first two groups; `lr` follows; pictures are
`pictures/...` and the one-point final values `result/...`, both after `lr`, so neither an image nor a chart of
one point sorts before the curves.

Events are TensorBoard's own protos, written synchronously as TFRecords (length, masked CRC-32C, data, masked
CRC-32C) by `EventFile`: torch's SummaryWriter would start a writer thread per run, and TensorBoard's own
record writer computes the CRC in pure Python, byte by byte, and imports its gfile (and with it boto3, a
second) for S3 paths a run dir never is. A stack of models keeps one logger per model open while it trains.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

# Seconds between batches of scalars written and flushed to the event file: curves stay live, the loop stays fast.
FLUSH_SECONDS = 2.0

# zlib level 1 for the PNGs: the pictures are flat colour regions, which deflate well at any level, and level 1
# takes a third of the default's time.
PNG_COMPRESS_LEVEL = 1

# Tag groups that sort after the curves' (accuracy, loss) and `lr`: see the module's docstring.
PICTURES = "pictures"
RESULT = "result"

# The HParams plugin's names (tensorboard.plugins.hparams.metadata, whose import pulls in gfile and boto3).
HPARAMS_PLUGIN = "hparams"
HPARAMS_DATA_VERSION = 0
SESSION_START_TAG = "_hparams_/session_start_info"
SESSION_END_TAG = "_hparams_/session_end_info"


def custom_scalars_layout() -> dict:
    # One chart with both losses: where loss/val turns up while loss/train goes on down is where
    # early stopping should stop.
    return {
        "training": {
            "loss (train vs val)": ["Multiline", ["loss/train", "loss/val"]],
            "accuracy (train vs val)": ["Multiline", ["accuracy/train", "accuracy/val"]],
        }
    }


def hparam_value(value: Any) -> Any:
    """HParams accept int, float and str (a bool would go as the number 0 or 1, so it goes as text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data` (google-crc32c's C code)."""
    from google_crc32c import value as crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


_file_numbers = itertools.count()  # the last part of an event file's name, as TensorBoard's writer counts


class EventFile:
    """One TensorBoard event file, written in this thread through a buffered file.

    The name and first event are those of TensorBoard's EventFileWriter; each event is one TFRecord: length,
    masked CRC of the length, the serialized Event, masked CRC of the data (tensorboard's record_writer.py).
    Nothing reaches the disk before `flush`.
    """

    def __init__(self, log_dir: Path):
        from tensorboard.compat.proto.event_pb2 import Event, SourceMetadata

        self._Event = Event
        os.makedirs(log_dir, exist_ok=True)
        name = "events.out.tfevents.%010d.%s.%s.%s" % (time.time(), socket.gethostname(), os.getpid(),
                                                       next(_file_numbers))
        self.path = Path(log_dir) / name
        self._file = open(self.path, "wb")
        self.write([Event(wall_time=time.time(), file_version="brain.Event:2",
                          source_metadata=SourceMetadata(writer="nnrun.tensorboard_events"))])
        self.flush()

    def event(self, summary, step: int = 0):
        """`summary` (a Summary proto) as an Event at `step`, stamped now."""
        return self._Event(summary=summary, step=int(step), wall_time=time.time())

    def write(self, events: Iterable[Any]) -> None:
        """Events as TFRecords, one after another, in one write."""
        parts = []
        for event in events:
            data = event.SerializeToString()
            header = _U64.pack(len(data))
            parts += (header, _U32.pack(masked_crc32c(header)), data, _U32.pack(masked_crc32c(data)))
        self._file.write(b"".join(parts))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def custom_scalars_summary(layout: Mapping[str, Mapping[str, list]]):
    """The custom scalars plugin's layout, from {category: {chart title: ["Multiline" | "Margin", tags]}}, as
    torch's SummaryWriter.add_custom_scalars writes it."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    def chart(title: str, kind: str, tags: list[str]):
        if kind == "Margin":  # a value between its lower and upper bound: three tags
            value, lower, upper = tags
            series = layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper)
            return layout_pb2.Chart(title=title, margin=layout_pb2.MarginChartContent(series=[series]))
        return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=tags))

    categories = [layout_pb2.Category(title=category, chart=[chart(title, *spec) for title, spec in charts.items()])
                  for category, charts in layout.items()]
    tensor = TensorProto(dtype="DT_STRING", tensor_shape=TensorShapeProto(),
                         string_val=[layout_pb2.Layout(category=categories).SerializeToString()])
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME))
    return Summary(value=[Summary.Value(tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=smd)])


def text_summary(tag: str, text: str):
    """The text plugin's `<tag>/text_summary`, as torch's SummaryWriter.add_text writes it."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.text import metadata
    from tensorboard.plugins.text.plugin_data_pb2 import TextPluginData

    content = TextPluginData(version=metadata.PROTO_VERSION).SerializeToString()
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content))
    tensor = TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=tag + "/text_summary", metadata=smd, tensor=tensor)])


def session_summaries(hparams: Mapping[str, int | float | str]):
    """The HParams plugin's session start (these values) and end (success) summaries, as torch's
    `torch.utils.tensorboard.summary.hparams` builds them: numbers as number_value, text as string_value."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo

    def summary(tag: str, **plugin_data):
        content = HParamsPluginData(version=HPARAMS_DATA_VERSION, **plugin_data).SerializeToString()
        smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=HPARAMS_PLUGIN, content=content))
        return Summary(value=[Summary.Value(tag=tag, metadata=smd)])

    start = SessionStartInfo()
    for key, value in hparams.items():
        if isinstance(value, str):
            start.hparams[key].string_value = value
        else:
            start.hparams[key].number_value = value
    end = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"))
    return summary(SESSION_START_TAG, session_start_info=start), summary(SESSION_END_TAG, session_end_info=end)


def image_summary(tag: str, chw):
    """A (C, H, W) image (torch tensor or numpy array; C 1, 3 or 4) as a PNG, as torch's SummaryWriter.add_image
    writes it: uint8 as it is, any other dtype taken as [0, 1] and scaled to 0..255, one channel as grey RGB."""
    import io

    import numpy as np
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = chw.detach().cpu().numpy() if hasattr(chw, "detach") else np.asarray(chw)
    if array.dtype != np.uint8:
        array = (array.astype(np.float32) * 255).clip(0, 255).astype(np.uint8)
    hwc = array.transpose(1, 2, 0)
    if hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    height, width, channels = hwc.shape
    png = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc)).save(png, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class RunLogger:
    """The run dir's event file, with the few calls the engine needs."""

    def __init__(self, run_dir: Path, config_yaml: str):
        self.run_dir = Path(run_dir)
        self.file = EventFile(run_dir)
        self._last_epoch = 0  # where the final metrics go on the step axis
        self._pending: list[Any] = []  # events not yet written
        self._flushed_at = time.monotonic()
        self.file.write([self.file.event(custom_scalars_summary(custom_scalars_layout())),
                         self.file.event(text_summary("config", "```yaml\n" + config_yaml + "\n```"))])

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """All of one step's scalars in one event, written to the file in batches (see `flush`)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if "loss/step" not in values:  # per-step losses count optimisation steps, not epochs
            self._last_epoch = max(self._last_epoch, step)
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()])
        self._pending.append(self.file.event(summary, step))
        if time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the pending events and put everything written so far on disk, where a running TensorBoard
        sees it. `scalars` calls this every FLUSH_SECONDS, not every epoch: a tiny model's training loop then
        pays for a system call per batch of epochs rather than per epoch."""
        self.file.write(self._pending)
        self._pending.clear()
        self.file.flush()
        self._flushed_at = time.monotonic()

    def image(self, tag: str, chw_uint8, step: int) -> None:
        """A (3, H, W) uint8 picture as the image `tag` at `step` (on disk at the next flush)."""
        self._pending.append(self.file.event(image_summary(tag, chw_uint8), step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        """The HParams plugin's session start/end, in this run's own event file, and the final metrics.

        No experiment summary: TensorBoard then builds the table's columns from every run's session
        (so runs of a sweep that vary different keys still share one table) and its metric columns from
        the run's scalar tags, each at its last value. The per-epoch tags end at the last logged epoch,
        before restore_best puts the best weights back; the `result/<metric>` scalars hold what
        metrics.json calls final, so the table shows those too (one point each, under a group that sorts
        after the curves). A metric that is None (diverged, failed) is left out rather than written as NaN.
        """
        final = {f"{RESULT}/{k}": float(v) for k, v in metrics.items() if v is not None}
        if final:
            self.scalars(self._last_epoch, final)
        self._pending += [self.file.event(summary)
                          for summary in session_summaries({k: hparam_value(v) for k, v in hparams.items()})]

    def close(self) -> None:
        self.flush()
        self.file.close()
