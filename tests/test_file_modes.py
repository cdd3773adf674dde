"""Result files follow the user's umask, as files made with open() do: a teammate can read them where
the umask lets them."""

from __future__ import annotations

import os
import stat

import pytest

from nnrun import checkpoint, metrics, report


@pytest.fixture
def umask():
    """Set the process umask for one test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_metrics_report_and_checkpoint_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    written = [
        metrics.write_metrics(tmp_path, {"status": "completed"}),
        checkpoint.save(tmp_path, {"model": {}, "spec": {}}),
    ]
    report.write_csv(tmp_path / "report.csv", [], [], "loss/val")
    written.append(tmp_path / "report.csv")
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name
    # Rewriting replaces the file whole, with the mode of the new one; no temp file is left behind.
    metrics.write_metrics(tmp_path, {"status": "diverged"})
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.json", "report.csv"]
