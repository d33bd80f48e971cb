"""Run folders as the commands own them: what kind of run wrote a folder and which files are its
own, what ``--overwrite`` may replace, and the lock every writer holds.

A folder's config.json records ``kind`` (train, train-tokenizer, demo) and ``files``, the names the
run writes. ``--overwrite`` replaces only those, and only for a run of the same kind; a command
never deletes a file it did not write. Every writer holds ``checkpoints.folder_lock`` on its
folder while it runs (under torchrun only rank 0), so a second writer stops with an error naming
the first.
"""
from __future__ import annotations

import contextlib
import os
import shutil

from .. import config
from ..checkpoints import LOCK_FILE, TMP_PREFIX, clean_temporaries, folder_lock
from .sources import RunError

# what each kind of run writes into its folder
OWN_FILES = {
    "train": ("config.json", "metrics.jsonl", "model.pt", "tokens.pt", "ckpt", "samples", "eval.json"),
    "train-tokenizer": ("config.json", "metrics.jsonl", "tokenizer.pt", "metrics.json", "reconstructions.png",
                        "ckpt"),
    "demo": ("config.json", "tokenizer", "mvar", "samples.png", "classifier_digits16.pt"),
}


def stored_kind(folder: str) -> tuple[str | None, tuple]:
    """(kind, own files) recorded in ``folder/config.json``; (None, ()) without one."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        return None, ()
    stored = config.read_json(path)
    kind = stored.get("kind")
    return kind, tuple(stored.get("files") or OWN_FILES.get(kind, ()))


def prepare_run_dir(out: str, kind: str, overwrite: bool = False, resume: bool = False) -> None:
    """Make ``out`` ready for a run of ``kind``: new, continued (``resume``) or replaced
    (``overwrite``: only the files of a run of the same kind). Raises RunError, touching nothing,
    when the folder holds something else."""
    prev, files = stored_kind(out)
    mine = [f for f in OWN_FILES[kind] if os.path.exists(os.path.join(out, f))]
    if prev is None and kind == "demo" and _demo_of_earlier_versions(out):
        prev, files = "demo", OWN_FILES["demo"]
    if prev is None:
        if resume:
            raise RunError(f"nothing to resume in {out}: it holds no run (no config.json); start the run "
                           "without --resume")
        if mine:
            raise RunError(f"{out} holds {', '.join(mine)} but no run of minivar's (no config.json); choose another "
                           "--out, or move those files away")
    elif prev != kind:
        raise RunError(f"{out} holds a {prev} run, not a {kind} run; choose another --out")
    elif not (overwrite or resume):
        raise RunError(f"{out} already holds a {kind} run; pass --resume to continue it, --overwrite to replace it, "
                       "or choose another --out")
    elif overwrite and not resume:
        for name in set(files) & set(OWN_FILES[kind]):
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out, exist_ok=True)


def _demo_of_earlier_versions(out: str) -> bool:
    """A demo folder written before folders recorded their kind: its two runs and its grid."""
    return (stored_kind(os.path.join(out, "tokenizer"))[0] == "train-tokenizer"
            and stored_kind(os.path.join(out, "mvar"))[0] == "train"
            and set(os.listdir(out)) <= set(OWN_FILES["demo"]) | {LOCK_FILE})


def run_record(kind: str, **fields) -> dict:
    """The config.json of a run folder: its kind, the files it owns, and its settings."""
    return {"kind": kind, "files": list(OWN_FILES[kind]), **fields}


@contextlib.contextmanager
def writing(folder: str | None, what: str = ""):
    """Hold the folder's lock (rank 0 of a torchrun job only; nothing for None) and clear what a
    killed writer left behind, for the block."""
    if folder is None or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    new = not os.path.exists(folder)
    try:
        with folder_lock(folder, what):
            for sub in (folder, os.path.join(folder, "ckpt")):
                for name in clean_temporaries(sub):
                    print(f"removed {os.path.join(sub, name)}, left by a writer that was stopped")
            yield
    except BaseException:
        if new and _only_lock_left(folder):  # a failed first start leaves no trace
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _only_lock_left(folder: str) -> bool:
    return os.path.isdir(folder) and all(n == LOCK_FILE or n.startswith(TMP_PREFIX) for n in os.listdir(folder))
