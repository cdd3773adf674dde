"""The same 64-job sweeps with Hydra's basic launcher and with nnrun's vectorized launcher: wall time, ratio.

    python benchmarks/sweep_speed.py            # XOR 2-4-1 (2,000 epochs, full batch) and spirals 2-32-32-1
                                                # (batch 64, 100 epochs), 16 lrs x 4 seeds each; CPU, 1 thread
    python benchmarks/sweep_speed.py --quick    # the same sweeps, shorter (a smoke test, a minute or so)
    python benchmarks/sweep_speed.py --device cuda

Each sweep runs as one `python -m nnrun train -m ...` process per launcher (so both pay Hydra, the run dirs and
TensorBoard writing per job), then the jobs' metrics.json are compared: statuses must be equal, and the
final losses are reported as agreeing to 1e-4 or not (see `compare`).

The vectorized sweep takes seconds where the basic one takes minutes, so one slow moment of a shared machine
moves its time far more: it runs `--repeats` times (default 5), some before the basic sweep and the rest after
it (so a slow or fast spell of the machine falls on both sides), and the median counts (all times are printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = [f"{10 ** (-3 + 2 * i / 15):.6g}" for i in range(16)]  # 1e-3 .. 1e-1, 16 values
SEEDS = "0,1,2,3"

SWEEPS = {
    # name: (overrides, epochs, quick epochs, steps per epoch)
    "xor": (["dataset=xor", "model.hidden=[4]", "train.batch_size=null"], 2000, 200, 1),
    "spirals": (["dataset=spirals", "model.hidden=[32,32]", "train.batch_size=64"], 100, 10,
                math.ceil(600 * 0.6 / 64)),
}


def run_sweep(launcher: str, overrides: list[str], workdir: Path, device: str) -> tuple[float, dict]:
    """One `nnrun train -m` process; (wall seconds, {job overrides: metrics})."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "nnrun", "train", "-m", f"hydra/launcher={launcher}", f"device={device}",
            "threads=1", f"exp_name=bench_{launcher}", f"optimizer.lr={','.join(LRS)}", f"seed={SEEDS}", *overrides]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{launcher} sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    results = {}
    for path in (workdir / "experiments" / f"bench_{launcher}").glob("multirun/*/*/metrics.json"):
        found = json.loads(path.read_text())
        results[" ".join(o for o in found["overrides"] if not o.startswith(("hydra/", "exp_name")))] = found
    return wall, results


def compare(basic: dict, vectorized: dict, tolerance: float = 1e-4) -> tuple[bool, str]:
    """(statuses all equal, a line on how closely the final losses agree).

    Each model's curve equals its separate run's to 1e-5 on short runs (tests/test_vectorized.py); over hundreds
    of steps at a high learning rate, float32 rounding differences of the batched matmul (a different summation
    order than one model's) can grow, so jobs beyond `tolerance` are listed with their difference.
    """
    if set(basic) != set(vectorized):
        return False, f"different jobs: {sorted(set(basic) ^ set(vectorized))[:3]}"
    statuses_equal, beyond = True, []
    for job, a in basic.items():
        b = vectorized[job]
        statuses_equal &= a["status"] == b["status"]
        for key in ("loss/train", "loss/val"):
            x, y = a["final"][key], b["final"][key]
            if (x is None) != (y is None):
                beyond.append((math.inf, job, key, x, y))
            elif x is not None and abs(x - y) > tolerance * max(1.0, abs(x)):
                beyond.append((abs(x - y), job, key, x, y))
    jobs_beyond = {job for _, job, *_ in beyond}
    line = f"{len(basic) - len(jobs_beyond)}/{len(basic)} jobs' final losses agree to {tolerance:g}"
    for diff, job, key, x, y in sorted(beyond, reverse=True)[:3]:
        line += f"; {job}: {key} {x:.6g} vs {y:.6g}"
    return statuses_equal, line + ("" if statuses_equal else "; STATUSES DIFFER")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs: a smoke test")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--only", choices=tuple(SWEEPS), help="run one of the two sweeps")
    parser.add_argument("--repeats", type=int, default=5,
                        help="vectorized runs, the median counts: half before the basic sweep, half after (default 5)")
    args = parser.parse_args()
    failed = False
    for name, (overrides, epochs, quick_epochs, steps_per_epoch) in SWEEPS.items():
        if args.only and name != args.only:
            continue
        epochs = quick_epochs if args.quick else epochs
        overrides = [*overrides, f"train.epochs={epochs}"]
        with tempfile.TemporaryDirectory() as tmp:
            repeats = max(1, args.repeats)
            runs = []

            def vectorized() -> None:
                workdir = Path(tmp) / f"vectorized{len(runs)}"
                workdir.mkdir()
                runs.append(run_sweep("vectorized", overrides, workdir, args.device))

            for _ in range(repeats // 2):
                vectorized()
            basic_s, basic = run_sweep("basic", overrides, Path(tmp), args.device)
            while len(runs) < repeats:
                vectorized()
            vec_s, vec = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        steps = epochs * steps_per_epoch
        statuses_equal, agreement = compare(basic, vec)
        failed |= not statuses_equal
        print(f"{name}: {len(basic)} jobs x {epochs} epochs ({steps} steps per model) on {args.device}\n"
              f"  basic      {basic_s:8.2f} s   {steps * len(basic) / basic_s:10.0f} steps/s over all models"
              f"   {steps / basic_s:8.1f} steps/s per model\n"
              f"  vectorized {vec_s:8.2f} s   {steps * len(vec) / vec_s:10.0f} steps/s over all models"
              f"   {steps / vec_s:8.1f} steps/s per model"
              f"   (median of {', '.join(f'{t:.2f}' for t, _ in runs[:repeats // 2])} s before basic, "
              f"{', '.join(f'{t:.2f}' for t, _ in runs[repeats // 2:])} s after)\n"
              f"  speed-up   {basic_s / vec_s:8.1f}x\n  results    {agreement}",
              flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
