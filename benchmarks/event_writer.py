"""Event writers: nnrun's EventFile against TensorBoard's own writers, on the events of real runs.

nnrun.tensorboard_events frames its events with EventFile (synchronous, google-crc32c's C CRC). This measures
why, in one process, on the same serialized events:
  - `EventFileWriter`: tensorboard.summary.writer.event_file_writer's, which torch's SummaryWriter and FileWriter
    wrap: a writer thread per file, records framed by tensorboard's RecordWriter;
  - `RecordWriter`: that framing alone, synchronously on a plain file: its CRC-32C is pure Python, byte by byte.
Cases: one run (the scalars of 51 logged epochs, 7 pictures, config, layout, HParams), the per-step losses of
`train.log_steps` (2,000 events of one scalar), and a stack of 256 runs open at once (the threads they start).
Then the import cost, each in a fresh interpreter with torch already imported: what EventFile needs, the writer's
module, and torch's summary builders, which nnrun uses and which import the writer's modules (gfile, boto3) too.

    python benchmarks/event_writer.py            # full size
    python benchmarks/event_writer.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

IMPORTS = {
    "EventFile's (protos, google-crc32c)": "import tensorboard.compat.proto.event_pb2, google_crc32c",
    "tensorboard's EventFileWriter": "import tensorboard.summary.writer.event_file_writer",
    "torch's summary builders": "import torch.utils.tensorboard.summary",
}


def run_events() -> tuple[list, list]:
    """(one run's events, per-step events) as the engine logs them, built with torch's builders."""
    import torch
    from tensorboard.compat.proto.event_pb2 import Event
    from torch.utils.tensorboard import summary

    from nnrun import losses, models, pictures, tensorboard_events
    from nnrun.data import Split

    def scalars(values):
        merged = summary.scalar(*values[0])
        for tag, value in values[1:]:
            merged.MergeFrom(summary.scalar(tag, value))
        return merged

    x = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    drawing = pictures.Pictures(Split(x, (x[:, 0] * x[:, 1] > 0).long()))
    model, loss = models.build(2, [8], 1, "tanh", 0.0, None, seed=0), losses.LOSSES["bce"]
    run = [Event(step=epoch, summary=scalars([("loss/train", 1 / epoch), ("loss/val", 2 / epoch),
                                              ("accuracy/train", 0.5), ("accuracy/val", 0.5), ("lr", 0.1)]))
           for epoch in range(1, 511, 10)]
    run += [Event(step=1, summary=summary.image(pictures.BOUNDARY, drawing.decision_boundary(model, loss),
                                                dataformats="CHW")) for _ in range(7)]
    run += [Event(summary=summary.text("config", "seed: 0\n" * 40)),
            Event(summary=summary.custom_scalars(tensorboard_events.custom_scalars_layout())),
            *(Event(summary=s) for s in summary.hparams({f"key{i}": 0.1 for i in range(40)}, {})[1:])]
    steps = [Event(step=step, summary=summary.scalar("loss/step", 1 / step)) for step in range(1, 2001)]
    return run, steps


def write_event_file(directory: str, events: list) -> None:
    from nnrun.tensorboard_events import EventFile

    file = EventFile(Path(directory))
    file.write(events)
    file.flush()
    file.close()


def write_event_file_writer(directory: str, events: list) -> None:
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(directory)
    for event in events:
        writer.add_event(event)
    writer.flush()
    writer.close()


def write_record_writer(directory: str, events: list) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    writer = RecordWriter(open(Path(directory) / "events.out.tfevents.record_writer", "wb"))
    for event in events:
        writer.write(event.SerializeToString())
    writer.flush()
    writer.close()


WRITERS = {"EventFile": write_event_file, "EventFileWriter": write_event_file_writer,
           "RecordWriter": write_record_writer}


def time_one(write, events: list, repeats: int) -> float:
    """Median seconds to write `events` to a new file (made, written, flushed, closed)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            write(tmp, events)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_stack(name: str, events: list, runs: int) -> tuple[float, int]:
    """Seconds to open `runs` files at once (as a stack's loggers are), write `events` to each, close them;
    and the threads alive while they were open."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from nnrun.tensorboard_events import EventFile

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        dirs = [Path(tmp) / str(i) for i in range(runs)]
        files = [EventFile(d) if name == "EventFile" else EventFileWriter(str(d)) for d in dirs]
        for file in files:
            if name == "EventFile":
                file.write(events)
            else:
                for event in events:
                    file.add_event(event)
        threads = threading.active_count()
        for file in files:
            file.flush()
            file.close()
        return time.perf_counter() - started, threads


def import_seconds(statement: str, repeats: int) -> float:
    """Median seconds `statement` takes in a fresh interpreter that has imported torch, numpy and Pillow."""
    program = ("import time, torch, numpy, PIL.Image\nstarted = time.perf_counter()\n"
               f"{statement}\nprint(time.perf_counter() - started)")
    return statistics.median(float(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller stack: a smoke run")
    args = parser.parse_args()
    repeats, stack = (3, 16) if args.quick else (15, 256)

    import torch

    torch.set_num_threads(1)
    run, steps = run_events()
    size = sum(e.ByteSize() for e in run)
    print(f"one run: {len(run)} events, {size / 1024:.0f} KiB; per-step losses: {len(steps)} events, "
          f"{sum(e.ByteSize() for e in steps) / 1024:.0f} KiB; median of {repeats}")
    for case, events in (("one run", run), ("per-step losses", steps)):
        seconds = {name: time_one(write, events, repeats) for name, write in WRITERS.items()}
        base = seconds["EventFile"]
        print(f"  {case}: " + ", ".join(f"{name} {s * 1e3:.1f} ms ({s / base:.1f}x)" for name, s in seconds.items()))
    stacked = {name: time_stack(name, run, stack) for name in ("EventFile", "EventFileWriter")}
    base = stacked["EventFile"][0]
    print(f"  a stack of {stack} runs open at once: " + ", ".join(
        f"{name} {s:.2f} s ({s / base:.1f}x), {threads} threads" for name, (s, threads) in stacked.items()))

    print(f"imports, on top of torch (median of {repeats} fresh interpreters):")
    for what, statement in IMPORTS.items():
        print(f"  {what}: {import_seconds(statement, repeats) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
