"""TensorBoard output of one run: scalars, the loss chart layout, HParams, images and the config text, all in the
run's own directory (one event file), so `tensorboard --logdir <sweep>` shows one run, one HParams row, per job.

Tag names decide what a user sees first: TensorBoard sorts tags, groups them by the part before the first `/` and
expands the first two groups. The curves are `accuracy/...` and `loss/...`; `lr` follows; pictures (`pictures/...`)
and the one-point final values (`result/...`) sort after them.

Every summary comes from torch's public builders (`torch.utils.tensorboard.summary`), imported when a run starts
(with tensorboard's gfile, boto3 and fsspec: 0.3-0.8 s once per process). `EventFile` frames the events, not
tensorboard's EventFileWriter, whose pure-Python CRC-32C and writer thread per file take 18-34 ms against 0.6-0.7 ms
for one run's events, 4-7 s and 257 threads against 0.3 s for a stack of 256 runs (benchmarks/event_writer.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from google_crc32c import value as crc32c

FLUSH_SECONDS = 2.0  # between batches of scalars written and flushed: curves stay live, the loop stays fast
PICTURES, RESULT = "pictures", "result"  # tag groups that sort after the curves and `lr` (module docstring)
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def custom_scalars_layout() -> dict:
    """Both losses in one chart: where loss/val turns up while loss/train goes on down, early stopping should stop."""
    return {"training": {"loss (train vs val)": ["Multiline", ["loss/train", "loss/val"]],
                         "accuracy (train vs val)": ["Multiline", ["accuracy/train", "accuracy/val"]]}}


def hparam_value(value: Any) -> Any:
    """HParams accept int, float and str (a bool would go as the number 0 or 1, so it goes as text)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    return value if isinstance(value, (int, float, str)) else str(value)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFile:
    """One TensorBoard event file, named and begun as EventFileWriter's, written in this thread through a buffered
    file (nothing on disk before `flush`): each event a TFRecord, as tensorboard's record_writer.py frames it."""

    def __init__(self, log_dir: Path):
        from tensorboard.compat.proto.event_pb2 import Event, SourceMetadata

        self._Event = Event
        os.makedirs(log_dir, exist_ok=True)
        # The name's last part tells apart files made in one second by one process, as the writer's counter
        # does: the first number no file there has yet, taken by an exclusive create.
        stem = "events.out.tfevents.%010d.%s.%s" % (time.time(), socket.gethostname(), os.getpid())
        for number in itertools.count():
            self.path = Path(log_dir) / f"{stem}.{number}"
            with contextlib.suppress(FileExistsError):
                self._file = open(self.path, "xb")
                break
        self.write([Event(wall_time=time.time(), file_version="brain.Event:2",
                          source_metadata=SourceMetadata(writer="nnrun.tensorboard_events"))])
        self.flush()

    def event(self, summary, step: int = 0):
        """`summary` (a Summary proto) as an Event at `step`, stamped now."""
        return self._Event(summary=summary, step=int(step), wall_time=time.time())

    def write(self, events: Iterable[Any]) -> None:
        """Events as TFRecords (length, its CRC, data, its CRC), one after another, in one write."""
        parts = []
        for data in (event.SerializeToString() for event in events):
            header = _U64.pack(len(data))
            parts += (header, _U32.pack(masked_crc32c(header)), data, _U32.pack(masked_crc32c(data)))
        self._file.write(b"".join(parts))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RunLogger:
    """The run dir's event file, with the few calls the engine needs."""

    def __init__(self, run_dir: Path, config_yaml: str, flush_seconds: float = FLUSH_SECONDS):
        from torch.utils.tensorboard import summary  # tensorboard: only when a run starts

        self.summary, self.run_dir, self.flush_seconds = summary, Path(run_dir), flush_seconds
        self.file = EventFile(run_dir)
        self.last_epoch = 0  # the newest epoch logged: where the final metrics go on the step axis
        self._pending: list[Any] = []  # events not yet written
        self._flushed_at = time.monotonic()
        self.file.write([self.file.event(summary.custom_scalars(custom_scalars_layout())),
                         self.file.event(summary.text("config", "```yaml\n" + config_yaml + "\n```"))])

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """All of one step's scalars in one event, written to the file in batches (see `flush`)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        if "loss/step" not in values:  # per-step losses count optimisation steps, not epochs
            self.last_epoch = max(self.last_epoch, step)
        summary = Summary()
        for tag, value in values.items():
            summary.MergeFrom(self.summary.scalar(tag, value))  # appends the builder's one value
        self._pending.append(self.file.event(summary, step))
        if time.monotonic() - self._flushed_at > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending events and put everything on disk, where a running TensorBoard sees it. `scalars`
        calls this every `flush_seconds`: a tiny model pays a system call per batch of epochs, not per epoch."""
        self.file.write(self._pending)
        self._pending.clear()
        self.file.flush()
        self._flushed_at = time.monotonic()

    def image(self, tag: str, chw, step: int) -> None:
        """A (C, H, W) picture (uint8 0..255, or float 0..1) as the image `tag` at `step` (on disk at the next
        flush). The builder's PNG is zlib's default level: for 200 x 200 pictures 1.5 ms more than level 1, a
        third smaller."""
        self._pending.append(self.file.event(self.summary.image(tag, chw, dataformats="CHW"), step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        """The HParams plugin's session start/end, and the final metrics as `result/<metric>` scalars (what
        metrics.json calls final; the per-epoch tags end before restore_best), None ones left out rather than NaN.
        The builder's experiment summary is left out: TensorBoard then builds the table's columns from every run's
        session, so runs of a sweep that vary different keys still share one table."""
        final = {f"{RESULT}/{k}": float(v) for k, v in metrics.items() if v is not None}
        if final:
            self.scalars(self.last_epoch, final)
        _experiment, start, end = self.summary.hparams({k: hparam_value(v) for k, v in hparams.items()}, final)
        self._pending += [self.file.event(start), self.file.event(end)]

    def close(self) -> None:
        self.flush()
        self.file.close()
