"""Resumable training checkpoints, written atomically.

A checkpoint is one torch file holding everything a run needs to continue as if it had never
stopped: weights, optimiser state, random generator state, epoch, early-stopping state, the
best weights so far, the hyperparameters and the id maps. It is replaced atomically, so a run
killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from shortrec.io import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.pt"


def checkpoint_path(directory: str | Path) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `directory`/checkpoint.pt; the old file survives any crash."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = checkpoint_path(directory)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_checkpoint(directory: str | Path) -> dict[str, Any] | None:
    """The saved state, or None when `directory` holds no checkpoint."""
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    try:
        # Our checkpoints hold numpy arrays and plain dicts besides tensors.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable shortrec checkpoint: {error}") from error


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume a run whose architecture-defining settings differ."""
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"checkpoint {path} was written with other settings ({details}); "
            "use another checkpoint_dir or delete it"
        )
