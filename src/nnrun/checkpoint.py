"""checkpoint.pt: weights, optimizer state, epoch and what `predict` and resume need. Saved atomically; loaded with
`torch.load(weights_only=True)`, which refuses pickled code: a checkpoint from elsewhere cannot run anything."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from nnrun.config import first_line
from nnrun.metrics import atomic_write

CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not nnrun's."""


def save(run_dir: Path, payload: dict[str, Any]) -> Path:
    import torch  # heavy: nnrun.sweep reads CHECKPOINT_FILE from here

    path = Path(run_dir) / CHECKPOINT_FILE
    atomic_write(path, lambda f: torch.save(payload, f), mode="wb")
    return path


def find(path: Path) -> Path:
    """The checkpoint file `path` means: the file itself, a run dir's checkpoint.pt, or for an experiment dir
    (experiments/<exp>) its newest run's: the newest under runs/, else the newest sweep job under multirun/. Its
    runs/ or multirun/ alone: the newest run there."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run dir")
    below = {"runs": "*/", "multirun": "*/*/"}.get(path.name) if path.parent.parent.name == "experiments" else None
    for pattern in ("", "runs/*/", "multirun/*/*/") if below is None else ("", below):
        found = sorted(path.glob(pattern + CHECKPOINT_FILE), key=lambda p: (p.stat().st_mtime, str(p)))
        if found:
            return found[-1]
    raise CheckpointError(f"{path}: no run here: no {CHECKPOINT_FILE}, and no run with one under runs/ or "
                          f"multirun/; give a run dir, a sweep dir or an experiment dir (experiments/<exp>)")


def load(path: Path) -> dict[str, Any]:
    import torch

    path = Path(path)
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint (is this a run dir of nnrun?)")
    if not zipfile.is_zipfile(path):  # what torch.save writes; a text or cut-short file would trace back in torch
        raise CheckpointError(f"{path}: not a checkpoint (torch.save's zip archive), nor a run dir holding one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip() or "unsafe content").splitlines()[0]
        raise CheckpointError(f"{path}: refused to load, it holds more than weights ({first})") from None
    except Exception as exc:  # a damaged archive fails in torch in many ways; each means the same to the user
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict) or "model" not in payload or "spec" not in payload:
        raise CheckpointError(f"{path}: not an nnrun checkpoint")
    return payload
