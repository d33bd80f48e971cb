"""Checkpoint files: read weights only, write atomically.

Every file minivar reads goes through ``safe_load`` (``torch.load(weights_only=True)``: a
checkpoint can hold tensors, numbers, strings and containers, never code) and every file it
writes through ``atomic_save`` (a temporary file in the same folder, then a rename), so a crash
leaves either the old file or the new one, never half of one. ``save_pretrained`` /
``load_pretrained`` write and read the config.json + model.safetensors folders. Used by every stage
that reads or writes a file; it imports nothing of minivar but its version string.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import tempfile
import time

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None


TMP_PREFIX, LOCK_FILE = ".tmp-", ".lock"


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


class DiskFullError(OSError):
    """The device ran out of space while minivar wrote a file; the earlier files are intact."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; free some space, "
                         "then run the command again (with --resume where it has one)", path)

    def __str__(self) -> str:
        return self.strerror


def _is_disk_full(e: BaseException) -> bool:
    # torch.save reports a full disk as a RuntimeError from its zip writer
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "file write failed" in str(e)


def fsync_folder(folder: str) -> None:
    """Make a rename inside ``folder`` survive a power loss (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write) -> None:
    """``write(tmp_path)``, fsync, rename to ``path``, fsync the folder: a crash or a power loss leaves
    the old file or the new one, never half of one. The file follows the umask like any other; a
    full disk raises DiskFullError and leaves ``path`` as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
        fsync_folder(folder)
    except (OSError, RuntimeError) as e:
        if _is_disk_full(e):
            raise DiskFullError(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj, path: str) -> None:
    """torch.save through ``atomic_write``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_json(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def clean_temporaries(folder: str) -> list[str]:
    """Remove the temporary files a killed writer left in ``folder`` (call with the folder locked)."""
    gone = []
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        path = os.path.join(folder, name)
        if name.startswith(TMP_PREFIX) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            gone.append(name)
    return gone


# ---------------------------------------------------------------------- locks
class FolderLocked(RuntimeError):
    """Another process writes into the folder."""


@contextlib.contextmanager
def folder_lock(folder: str, what: str):
    """An OS-level lock on ``folder`` (``flock`` on ``folder/.lock``), held while the block runs and
    released when it ends or the process dies. A second writer gets FolderLocked naming the holder.
    Such locks are not reliable on some network file systems."""
    os.makedirs(folder, exist_ok=True)
    if fcntl is None:
        yield
        return
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderLocked(f"{folder} is in use by {holder}; wait for it to finish or stop it, or choose "
                               "another folder") from None
        try:  # the holder before us may have removed the file after we opened it: then take the new one
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({what}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)  # still locked: nobody else can hold this file now
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def is_locked(folder: str) -> bool:
    """Whether a process holds ``folder_lock`` on ``folder`` now."""
    path = os.path.join(folder, LOCK_FILE)
    if fcntl is None or not os.path.isfile(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


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
    atomic_write(os.path.join(folder, WEIGHTS_FILE), lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_json(meta, os.path.join(folder, CONFIG_FILE))


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
