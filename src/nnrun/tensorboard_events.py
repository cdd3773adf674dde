"""TensorBoard output of one run: scalars, the loss chart layout, HParams, images and the config text.

Everything goes into the run's own directory (one event file), so `tensorboard --logdir <sweep>` shows one
run per job and the HParams table one row per job, with no stray sub-runs.

Tag names decide what a user sees first. TensorBoard's Scalars and Time Series tabs sort tags, group them by the
part before the first `/` and expand only the first two groups (Time Series sorts images among them). The
per-epoch curves are `accuracy/...` and `loss/...`, the first two groups; `lr` follows; pictures are
`pictures/...` and the one-point final values `result/...`, both after `lr`, so neither an image nor a chart of
one point sorts before the curves.

Every summary comes from torch's public builders (`torch.utils.tensorboard.summary`: scalar, image, text,
custom_scalars, hparams), the ones torch's SummaryWriter writes with. Importing them imports tensorboard's gfile
and with it boto3 and fsspec, for S3 and other remote paths a run dir never is: 0.3 s once per process on a
quiet machine, up to 0.8 s on a busy one (benchmarks/event_writer.py). The HParams summaries cannot do without
it: every public builder of them (torch's, tensorboard's hparams plugin) imports the plugin's metadata, which
imports gfile.

The events are framed by `EventFile`, not by tensorboard's EventFileWriter (which SummaryWriter wraps), for what
that writer costs per event (benchmarks/event_writer.py, on one shared 2-core machine): its TFRecord framing
computes each record's CRC-32C in pure Python, byte by byte, and it hands every event to a writer thread of its
own per file. One run's events (51 logged epochs, 7 pictures, config, HParams) took it 18-34 ms against
EventFile's 0.6-0.7 ms; 2,000 per-step losses 320-490 ms against 7-16 ms; a stack of 256 runs, whose files are
all open while it trains, 4.2-7.0 s and 257 threads against 0.3 s and one (two runs of the benchmark).
EventFile writes the same records in this thread, with google-crc32c's C CRC, into a buffered file.
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

# Tag groups that sort after the curves' (accuracy, loss) and `lr`: see the module's docstring.
PICTURES = "pictures"
RESULT = "result"


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
        # The name's last part tells apart files made in one second by one process, as the writer's counter
        # does: the first number no file there has yet, taken by an exclusive create.
        stem = "events.out.tfevents.%010d.%s.%s" % (time.time(), socket.gethostname(), os.getpid())
        for number in itertools.count():
            self.path = Path(log_dir) / f"{stem}.{number}"
            try:
                self._file = open(self.path, "xb")
                break
            except FileExistsError:
                continue
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


class RunLogger:
    """The run dir's event file, with the few calls the engine needs."""

    def __init__(self, run_dir: Path, config_yaml: str, flush_seconds: float = FLUSH_SECONDS):
        from torch.utils.tensorboard import summary

        self.run_dir = Path(run_dir)
        self.file = EventFile(run_dir)
        self.flush_seconds = flush_seconds
        self._last_epoch = 0  # where the final metrics go on the step axis
        self._pending: list[Any] = []  # events not yet written
        self._flushed_at = time.monotonic()
        self.file.write([self.file.event(summary.custom_scalars(custom_scalars_layout())),
                         self.file.event(summary.text("config", "```yaml\n" + config_yaml + "\n```"))])

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """All of one step's scalars in one event, written to the file in batches (see `flush`)."""
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard.summary import scalar

        if "loss/step" not in values:  # per-step losses count optimisation steps, not epochs
            self._last_epoch = max(self._last_epoch, step)
        summary = Summary()
        for tag, value in values.items():
            summary.MergeFrom(scalar(tag, value))  # appends the builder's one value
        self._pending.append(self.file.event(summary, step))
        if time.monotonic() - self._flushed_at > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending events and put everything written so far on disk, where a running TensorBoard
        sees it. `scalars` calls this every `flush_seconds`, not every epoch: a tiny model's training loop then
        pays for a system call per batch of epochs rather than per epoch."""
        self.file.write(self._pending)
        self._pending.clear()
        self.file.flush()
        self._flushed_at = time.monotonic()

    def image(self, tag: str, chw, step: int) -> None:
        """A (C, H, W) picture (uint8 0..255, or float 0..1) as the image `tag` at `step` (on disk at the next
        flush). The builder's PNG is zlib's default level: for nnrun's 200 x 200 pictures about 1.5 ms more to
        encode than level 1, and a third smaller."""
        from torch.utils.tensorboard.summary import image

        self._pending.append(self.file.event(image(tag, chw, dataformats="CHW"), step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        """The HParams plugin's session start/end, in this run's own event file, and the final metrics.

        Of the builder's three summaries the experiment summary is left out: TensorBoard then builds the
        table's columns from every run's session (so runs of a sweep that vary different keys still share one
        table) and its metric columns from the run's scalar tags, each at its last value. The per-epoch tags
        end at the last logged epoch, before restore_best puts the best weights back; the `result/<metric>`
        scalars hold what metrics.json calls final, so the table shows those too (one point each, under a
        group that sorts after the curves). A metric that is None (diverged, failed) is left out rather than
        written as NaN.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        final = {f"{RESULT}/{k}": float(v) for k, v in metrics.items() if v is not None}
        if final:
            self.scalars(self._last_epoch, final)
        _experiment, start, end = hparams_summaries({k: hparam_value(v) for k, v in hparams.items()}, final)
        self._pending += [self.file.event(start), self.file.event(end)]

    def close(self) -> None:
        self.flush()
        self.file.close()
