"""A 1,024-job XOR sweep, vectorized on this machine and through SLURM: wall time, time per job, peak memory,
open files and memory per chunk, against the basic launcher's time per job on a 64-job sample.

    python benchmarks/sweep_scale.py                  # 1,024 jobs (16 lrs x 64 seeds) x 500 epochs
    python benchmarks/sweep_scale.py --jobs 256 --epochs 100     # quicker
    python benchmarks/sweep_scale.py --no-slurm       # where no SLURM cluster is up

Each sweep is one `python -m nnrun train -m ...` process started from here, as a user would type it:
`hydra/launcher=basic` on the first 64 jobs, `hydra/launcher=vectorized` and `hydra/launcher=vectorized_slurm`
(`--partition`, default `debug`: the one-node cluster of `.ci/slurm-cluster`) on all of them, each with the
launcher's default of at most 256 models a stack. While a sweep runs, a thread reads /proc every 0.1 s: the
launching process's resident memory (VmRSS, and its peak VmHWM) and open files (/proc/<pid>/fd), and, under
SLURM, the same of each stack's SLURM job (the python process running submitit's `_submit`, told apart by its
SLURM_JOB_ID). The lines a launcher prints as each stack ends are read as they come, with the memory at that
moment: memory per chunk, which must stay flat (the bar: within 50 MiB). The time each job takes to be set up must
stay flat too, from the first jobs to the last: it is read from the times at which the launching process wrote the
jobs' .hydra/overrides.yaml, one after another (the bar: the median gap between the last tenth of the jobs within
20% of the first tenth's). Last, the vectorized and the SLURM sweep's metrics.json are compared: the same
statuses, and final losses equal to 1e-5. Exit 1 when any bar fails.

The machine it ran on is shared: the load average before and after each sweep is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XOR = ["dataset=xor", "model.hidden=[4]", "train.batch_size=null", "threads=1", "device=cpu"]
LRS = [f"{10 ** (-3 + 2 * i / 15):.6g}" for i in range(16)]  # 1e-3 .. 1e-1, 16 values
BASIC_SAMPLE = 64
SAMPLE_S = 0.1
FLAT_MIB = 50  # the most RSS may grow from the first stack to the last
FLAT_SET_UP = 0.2  # the most the set-up time per job may grow from the first tenth of the jobs to the last


def status_kb(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def slurm_job_of(pid: int, folder: str) -> str | None:
    """The SLURM job id (<array>_<task>) of a process running a stack of this sweep, else None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        if "submitit.core._submit" not in cmdline or folder not in cmdline:
            return None
        with open(f"/proc/{pid}/environ", "rb") as handle:
            env = dict(item.split("=", 1) for item in handle.read().decode(errors="replace").split("\0") if "=" in item)
    except OSError:
        return None
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID')}"
    return env.get("SLURM_JOB_ID")


@dataclass
class Watched:
    """The most a process held: resident memory (peak, MiB) and open files."""

    peak_mib: float = 0.0
    max_files: int = 0

    def sample(self, pid: int) -> float | None:
        rss, hwm, files = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM"), open_files(pid)
        if rss is None:
            return None
        self.peak_mib = max(self.peak_mib, (hwm or rss) / 1024)
        self.max_files = max(self.max_files, files or 0)
        return rss / 1024


@dataclass
class Sweep:
    name: str
    jobs: int
    wall_s: float = 0.0
    launcher: Watched = field(default_factory=Watched)
    stack_jobs: dict[str, Watched] = field(default_factory=dict)  # SLURM job id -> its process
    chunks: list[tuple[str, float]] = field(default_factory=list)  # (stack line, launcher RSS MiB then)
    load: tuple[float, float] = (0.0, 0.0)
    results: dict[str, dict] = field(default_factory=dict)
    set_up_ms: tuple[float, float] = (0.0, 0.0)  # median set-up time per job: the first tenth, the last tenth

    @property
    def ms_per_job(self) -> float:
        return self.wall_s / self.jobs * 1000


def run_sweep(name: str, launcher: list[str], overrides: list[str], jobs: int, workdir: Path) -> Sweep:
    """One `nnrun train -m` process, watched while it runs."""
    workdir.mkdir(parents=True)
    sweep = Sweep(name, jobs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    args = [sys.executable, "-m", "nnrun", "train", "-m", *launcher, f"exp_name={name}", *overrides]
    before = os.getloadavg()[0]
    stderr = (workdir / "stderr.txt").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    done = threading.Event()
    folder = str(workdir / "experiments" / name / "multirun")

    def watch() -> None:
        known: set[int] = set()
        last_scan = 0.0
        while not done.is_set():
            sweep.launcher.sample(process.pid)
            if launcher[0].endswith("vectorized_slurm"):
                if time.monotonic() - last_scan > 0.5:  # new stacks' processes
                    last_scan = time.monotonic()
                    for entry in os.listdir("/proc"):
                        if entry.isdigit() and int(entry) not in known:
                            job = slurm_job_of(int(entry), folder)
                            if job is not None:
                                known.add(int(entry))
                                sweep.stack_jobs.setdefault(job, Watched())
                                pids[int(entry)] = job
                for pid, job in list(pids.items()):
                    if sweep.stack_jobs[job].sample(pid) is None:
                        del pids[pid]
            time.sleep(SAMPLE_S)

    pids: dict[int, str] = {}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert process.stdout is not None
    for line in process.stdout:
        if re.match(r"nnrun: stack \d+/\d+", line):
            sweep.chunks.append((line.strip(), sweep.launcher.sample(process.pid) or float("nan")))
    process.wait()
    sweep.wall_s = time.perf_counter() - started
    done.set()
    watcher.join()
    stderr.close()
    sweep.load = (before, os.getloadavg()[0])
    if process.returncode != 0:
        sys.exit(f"{name} sweep failed ({process.returncode}):\n{(workdir / 'stderr.txt').read_text()[-3000:]}")
    written = sorted(p.stat().st_mtime for p in Path(folder).glob("*/*/.hydra/overrides.yaml"))
    gaps = [b - a for a, b in zip(written, written[1:])]
    tenth = max(1, len(gaps) // 10)
    sweep.set_up_ms = (sorted(gaps[:tenth])[tenth // 2] * 1000, sorted(gaps[-tenth:])[tenth // 2] * 1000)
    for path in Path(folder).glob("*/*/metrics.json"):
        found = json.loads(path.read_text())
        sweep.results[" ".join(o for o in found["overrides"] if not o.startswith("exp_name"))] = found
    if len(sweep.results) != jobs:
        sys.exit(f"{name}: {len(sweep.results)} metrics.json for {jobs} jobs")
    return sweep


def compare(a: Sweep, b: Sweep, tolerance: float = 1e-5) -> tuple[str, bool]:
    """How many jobs of two sweeps ended with the same status and final losses equal to `tolerance`; all?"""
    same = 0
    for job, m in a.results.items():
        n = b.results.get(job)
        if n is not None and m["status"] == n["status"] and all(
                (m["final"][k] is None) == (n["final"][k] is None)
                and (m["final"][k] is None or abs(m["final"][k] - n["final"][k]) <= tolerance)
                for k in ("loss/train", "loss/val")):
            same += 1
    return (f"{same}/{len(a.results)} jobs of {a.name} and {b.name}: same status, final losses equal to "
            f"{tolerance:g}", same == len(a.results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1024, help="a multiple of 16 (16 lrs x jobs/16 seeds)")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--no-slurm", action="store_true", help="skip the sweep through SLURM")
    args = parser.parse_args()
    if args.jobs % 16:
        parser.error("--jobs must be a multiple of 16")
    slurm = not args.no_slurm
    if slurm and shutil.which("sbatch") is None:
        parser.error("no sbatch here: start a cluster (.ci/slurm-cluster, as root) or pass --no-slurm")

    sweep_args = [*XOR, f"train.epochs={args.epochs}", f"optimizer.lr={','.join(LRS)}"]
    print(f"XOR 2-4-1, full batch, {args.epochs} epochs, CPU, 1 thread; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    sweeps = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # a dir SLURM's jobs see: this one
        root = Path(tmp)
        sweeps.append(run_sweep("basic", ["hydra/launcher=basic"],
                                [*sweep_args, f"seed=range({BASIC_SAMPLE // 16})"], BASIC_SAMPLE, root / "basic"))
        print(f"basic: {BASIC_SAMPLE} jobs in {sweeps[-1].wall_s:.1f} s", flush=True)
        sweeps.append(run_sweep("vectorized", ["hydra/launcher=vectorized"],
                                [*sweep_args, f"seed=range({args.jobs // 16})"], args.jobs, root / "vectorized"))
        print(f"vectorized: {args.jobs} jobs in {sweeps[-1].wall_s:.1f} s", flush=True)
        if slurm:
            sweeps.append(run_sweep("vectorized_slurm", ["hydra/launcher=vectorized_slurm",
                                                          f"hydra.launcher.partition={args.partition}"],
                                    [*sweep_args, f"seed=range({args.jobs // 16})"], args.jobs, root / "slurm"))
            print(f"vectorized_slurm: {args.jobs} jobs in {sweeps[-1].wall_s:.1f} s", flush=True)

    basic = sweeps[0]
    print()
    print(f"{'launcher':<18} {'jobs':>5} {'wall s':>8} {'ms/job':>8} {'vs basic':>9} {'peak RSS MiB':>13} "
          f"{'open files':>11} {'load':>11}")
    for s in sweeps:
        print(f"{s.name:<18} {s.jobs:>5} {s.wall_s:>8.1f} {s.ms_per_job:>8.1f} "
              f"{basic.ms_per_job / s.ms_per_job:>8.1f}x {s.launcher.peak_mib:>13.0f} {s.launcher.max_files:>11} "
              f"{s.load[0]:>5.2f}-{s.load[1]:<5.2f}")
        for job, watched in sorted(s.stack_jobs.items()):
            print(f"{'  SLURM job ' + job:<18} {'':>5} {'':>8} {'':>8} {'':>9} {watched.peak_mib:>13.0f} "
                  f"{watched.max_files:>11}")
    print("\n(vs basic: the basic launcher's time per job on its 64-job sample over this one's; peak RSS and open "
          "files: the launching process, and under SLURM each stack's job)")
    flat = True
    for s in sweeps[1:]:
        print(f"\n{s.name}: the launching process's RSS as each stack ended")
        for line, rss in s.chunks:
            print(f"  {rss:7.0f} MiB  {line}")
        print(f"  stacks: {stacks_s(s):.1f} s of the {s.wall_s:.1f} s; the rest, "
              f"{(s.wall_s - stacks_s(s)) / s.jobs * 1000:.0f} ms a job, is the launching process's (start, nnrun's "
              "sweeper checking each job, Hydra's run_job, planning)")
        first, last = s.set_up_ms
        grew = last / first - 1
        print(f"  set-up time per job (median gap between jobs' .hydra/ writes): first tenth {first:.1f} ms, "
              f"last tenth {last:.1f} ms ({grew:+.0%}; bar: within {FLAT_SET_UP:.0%}: "
              f"{'met' if grew <= FLAT_SET_UP else 'NOT met'})")
        flat &= grew <= FLAT_SET_UP
        rss = [r for _, r in s.chunks]
        flat &= bool(rss) and max(rss) - rss[0] < FLAT_MIB
        peaks = [w.peak_mib for w in s.stack_jobs.values()]
        flat &= not peaks or max(peaks) - min(peaks) < FLAT_MIB
    print(f"\nbar: set-up time per job flat, and memory flat across stacks (RSS after each, and each SLURM job's "
          f"peak, within {FLAT_MIB} MiB): "
          f"{'met' if flat else 'NOT met'}")
    same = True
    if slurm:
        line, same = compare(sweeps[1], sweeps[2])
        print(line)
    return 0 if flat and same else 1


def stacks_s(sweep: Sweep) -> float:
    """Seconds spent training stacks: the sum of the engine's 'N runs in X s' lines (one process), or under SLURM
    from the submission to the last stack's end ('after N s')."""
    took = [float(m.group(1)) for line, _ in sweep.chunks for m in [re.search(r"runs in ([\d.]+) s", line)] if m]
    if took:
        return sum(took)
    return max((float(m.group(1)) for line, _ in sweep.chunks for m in [re.search(r"after (\d+) s", line)] if m),
               default=0.0)


if __name__ == "__main__":
    sys.exit(main())
