"""Checkpoint files: read weights only, write atomically.

Every file minivar reads goes through ``safe_load`` (``torch.load(weights_only=True)``: a
checkpoint can hold tensors, numbers, strings and containers, never code) and every file it
writes through ``atomic_save`` (a temporary file in the same folder, then a rename), so a crash
leaves either the old file or the new one, never half of one. Used by every stage that reads or
writes a file; it imports nothing of minivar.
"""
from __future__ import annotations

import hashlib
import os
import tempfile

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated or of the wrong kind."""


def safe_load(path, map_location="cpu"):
    """torch.load with weights_only=True and one readable error for missing / corrupt files."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip errors, pickle errors, EOF on truncated files
        raise CheckpointError(f"could not read checkpoint {path} ({type(e).__name__}: {e}); the file is "
                              "corrupt or truncated: download or write it again") from None


def atomic_save(obj, path: str) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
