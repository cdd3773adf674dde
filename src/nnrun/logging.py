"""TensorBoard output of one run: scalars, the loss chart layout, HParams, images and the config text.

Everything goes into the run's own directory (one event file), so `tensorboard --logdir <sweep>` shows one
run per job and the HParams table one row per job, with no stray sub-runs.

The event file is written here, synchronously, from TensorBoard's own protos (scalar events, the most
numerous, serialized by hand to the same bytes): torch's SummaryWriter would start a writer thread per run and
import TensorBoard's gfile (and with it boto3, half a second) for S3 paths a run dir never is. A vectorized
sweep opens one logger per job in a row, so that per-run cost added up.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# Seconds between batches of scalars written and flushed to the event file: curves stay live, the loop stays fast.
FLUSH_SECONDS = 2.0

# PNG rows unfiltered, deflated at zlib level 1 (encode_png): a 200x200 picture in 0.5 ms, against 1.4 ms with
# PIL at level 1 (which tries every row filter) and 2.3 ms at PIL's default; the files are as small as PIL's at
# level 1 (the pictures are flat colour regions, which deflate well without filters).
PNG_COMPRESS_LEVEL = 1

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


def masked_crc32c_function():
    """TFRecord's masked CRC-32C of bytes: google-crc32c's C code, or where that package is missing TensorBoard's
    pure-Python one (per byte: 12 ms more per XOR run, and its import brings in gfile and boto3)."""
    try:
        from google_crc32c import value as crc32c
    except ImportError:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

        return masked_crc32c

    def masked_crc32c(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    return masked_crc32c


_F32, _F64 = struct.Struct("<f"), struct.Struct("<d")
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def _varint(n: int) -> bytes:
    """Protobuf's base-128 varint (an int64 as its two's complement)."""
    n &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _value_head(tag: str) -> bytes:
    """The bytes of one Summary.Value {tag, simple_value} in a Summary, up to the float's 4 bytes."""
    encoded = tag.encode("utf-8")
    value = (b"\x0a" + _varint(len(encoded)) + encoded if encoded else b"") + b"\x15"  # tag = 1; simple_value = 2
    return b"\x0a" + _varint(len(value) + 4) + value  # Summary.value = 1


@functools.lru_cache(maxsize=256)
def _summary_layout(tags: tuple[str, ...]) -> tuple[bytes, list, struct.Struct]:
    """For a Summary of these tags' simple values: (the event's summary key and length; the Struct's arguments,
    each Value's head and a place for its float; a Struct that writes the Summary from them)."""
    heads = [_value_head(tag) for tag in tags]
    summary_size = sum(len(head) + 4 for head in heads)
    args: list = []
    for head in heads:
        args += (head, 0.0)
    return b"\x2a" + _varint(summary_size), args, struct.Struct("<" + "".join(f"{len(h)}sf" for h in heads))


def _float32(value: float) -> float:
    """`value`, or infinity where it rounds beyond float32's range, as the proto's double-to-float conversion."""
    try:
        _F32.pack(value)
    except OverflowError:
        return math.copysign(math.inf, value)
    return value


def scalar_event(step: int, wall_time: float, values: Mapping[str, float]) -> bytes:
    """`Event(step=step, wall_time=wall_time, summary=Summary(value=[Value(tag=..., simple_value=...), ...]))`
    serialized, byte for byte as protobuf serializes it, in a few microseconds: a sweep of tiny models writes
    tens of thousands of these (Event: wall_time = 1, a double; step = 2, a varint; summary = 5)."""
    return scalar_events(step, wall_time, tuple(values), [values.values()])[0]


def scalar_events(step: int, wall_time: float, tags: tuple[str, ...], rows: Iterable[Iterable[float]]) -> list[bytes]:
    """`scalar_event(step, wall_time, dict(zip(tags, row)))` for each row: the events of many runs at one step
    (a stack of models), the parts they share made once."""
    head = b""
    if wall_time != 0.0 or math.copysign(1.0, wall_time) < 0:  # proto3 leaves out +0.0, keeps -0.0
        head += b"\x09" + _F64.pack(wall_time)
    if step:
        head += b"\x10" + _varint(int(step))
    if not tags:
        return [head for _ in rows]
    key, template, summary = _summary_layout(tags)
    head += key
    args = template.copy()
    events = []
    for row in rows:
        args[1::2] = row
        try:
            events.append(head + summary.pack(*args))
        except (OverflowError, struct.error):  # beyond float32's range, or not a float
            args[1::2] = [_float32(float(v)) for v in row]
            events.append(head + summary.pack(*args))
    return events


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
        self._crc = masked_crc32c_function()
        os.makedirs(log_dir, exist_ok=True)
        name = "events.out.tfevents.%010d.%s.%s.%s" % (time.time(), socket.gethostname(), os.getpid(),
                                                       next(_file_numbers))
        self.path = Path(log_dir) / name
        self._file = open(self.path, "wb")
        self.write(Event(wall_time=time.time(), file_version="brain.Event:2",
                         source_metadata=SourceMetadata(writer="nnrun.logging")))
        self.flush()

    def add(self, summary, step: int = 0) -> None:
        """`summary` (a Summary proto) as one event at `step`, stamped now."""
        self.write(self._Event(summary=summary, step=int(step), wall_time=time.time()))

    def write(self, event) -> None:
        self.write_many((event.SerializeToString(),))

    def write_many(self, events: Iterable[bytes]) -> None:
        """Serialized Events as TFRecords, one after another, in one write."""
        crc, parts = self._crc, []
        for data in events:
            header = _U64.pack(len(data))
            parts += (header, _U32.pack(crc(header)), data, _U32.pack(crc(data)))
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


def encode_png(hwc) -> bytes:
    """A (H, W, C) uint8 numpy array (C 3: RGB, 4: RGBA) as PNG bytes: 8-bit, rows unfiltered, one IDAT chunk."""
    import zlib

    import numpy as np

    height, width, channels = hwc.shape
    colour_type = {3: 2, 4: 6}[channels]
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)  # each row: filter byte 0 (none), pixels
    rows[:, 0] = 0
    rows[:, 1:] = hwc.reshape(height, width * channels)  # no copy when the pixels lie side by side already

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"".join((b"\x89PNG\r\n\x1a\n",
                     chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)),
                     chunk(b"IDAT", zlib.compress(rows, PNG_COMPRESS_LEVEL)), chunk(b"IEND", b"")))


def image_summary(tag: str, chw):
    """A (C, H, W) image (torch tensor or numpy array; C 1, 3 or 4) as a PNG, as torch's SummaryWriter.add_image
    writes it: uint8 as it is, any other dtype taken as [0, 1] and scaled to 0..255, one channel as grey RGB."""
    import numpy as np
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = chw.detach().cpu().numpy() if hasattr(chw, "detach") else np.asarray(chw)
    if array.dtype != np.uint8:
        array = (array.astype(np.float32) * 255).clip(0, 255).astype(np.uint8)
    hwc = array.transpose(1, 2, 0)
    if hwc.shape[2] == 1:
        hwc = np.repeat(hwc, 3, axis=2)
    height, width, channels = hwc.shape
    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encode_png(hwc))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class RunLogger:
    """The run dir's event file, with the few calls the engine needs."""

    def __init__(self, run_dir: Path, config_yaml: str):
        self.run_dir = Path(run_dir)
        self.file = EventFile(run_dir)
        self._last_epoch = 0  # where the final metrics go on the step axis
        self._pending: list[bytes] = []  # serialized scalar events
        self._flushed_at = time.monotonic()
        self.file.add(custom_scalars_summary(custom_scalars_layout()))
        self.file.add(text_summary("config", "```yaml\n" + config_yaml + "\n```"), 0)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """All of one epoch's scalars in one event, written to the file in batches (see `flush`)."""
        self._add(step, scalar_event(step, time.time(), values), "loss/step" not in values)

    @staticmethod
    def scalars_of(loggers: Sequence["RunLogger"], step: int, columns: Mapping[str, Sequence[float]]) -> None:
        """`loggers[i].scalars(step, {tag: column[i] for tag, column in columns.items()})` for every i: the
        runs of a stack at one step, their events serialized together."""
        events = scalar_events(step, time.time(), tuple(columns), zip(*columns.values()))
        for logger, event in zip(loggers, events):
            logger._add(step, event, "loss/step" not in columns)

    def _add(self, step: int, event: bytes, per_epoch: bool) -> None:
        if per_epoch:  # per-step losses count optimisation steps, not epochs
            self._last_epoch = max(self._last_epoch, step)
        self._pending.append(event)
        if time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the pending scalars and put everything written so far on disk, where a running TensorBoard
        sees it. `scalars` calls this every FLUSH_SECONDS, not every epoch: a tiny model's training loop then
        pays for a system call per batch of epochs rather than per epoch."""
        self.file.write_many(self._pending)
        self._pending.clear()
        self.file.flush()
        self._flushed_at = time.monotonic()

    def image(self, tag: str, chw_uint8, step: int) -> None:
        """A (3, H, W) uint8 picture as the image `tag` at `step` (on disk at the next flush)."""
        self.file.add(image_summary(tag, chw_uint8), step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        """The HParams plugin's session start/end, in this run's own event file, and the final metrics.

        No experiment summary: TensorBoard then builds the table's columns from every run's session
        (so runs of a sweep that vary different keys still share one table) and its metric columns from
        the run's scalar tags, each at its last value. The per-epoch tags end at the last logged epoch,
        before restore_best puts the best weights back; the `final/<metric>` scalars hold what
        metrics.json calls final, so the table shows those too. A metric that is None (diverged, failed)
        is left out rather than written as NaN.
        """
        final = {f"final/{k}": float(v) for k, v in metrics.items() if v is not None}
        if final:
            self.scalars(self._last_epoch, final)
        for summary in session_summaries({k: hparam_value(v) for k, v in hparams.items()}):
            self.file.add(summary)

    def close(self) -> None:
        self.flush()
        self.file.close()
