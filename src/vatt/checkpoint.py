"""Reading checkpoint files safely, with errors that name the file and the fix.

Plain PyTorch (no Lightning): the training entry point uses it to read a run's
settings before resuming, and downstream code uses it to load weights. Every
load is ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def _others(path: Path) -> str:
    siblings = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path) if path.parent.is_dir() else []
    if not siblings:
        return "no other checkpoint is in that folder"
    return f"other checkpoints in {path.parent}: {', '.join(siblings[:5])}"


def read_checkpoint(path: str | Path, mmap: bool = True) -> dict[str, Any]:
    """Load a checkpoint file on the CPU with ``weights_only=True``.

    ``mmap=True`` maps tensors instead of reading them, so looking at a large
    checkpoint's metadata costs little memory. A missing, truncated or corrupt file
    raises ``FileNotFoundError`` / ``CheckpointError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist ({_others(path)})")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (the run was probably killed while writing it); {_others(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only" in str(e):
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that are refused when loading with weights_only=True "
                f"({str(e).splitlines()[0]}); save plain containers and tensors only"
            ) from e
        raise CheckpointError(f"checkpoint {path} is corrupt ({str(e).splitlines()[0]}); {_others(path)}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({str(e).splitlines()[0]}), e.g. the run was killed while "
            f"writing it; use another checkpoint ({_others(path)})"
        ) from e


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file, read in 4 MB pieces (checkpoints can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
