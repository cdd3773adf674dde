"""Where the launching process of a sweep spends its time, per job: Hydra's part and nnrun's.

    python benchmarks/sweep_profile.py                 # 256 XOR jobs x 500 epochs, hydra/launcher=vectorized
    python benchmarks/sweep_profile.py --jobs 64 --epochs 100
    python benchmarks/sweep_profile.py hydra/sweeper=basic     # any more overrides, as on nnrun's command line

One `python -m cProfile -m nnrun train -m ...` process; its profile is read back with pstats and each phase's
cumulative time divided by the jobs: checking each job (nnrun's sweeper: building its config, Hydra's
composition among it, and nnrun's check), setting each up (Hydra's run_job: its config copies, `.hydra/` files,
logging and callbacks, and within it nnrun's set_up), training the stacks, and the rest (start-up, the summary).
cProfile slows Python code several times over, so the milliseconds are the profile's; their shares are what count.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LRS = [f"{10 ** (-3 + 2 * i / 15):.6g}" for i in range(16)]

RUN_JOB = ("hydra/core/utils.py", "run_job")
# (phase, function (file suffix, name), called from (file suffix, name) or None = from anywhere): its cumulative
# time. Indented phases are parts of the phase above them.
PHASES = [
    ("checking each job (nnrun's sweeper)", ("sweeper.py", "check"), None),
    ("  building its config (SweepConfigs)", ("sweep_configs.py", "load"), None),
    ("    of which Hydra's composition", ("config_loader_impl.py", "load_sweep_config"), ("sweep_configs.py", "load")),
    ("  nnrun's check (schema, data)", ("app.py", "check"), None),
    ("checking each job (Hydra's basic sweeper)", ("hydra/plugins/sweeper.py", "validate_batch_is_legal"), None),
    ("setting each job up: Hydra's run_job", RUN_JOB, None),
    ("  its copies of the config (deepcopy)", ("copy.py", "deepcopy"), RUN_JOB),
    ("  HydraConfig.set_config", ("hydra_config.py", "set_config"), RUN_JOB),
    ("  .hydra/*.yaml (_save_config)", ("hydra/core/utils.py", "_save_config"), RUN_JOB),
    ("  the job's logging (configure_log)", ("hydra/core/utils.py", "configure_log"), RUN_JOB),
    ("  nnrun's set_up (its engine.Job)", ("app.py", "set_up"), RUN_JOB),
    ("training the stacks (engine.train_jobs)", ("engine.py", "train_jobs"), None),
]


def cumulative(stats: pstats.Stats, where: tuple[str, str], caller: tuple[str, str] | None) -> float:
    """Seconds spent in a function (by file suffix and name), in its calls from `caller` (None: from anywhere)."""
    total = 0.0
    for (file, _, name), (_, _, _, ct, callers) in stats.stats.items():  # type: ignore[attr-defined]
        if not (file.endswith(where[0]) and name == where[1]):
            continue
        if caller is None:
            total += ct
        else:
            total += sum(c[3] for (f, _, n), c in callers.items() if f.endswith(caller[0]) and n == caller[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=256, help="a multiple of 16 (16 lrs x jobs/16 seeds)")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("overrides", nargs="*", help="more overrides (hydra/sweeper=basic, ...)")
    args = parser.parse_args()
    sweep = ["hydra/launcher=vectorized", "dataset=xor", "model.hidden=[4]", "device=cpu", "threads=1",
             f"train.epochs={args.epochs}", f"optimizer.lr={','.join(LRS)}", f"seed=range({args.jobs // 16})",
             *args.overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile.out"
        done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "nnrun", "train", "-m",
                               *sweep], cwd=tmp, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
        stats = pstats.Stats(str(out))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"{args.jobs} XOR jobs x {args.epochs} epochs, {' '.join(args.overrides) or 'nnrun sweeper'}: "
          f"{total:.1f} s under cProfile")
    print(f"{'phase':<44} {'ms per job':>11} {'share':>7}")
    accounted = 0.0
    for name, where, caller in PHASES:
        seconds = cumulative(stats, where, caller)
        if not name.startswith(" "):
            accounted += seconds
        if seconds:
            print(f"{name:<44} {seconds / args.jobs * 1000:>11.1f} {seconds / total:>7.1%}")
    print(f"{'the rest (start-up, planning, summary)':<44} {(total - accounted) / args.jobs * 1000:>11.1f} "
          f"{(total - accounted) / total:>7.1%}")


if __name__ == "__main__":
    main()
