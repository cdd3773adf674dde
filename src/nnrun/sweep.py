"""The multirun side of `nnrun train -m`: a Hydra callback that sums up a sweep when it ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """At the end of a sweep, one table: how many jobs completed, stopped early, diverged or failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nnrun.console import print_sweep_summary
        from nnrun.metrics import read_metrics

        sweep_dir = Path(config.hydra.sweep.dir)
        job_dirs = sorted({p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")})
        statuses = []
        for job_dir in job_dirs:
            found = read_metrics(job_dir)
            # A job with no metrics.json never trained (bad config) or was killed: count it failed.
            statuses.append(found.get("status", "failed") if found else "failed")
        print_sweep_summary(str(sweep_dir), statuses, len(job_dirs))
