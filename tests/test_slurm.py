"""`hydra/launcher=submitit_slurm` on a real SLURM cluster (the one-node cluster `.ci/slurm-cluster` starts).

One sweep, run once for the module, goes through sbatch as a job array of four jobs: one that finishes, one that
runs into its time limit (`timeout_min=1`) and two whose data file is missing. The tests check that each job ran
as a SLURM job, left what the basic launcher leaves, and that the failed and the timed-out jobs are kept and the
sweep still ends with its summary. Where no cluster is up they skip, except under CI (CI=true), where a missing
cluster is a failure.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import (PARTITION, needs_extra, only_sweep_dir, read_metrics, require_cluster, run_dirs, run_nnrun,
                      summary_count)

# One sweep for the module, on one xdist worker (addopts: --dist loadgroup): no other worker waits for it.
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm_sweep")]


@dataclass
class Sweep:
    """What the sweep printed, and where it ran (its cwd)."""

    cwd: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def dir(self) -> Path:
        return only_sweep_dir(self.cwd, "slurm")

    @property
    def jobs(self) -> list[Path]:
        """In the sweep's order: dataset.path=good.csv,missing.csv x train.epochs=20,100000000."""
        return run_dirs(self.dir)

    @property
    def finished(self) -> Path:
        return self.jobs[0]

    @property
    def timed_out(self) -> Path:
        return self.jobs[1]

    @property
    def missing(self) -> list[Path]:
        return self.jobs[2:]

    def log(self, job_dir: Path, stream: str) -> str:
        """What the job printed, as submitit's srun line saves it: .submitit/<id>/<id>_0_log.<out|err>."""
        job_id = job_of(job_dir)["id"]
        return (self.dir / ".submitit" / job_id / f"{job_id}_0_log.{stream}").read_text()


def job_of(job_dir: Path) -> dict:
    """The job's own hydra.job section: its num and, under submitit, its cluster job id."""
    return yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]


def run_sweep(cwd: Path) -> Sweep:
    cwd.mkdir(parents=True, exist_ok=True)
    rows = "x1,x2,y\n" + "".join(f"{a},{b},{a ^ b}\n" for a in (0, 1) for b in (0, 1)) * 3
    (cwd / "good.csv").write_text(rows)
    # SLURM sends SIGUSR2 signal_delay_s before the time limit (up to 30 s sooner: slurmctld checks limits twice
    # a minute), so the long job is cut 25-55 s after it starts, well inside training. Hydra's default of 120 s
    # would be before the job has begun.
    proc = run_nnrun(["train", "-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}",
                      "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5", "dataset=csv",
                      "model.hidden=[4]", "train.log_every=1000", "exp_name=slurm",
                      # The missing file is read from the job's own dir (hydra.job.chdir): found only as it starts.
                      "hydra.job.chdir=true", f"dataset.path={cwd / 'good.csv'},missing.csv",
                      "train.epochs=20,100000000"], cwd=cwd, timeout=300)
    return Sweep(cwd, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Sweep:
    needs_extra("hydra_plugins.hydra_submitit_launcher")
    require_cluster()
    return run_sweep(tmp_path_factory.mktemp("slurm"))


def test_a_slurm_sweep_runs_each_job_as_a_task_of_one_sbatch_job_array(sweep):
    (script,) = (sweep.dir / ".submitit").glob("*/*_submission.sh")
    array_id = script.parent.name
    assert f"#SBATCH --partition={PARTITION}" in script.read_text()
    assert "#SBATCH --array=0-3" in script.read_text()
    # submitit sets hydra.job.id from the SLURM_ARRAY_* variables, which only a job that SLURM started has.
    jobs = run_dirs(sweep.dir)
    assert [(job_of(j)["num"], job_of(j)["id"]) for j in jobs] == [(n, f"{array_id}_{n}") for n in range(4)]
    for job in jobs:
        assert f"JobEnvironment(job_id={job_of(job)['id']}," in sweep.log(job, "out")


def test_a_slurm_job_leaves_what_a_job_of_the_basic_launcher_leaves(sweep):
    assert [d.name for d in run_dirs(sweep.dir)] == [
        f"{n}_dataset=csv,exp_name=slurm,model.hidden=[4],train.epochs={epochs},train.log_every=1000"
        for n, epochs in enumerate([20, 100000000] * 2)]
    job = sweep.finished
    assert sorted(p.name for p in job.iterdir() if not p.name.startswith("events.out.tfevents.")) == [
        ".hydra", "checkpoint.pt", "metrics.json", "train.log"]
    assert len(list(job.glob("events.out.tfevents.*"))) == 1
    metrics = read_metrics(job)
    assert metrics["status"] == "completed" and metrics["epochs_run"] == 20
    assert metrics["final"]["accuracy/train"] is not None


def test_a_slurm_job_whose_data_file_is_missing_fails_alone(sweep):
    for job in sweep.missing:
        assert read_metrics(job)["status"] == "failed" and read_metrics(job)["epochs_run"] == 0
        # The path as it was typed: the job runs where the sweep was started (no hydra.job.chdir).
        assert "/missing.csv: no such file" in sweep.log(job, "err")
    assert summary_count(sweep.stdout, "completed") == 1


def test_a_slurm_job_past_timeout_min_keeps_its_results_and_the_sweep_ends(sweep):
    """SIGUSR2, SLURM's warning ahead of the time limit, stops training (the engine's stop_signals): the run is
    saved `interrupted` and the job returns, so submitit writes its result file and the sweep ends with its
    summary."""
    assert "sweep: 4 jobs" in sweep.stdout, sweep.stderr
    assert "nnrun: interrupted by SIGUSR2; results saved in" in sweep.log(sweep.timed_out, "err")
    cut = read_metrics(sweep.timed_out)
    assert 20 < cut["epochs_run"] < 100_000_000
    assert (sweep.timed_out / "checkpoint.pt").exists()
    assert cut["status"] == "interrupted"
    assert summary_count(sweep.stdout, "interrupted") == 1
    assert summary_count(sweep.stdout, "failed") == 2


def test_nnrun_report_lists_every_job_of_a_slurm_sweep(sweep):
    shown = run_nnrun(["report", str(sweep.dir)], cwd=sweep.cwd)
    assert shown.returncode == 0, shown.stderr
    assert "4 runs" in shown.stdout
    with (sweep.dir / "report.csv").open(newline="") as handle:
        statuses = {Path(row["run_dir"]).name: row["status"] for row in csv.DictReader(handle)}
    assert statuses == {d.name: (read_metrics(d)["status"] if (d / "metrics.json").exists() else "unfinished")
                        for d in run_dirs(sweep.dir)}


def test_sacct_knows_each_job_so_submitit_reads_their_states_and_says_nothing_on_the_terminal(sweep):
    """submitit asks SLURM's accounting (sacct) for its jobs' states; the cluster keeps it (slurmdbd), so sacct
    answers for every job of the array and submitit has nothing to warn about in the launching process."""
    (script,) = (sweep.dir / ".submitit").glob("*/*_submission.sh")
    array_id = script.parent.name
    listed = subprocess.run(["sacct", "--noheader", "--allocations", "--parsable2", "--format=JobID,State",
                             f"--jobs={array_id}"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    states = dict(line.split("|") for line in listed.stdout.splitlines())
    assert set(states) == {f"{array_id}_{n}" for n in range(4)}
    assert states[job_of(sweep.finished)["id"]] == "COMPLETED"
    assert "sacct" not in sweep.stdout and sweep.stderr.strip() == ""
    # Each job's own log keeps all that submitit says.
    assert "submitit INFO" in sweep.log(sweep.finished, "out")
