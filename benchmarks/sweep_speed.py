"""Sweeps with Hydra's basic launcher and with nnrun's vectorized launcher: wall time of the whole process, ratio.

    python benchmarks/sweep_speed.py            # XOR 2-4-1 (2,000 epochs, full batch) and spirals 2-32-32-1
                                                # (batch 64, 100 epochs), 16 lrs x 4 seeds each; XOR with 256
                                                # jobs (16 lrs x 16 seeds); the stacked training alone; CPU, 1 thread
    python benchmarks/sweep_speed.py --quick    # the same, shorter (a smoke test)
    python benchmarks/sweep_speed.py --device cuda

Each 64-job sweep runs as one `python -m nnrun train -m ...` process per launcher (so both pay Python, Hydra,
the run dirs and TensorBoard writing per job), then the jobs' metrics.json are compared: statuses must be
equal, and the final losses are reported as agreeing to 1e-4 or not (see `compare`). The 256-job XOR sweep
runs vectorized only; its ratio is against the basic launcher's time per job in the 64-job XOR sweep of the
same run, times 256 (the basic launcher's time grows with the jobs, one after another).

The vectorized sweep takes seconds where the basic one takes minutes, so one slow moment of a shared machine
moves its time far more: it runs `--repeats` times (default 5), some before the basic sweep and the rest after
it (so a slow or fast spell of the machine falls on both sides), and the median counts (all times are printed).

Then the stacked training's own time (engine.train_stack: the loop, evaluation, each run's files) per
model-step of 64 models in one stack against one model alone, in this process.

Last, the sweep around the stack (`--only plan`): a 256-job XOR sweep (500 epochs) under `vectorized`, run with
nnrun's sweeper (the default) and with `hydra/sweeper=basic` (Hydra's, which composes every job once more to
check it), then resumed with train.resume when all its jobs have finished (each is carried over). For each, the
wall time of the process and the launching process's time per job: the wall time less the stacks' training (their
`nnrun: stack ...` lines), over the jobs.

Bars: whole process, 64-job XOR >= 12x, 256-job XOR >= 25x, 64-job spirals >= 6x; the stacked training per
model-step at K = 64 >= 20x; nnrun's sweeper <= 0.5x the wall time of Hydra's basic sweeper; resuming the finished
sweep <= 0.5x the wall time of running it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = [f"{10 ** (-3 + 2 * i / 15):.6g}" for i in range(16)]  # 1e-3 .. 1e-1, 16 values

XOR = ["dataset=xor", "model.hidden=[4]", "train.batch_size=null"]
SPIRALS = ["dataset=spirals", "model.hidden=[32,32]", "train.batch_size=64"]
SWEEPS = {
    # name: (overrides, seeds, epochs, quick epochs, steps per epoch, bar)
    "xor": (XOR, 4, 2000, 200, 1, 12.0),
    "spirals": (SPIRALS, 4, 100, 10, math.ceil(600 * 0.6 / 64), 6.0),
}
XOR_256 = (XOR, 16, 25.0)  # 16 lrs x 16 seeds, against the 64-job basic sweep's time per job
STACK_BAR = 20.0
PLAN_EPOCHS, PLAN_BAR = 500, 0.5  # the sweep around the stack: 256 XOR jobs; nnrun's sweeper and resuming


def nnrun_sweep(args: list[str], workdir: Path, device: str) -> tuple[float, str]:
    """One `nnrun train -m` process in `workdir`: (wall seconds, stdout)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnrun", "train", "-m", f"device={device}", "threads=1", *args],
                          cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, done.stdout


def launching_per_job(wall: float, stdout: str, jobs: int) -> float:
    """The launching process's seconds per job: its wall time less the stacks' training, over the jobs."""
    training = sum(float(s) for s in re.findall(r"^nnrun: stack \d+/\d+: \d+ runs in ([\d.]+) s", stdout, re.M))
    return (wall - training) / jobs


def sweep_around_the_stack(device: str, quick: bool) -> list[tuple[str, float, float]]:
    """nnrun's sweeper against Hydra's basic sweeper, and resuming the finished sweep against running it:
    [(what, ratio, bar)], each ratio to stay at or below its bar."""
    epochs = 50 if quick else PLAN_EPOCHS
    sweep = ["hydra/launcher=vectorized", *XOR, f"train.epochs={epochs}", f"optimizer.lr={','.join(LRS)}",
             "seed=range(16)"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nnrun_s, nnrun_out = nnrun_sweep([*sweep, "exp_name=plan"], work, device)
        basic_s, basic_out = nnrun_sweep([*sweep, "exp_name=plan_basic", "hydra/sweeper=basic"], work, device)
        (done,) = (work / "experiments" / "plan" / "multirun").iterdir()
        resume_s, resume_out = nnrun_sweep([*sweep, "exp_name=plan", f"train.resume={done}"], work, device)
        assert "256 finished jobs carried over" in resume_out, resume_out[-2000:]
    print(f"sweep around the stack: 256 XOR jobs x {epochs} epochs under hydra/launcher=vectorized on {device}")
    for name, wall, out in (("nnrun's sweeper", nnrun_s, nnrun_out), ("hydra/sweeper=basic", basic_s, basic_out),
                            ("resumed, all finished", resume_s, resume_out)):
        print(f"  {name:22} {wall:7.2f} s   launching process {launching_per_job(wall, out, 256) * 1000:6.1f} ms "
              "per job", flush=True)
    return [("nnrun's sweeper / hydra/sweeper=basic", nnrun_s / basic_s, PLAN_BAR),
            ("resuming the finished sweep / running it", resume_s / nnrun_s, PLAN_BAR)]


def run_sweep(launcher: str, overrides: list[str], workdir: Path, device: str, seeds: int) -> tuple[float, dict]:
    """One `nnrun train -m` process; (wall seconds, {job overrides: metrics})."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "nnrun", "train", "-m", f"hydra/launcher={launcher}", f"device={device}",
            "threads=1", f"exp_name=bench_{launcher}", f"optimizer.lr={','.join(LRS)}",
            f"seed=range({seeds})", *overrides]
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

    Each model's curve equals its separate run's to 1e-5 on short runs (tests/test_stacking.py); over hundreds
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


def stacked_training(device: str, quick: bool) -> float:
    """engine.train_stack's time per model-step: one XOR model alone, then 64 in one stack (ratio)."""
    import tempfile

    import torch

    sys.path.insert(0, str(REPO / "src"))
    from hydra import compose, initialize_config_dir

    from nnrun import config, engine, losses
    from nnrun.app import config_dir, register_resolvers
    from nnrun.data import load

    torch.set_num_threads(1)
    register_resolvers()
    epochs = 200 if quick else 2000
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="bench"):
        cfgs = [config.parse(compose("train", overrides=[*XOR, f"device={device}", f"train.epochs={epochs}",
                                                         f"optimizer.lr={lr}", f"seed={seed}"]))
                for lr in LRS for seed in range(4)]
    seconds = {}
    for k in (1, 64):
        with tempfile.TemporaryDirectory() as tmp:
            jobs = [engine.Job(cfg, Path(tmp) / str(i)) for i, cfg in enumerate(cfgs[:k])]
            data = load(cfgs[0].dataset).to(engine.resolve_device(device))
            loss = losses.LOSSES[cfgs[0].loss]
            members = [engine.start(job, data, loss, data.train.x.device) for job in jobs]
            started = time.perf_counter()
            engine.train_stack(members, data, loss, [])
            seconds[k] = time.perf_counter() - started
    ratio = seconds[1] * 64 / seconds[64]
    print(f"stacked training (engine.train_stack, XOR, {epochs} epochs): 1 model {seconds[1]:.2f} s, "
          f"64 models {seconds[64]:.2f} s: {ratio:.1f}x per model-step (bar {STACK_BAR:g}x)", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs: a smoke test")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--only", choices=(*SWEEPS, "xor256", "stack", "plan"), help="run one part")
    parser.add_argument("--repeats", type=int, default=5,
                        help="vectorized runs, the median counts: half before the basic sweep, half after (default 5)")
    args = parser.parse_args()
    failed, bars = False, []
    basic_per_job: dict[str, float] = {}
    for name, (overrides, seeds, epochs, quick_epochs, steps_per_epoch, bar) in SWEEPS.items():
        if args.only and name != args.only and not (args.only == "xor256" and name == "xor"):
            continue
        epochs = quick_epochs if args.quick else epochs
        overrides = [*overrides, f"train.epochs={epochs}"]
        with tempfile.TemporaryDirectory() as tmp:
            repeats = max(1, args.repeats)
            runs = []

            def vectorized() -> None:
                workdir = Path(tmp) / f"vectorized{len(runs)}"
                workdir.mkdir()
                runs.append(run_sweep("vectorized", overrides, workdir, args.device, seeds))

            for _ in range(repeats // 2):
                vectorized()
            basic_s, basic = run_sweep("basic", overrides, Path(tmp), args.device, seeds)
            while len(runs) < repeats:
                vectorized()
            vec_s, vec = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        basic_per_job[name] = basic_s / len(basic)
        steps = epochs * steps_per_epoch
        statuses_equal, agreement = compare(basic, vec)
        failed |= not statuses_equal
        bars.append((f"{name} {len(basic)} jobs", basic_s / vec_s, bar))
        print(f"{name}: {len(basic)} jobs x {epochs} epochs ({steps} steps per model) on {args.device}\n"
              f"  basic      {basic_s:8.2f} s   {steps * len(basic) / basic_s:10.0f} steps/s over all models"
              f"   {steps / basic_s:8.1f} steps/s per model\n"
              f"  vectorized {vec_s:8.2f} s   {steps * len(vec) / vec_s:10.0f} steps/s over all models"
              f"   {steps / vec_s:8.1f} steps/s per model"
              f"   (median of {', '.join(f'{t:.2f}' for t, _ in runs[:repeats // 2])} s before basic, "
              f"{', '.join(f'{t:.2f}' for t, _ in runs[repeats // 2:])} s after)\n"
              f"  speed-up   {basic_s / vec_s:8.1f}x (bar {bar:g}x)\n  results    {agreement}",
              flush=True)
    if args.only in (None, "xor256"):
        overrides, seeds, bar = XOR_256
        epochs = SWEEPS["xor"][3] if args.quick else SWEEPS["xor"][2]
        times = []
        for _ in range(max(1, args.repeats // 2)):
            with tempfile.TemporaryDirectory() as tmp:
                wall, results = run_sweep("vectorized", [*overrides, f"train.epochs={epochs}"], Path(tmp),
                                          args.device, seeds)
                times.append(wall)
        vec_s = sorted(times)[len(times) // 2]
        ratio = basic_per_job["xor"] * len(results) / vec_s
        bars.append((f"xor {len(results)} jobs", ratio, bar))
        print(f"xor: {len(results)} jobs x {epochs} epochs on {args.device}\n"
              f"  basic      {basic_per_job['xor'] * len(results):8.2f} s (its 64-job sweep's "
              f"{basic_per_job['xor']:.3f} s per job, x {len(results)})\n"
              f"  vectorized {vec_s:8.2f} s   (median of {', '.join(f'{t:.2f}' for t in times)} s); "
              f"{vec_s / len(results) * 1000:.1f} ms per job\n"
              f"  speed-up   {ratio:8.1f}x (bar {bar:g}x)", flush=True)
    if args.only in (None, "stack"):
        bars.append(("stacked training per model-step, K = 64", stacked_training(args.device, args.quick),
                     STACK_BAR))
    at_most = sweep_around_the_stack(args.device, args.quick) if args.only in (None, "plan") else []
    for name, ratio, bar in bars:
        print(f"bar {name}: {ratio:.1f}x >= {bar:g}x: {'met' if ratio >= bar else 'NOT met'}")
    for name, ratio, bar in at_most:
        print(f"bar {name}: {ratio:.2f}x <= {bar:g}x: {'met' if ratio <= bar else 'NOT met'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
