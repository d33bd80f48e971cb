"""Checkpoint files: read weights only, write atomically.

Every file minivar reads goes through ``safe_load`` (``torch.load(weights_only=True)``: a
checkpoint can hold tensors, numbers, strings and containers, never code) and every file it
writes through ``atomic_save`` (a temporary file in the same folder, then a rename), so a crash
leaves either the old file or the new one, never half of one. ``save_pretrained`` /
``load_pretrained`` write and read the config.json + model.safetensors folders. Used by every stage
that reads or writes a file; it imports nothing of minivar but its version string.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated or of the wrong kind."""


def safe_load(path, map_location="cpu"):
    """torch.load with weights_only=True and one readable error for missing / corrupt files."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".pt", ".pth")))
        raise CheckpointError(f"{path} is a folder, not a checkpoint file or a save_pretrained folder"
                              + (f"; it holds {', '.join(files)}" if files else ""))
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


# ---------------------------------------------------------------------- save_pretrained folders
# The layout researchers know from Hugging Face: a folder with config.json (the config's fields,
# plus "model_type" and a few minivar keys) and model.safetensors (tensors only: the format
# cannot carry code). Local folders only; nothing is downloaded.
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_pretrained(path: str) -> bool:
    """A folder with a config.json and a model.safetensors (a run folder has a config.json too)."""
    return all(os.path.isfile(os.path.join(path, f)) for f in (CONFIG_FILE, WEIGHTS_FILE))


def save_pretrained(folder: str, model_type: str, config: dict, state_dict: dict, extra: dict | None = None) -> None:
    """Write ``folder/config.json`` ({model_type, **config, **extra}) and ``folder/model.safetensors``,
    each through a temporary file and a rename."""
    from safetensors.torch import save_file
    from . import __version__
    os.makedirs(folder, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    floats = [str(v.dtype).replace("torch.", "") for v in tensors.values() if v.is_floating_point()]
    meta = {"model_type": model_type, **config, **(extra or {}),
            "torch_dtype": max(set(floats), key=floats.count) if floats else None,
            "minivar_version": __version__}
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{WEIGHTS_FILE}")
    try:
        save_file(tensors, tmp, metadata={"format": "pt"})
        os.chmod(tmp, 0o666 & ~_umask())  # readable as the user's other files are
        os.replace(tmp, os.path.join(folder, WEIGHTS_FILE))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{CONFIG_FILE}")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(folder, CONFIG_FILE))


def load_pretrained(folder: str, model_type: str) -> tuple[dict, dict]:
    """(config.json as a dict without the keys ``save_pretrained`` added, state dict) of a folder
    written by ``save_pretrained`` for ``model_type``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    cfg_path, w_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, WEIGHTS_FILE)
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise CheckpointError(f"{folder} is not a save_pretrained folder: {os.path.basename(p)} is missing")
    try:
        with open(cfg_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("model_type") != model_type:
        got = meta.get("model_type") if isinstance(meta, dict) else None
        raise CheckpointError(f"{folder} holds a {got!r}, not a {model_type!r}")
    try:
        state_dict = load_file(w_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"could not read {w_path} ({e}); the file is corrupt or truncated") from None
    for k in ("model_type", "torch_dtype", "minivar_version"):
        meta.pop(k, None)
    return meta, state_dict


def load_weights(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """``module.load_state_dict`` (strict; floats cast to the module's dtype), a mismatch reported
    as a CheckpointError naming ``source``."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {source} do not fit its config: {str(e).splitlines()[0]}") from None
