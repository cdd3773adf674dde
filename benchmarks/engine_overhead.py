"""Engine overhead: nnrun's engine (TensorBoard logging on) against a plain hand-written PyTorch loop
(an nn.Module, torch.optim, loss.backward()).

Both train the same model on the same data for the same steps, in one process, one thread (CPU).
Prints steps/s of each and the ratio nnrun / hand loop. Bar: >= 0.9 on both cases.

    python benchmarks/engine_overhead.py            # full size
    python benchmarks/engine_overhead.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nnrun import data as nn_data  # noqa: E402
from nnrun import engine, losses, models, optim  # noqa: E402
from nnrun.config import TrainConfig, config_dir, parse  # noqa: E402

CASES = {
    # name: (the overrides of `nnrun train` it trains, epochs)
    "xor 2-4-1 full batch": (["model.hidden=[4]"], 3000),
    "spirals 2-32-32-1 batch 64": (["dataset=spirals", "model.hidden=[32,32]", "train.batch_size=64"], 100),
}


def config(overrides: list[str], epochs: int) -> TrainConfig:
    """`nnrun train <overrides>`'s config (conf/ composed by Hydra's compose API): Adam, on the CPU, no images."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir()), job_name="bench"):
        return parse(compose("train", overrides=["exp_name=bench", "device=cpu", "optimizer=adam", "loss=bce",
                                                 "activation=relu", "train.image_every=0", f"train.epochs={epochs}",
                                                 *overrides]))


def hand_loop(cfg: TrainConfig) -> tuple[float, int]:
    """The loop a user would write by hand: model, Adam, shuffled mini-batches; no evaluation, no logging."""
    d = nn_data.load(cfg.dataset)
    loss = losses.LOSSES[cfg.loss]
    model = models.build(d.n_features, cfg.model.hidden, 1, cfg.activation, 0.0, None, cfg.seed)
    torch_optimizer, kwargs = optim.spec(cfg.optimizer)  # torch.optim's own
    opt = torch_optimizer(model.parameters(), **kwargs)
    x, y = d.train.x, d.train.y
    n = len(x)
    bs = cfg.train.batch_size or n
    g = torch.Generator().manual_seed(cfg.seed)
    steps = 0
    start = time.perf_counter()
    for _ in range(cfg.train.epochs):
        order = torch.randperm(n, generator=g) if bs < n else None
        for s in range(0, n, bs):
            xb, yb = (x, y) if order is None else (x[order[s:s + bs]], y[order[s:s + bs]])
            opt.zero_grad(set_to_none=True)
            loss.fn(model(xb), yb).backward()
            opt.step()
            steps += 1
    return time.perf_counter() - start, steps


def nnrun_engine(cfg: TrainConfig) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = engine.train(cfg, Path(tmp), show_progress=True)
        elapsed = time.perf_counter() - start
    n = len(nn_data.load(cfg.dataset).train)
    bs = cfg.train.batch_size or n
    steps = cfg.train.epochs * -(-n // bs)
    assert result.status == "completed", result.status
    return elapsed, steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 2 if args.quick else args.repeats
    # Warm up once: imports (tensorboard, rich) and first-call costs are not the loop's.
    nnrun_engine(config(CASES["xor 2-4-1 full batch"][0], 20))
    ok = True
    print(f"{'case':<28} {'hand loop steps/s':>18} {'nnrun steps/s':>14} {'ratio':>7}")
    for name, (overrides, epochs) in CASES.items():
        cfg = config(overrides, epochs // 10 if args.quick else epochs)
        hand, ours = [], []
        # Interleave the two so machine noise hits both alike; take each one's median rate.
        for _ in range(repeats):
            t, s = hand_loop(cfg)
            hand.append(s / t)
            t, s = nnrun_engine(cfg)
            ours.append(s / t)
        h, o = statistics.median(hand), statistics.median(ours)
        ratio = o / h
        ok &= ratio >= 0.9
        print(f"{name:<28} {h:>18,.0f} {o:>14,.0f} {ratio:>7.2f}")
    print("bar: nnrun >= 0.9x the hand loop:", "met" if ok else "NOT met")
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
