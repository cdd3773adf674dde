"""A long basic multirun stays flat: RSS and open file handles at job 10 against the last job.

Runs `nnrun train -m seed=range(N)` in this process with Hydra's basic launcher (every job in one
process, where leaked writers, threads or tensors would pile up) and a probe callback that records
RSS and open file descriptors after each job. Checks every job left a parseable metrics.json.

    python benchmarks/sweep_memory.py            # 200 jobs
    python benchmarks/sweep_memory.py --jobs 40  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from hydra.experimental.callback import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SAMPLES: list[tuple[int, float, int, int]] = []  # (job, RSS MiB, open fds, threads)


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Probe(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        SAMPLES.append((len(SAMPLES) + 1, rss_mib(), len(os.listdir("/proc/self/fd")), threading.active_count()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    from nnrun.cli import main as nnrun

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        sys.argv = ["nnrun"]
        nnrun(["train", "-m", f"seed=range({args.jobs})", "dataset=circles", "model.hidden=[8]", "train.epochs=20",
               "+hydra.callbacks.probe._target_=sweep_memory.Probe", "hydra/job_logging=disabled"])
        metrics = list(Path(tmp).rglob("metrics.json"))
        parsed = [json.loads(p.read_text()) for p in metrics]
    at10, last = SAMPLES[9], SAMPLES[-1]
    print(f"jobs run: {len(SAMPLES)}, metrics.json parsed: {len(parsed)} "
          f"({sum(m['status'] == 'completed' for m in parsed)} completed)")
    print(f"{'':>10} {'RSS MiB':>9} {'open fds':>9} {'threads':>8}")
    for name, (_, rss, fds, threads) in (("job 10", at10), (f"job {last[0]}", last)):
        print(f"{name:>10} {rss:>9.1f} {fds:>9} {threads:>8}")
    growth = last[1] - at10[1]
    ok = (len(parsed) == args.jobs and growth < 50 and last[2] <= at10[2] + 2 and last[3] <= at10[3] + 1)
    print(f"RSS growth job 10 -> {last[0]}: {growth:+.1f} MiB; bar: < 50 MiB, fds and threads flat:",
          "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    # Hydra instantiates the probe as sweep_memory.Probe: run that module's main so both see one SAMPLES.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sweep_memory

    sys.exit(sweep_memory.main())
