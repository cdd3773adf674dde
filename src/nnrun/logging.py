"""TensorBoard output of one run: scalars, the loss chart layout, HParams, images and the config text.

Everything goes into the run's own directory (one event file), so `tensorboard --logdir <sweep>` shows one
run per job and the HParams table one row per job, with no stray sub-runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

# Seconds between batches of scalars handed to TensorBoard's writer: curves stay live, the loop stays fast.
FLUSH_SECONDS = 2.0


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
    """HParams accept int, float and str (torch writes a bool as the number 0 or 1, so it goes as text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


class RunLogger:
    """A SummaryWriter on the run dir, with the few calls the engine needs."""

    def __init__(self, run_dir: Path, config_yaml: str, max_queue: int = 1024):
        """`max_queue`: events the writer thread may have pending before a write waits for it."""
        from torch.utils.tensorboard import SummaryWriter
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._Summary = Summary
        # A queue long enough for a batch of scalars (see flush): the loop never waits for the writer thread.
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=30, max_queue=max_queue)
        self._file_writer = self.writer._get_file_writer()
        self._last_epoch = 0  # where the final metrics go on the step axis
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._flushed_at = time.monotonic()
        self.writer.add_custom_scalars(custom_scalars_layout())
        self.writer.add_text("config", "```yaml\n" + config_yaml + "\n```", 0)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """All of one epoch's scalars in one event, handed to the writer in batches (see `flush`)."""
        if "loss/step" not in values:  # per-step losses count optimisation steps, not epochs
            self._last_epoch = max(self._last_epoch, step)
        self._pending.append((step, dict(values)))
        if time.monotonic() - self._flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Hand the pending scalars to the writer thread at once. One event at a time would wake that thread
        every epoch, and its fight for the GIL cost a tiny model's training loop about a tenth of its speed."""
        Summary = self._Summary
        for step, values in self._pending:
            summary = Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])
            self._file_writer.add_summary(summary, step)
        self._pending.clear()
        self._flushed_at = time.monotonic()

    def image(self, tag: str, chw_uint8, step: int) -> None:
        self.writer.add_image(tag, chw_uint8, step, dataformats="CHW")

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        """The HParams plugin's session start/end, in this run's own event file, and the final metrics.

        No experiment summary: TensorBoard then builds the table's columns from every run's session
        (so runs of a sweep that vary different keys still share one table) and its metric columns from
        the run's scalar tags, each at its last value. The per-epoch tags end at the last logged epoch,
        before restore_best puts the best weights back; the `final/<metric>` scalars hold what
        metrics.json calls final, so the table shows those too. A metric that is None (diverged, failed)
        is left out rather than written as NaN.
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        clean = {k: hparam_value(v) for k, v in hparams.items()}
        final = {f"final/{k}": float(v) for k, v in metrics.items() if v is not None}
        if final:
            self.scalars(self._last_epoch, final)
        _, session_start, session_end = hparams_summaries(clean, final)
        self._file_writer.add_summary(session_start)
        self._file_writer.add_summary(session_end)

    def close(self) -> None:
        self.flush()
        self.writer.flush()
        self.writer.close()
