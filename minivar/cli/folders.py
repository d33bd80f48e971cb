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
import glob
import os

from .. import config
from ..checkpoints import LOCK_FILE, clean_temporaries, folder_lock, is_locked
from .sources import RunError

# what each kind of run writes into its folder; in its own subfolders only files matching OWN_INSIDE
OWN_FILES = {
    "train": ("config.json", "metrics.jsonl", "model.pt", "tokens.pt", "ckpt", "samples", "eval.json"),
    "train-tokenizer": ("config.json", "metrics.jsonl", "tokenizer.pt", "metrics.json", "reconstructions.png",
                        "ckpt"),
    "demo": ("config.json", "tokenizer", "mvar", "samples.png", "classifier_digits16.pt"),
}
OWN_INSIDE = {"ckpt": ("step_*.pt",), "samples": ("step_*.png", "sample_cfg*_seed*.png")}
DEMO_RUNS = {"tokenizer": "train-tokenizer", "mvar": "train"}  # the demo's sub-runs and their kinds


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
    mine = [f for f in OWN_FILES[kind] if os.path.lexists(os.path.join(out, f))]
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
        remove_own_files(out, kind, set(files) & set(OWN_FILES[kind]))
    os.makedirs(out, exist_ok=True)


def remove_own_files(out: str, kind: str, names) -> None:
    """Delete what a run of ``kind`` wrote in ``out``: its files, the matching files of its own
    subfolders (a subfolder goes only when that leaves it empty), and, for a demo, its sub-runs in the
    same way. A sub-run that another command holds is refused first."""
    if kind == "demo":
        busy = [sub for sub in DEMO_RUNS if is_locked(os.path.join(out, sub))]
        if busy:
            raise RunError(f"{', '.join(os.path.join(out, b) for b in busy)} is in use by another command; wait for "
                           "it to finish or stop it")
    for name in names:
        path = os.path.join(out, name)
        if kind == "demo" and name in DEMO_RUNS:
            if os.path.isdir(path) and not os.path.islink(path):
                remove_own_files(path, DEMO_RUNS[name], OWN_FILES[DEMO_RUNS[name]])
                _rmdir_if_empty(path)
        elif name in OWN_INSIDE:
            for pattern in OWN_INSIDE[name]:
                for f in glob.glob(os.path.join(glob.escape(path), pattern)):
                    os.remove(f)
            _rmdir_if_empty(path)
        elif os.path.isfile(path) or os.path.islink(path):
            os.remove(path)


def _rmdir_if_empty(path: str) -> None:
    with contextlib.suppress(OSError):  # not empty, a link, or gone
        os.rmdir(path)


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
    """Hold the folder's lock (rank 0 of a torchrun job only; nothing for None) for the block, after
    clearing the temporaries a killed writer left in a run folder. When the block fails, the folders
    this call created are removed again if nothing but the lock was put in them."""
    if folder is None or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    created = []  # the folders this call makes, outermost first
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        created.insert(0, path)
        path = os.path.dirname(path)
    for p in created:
        with contextlib.suppress(FileExistsError):  # made by someone else meanwhile: not ours
            os.mkdir(p)
            continue
        created = created[:created.index(p)]
        break
    try:
        with folder_lock(folder, what):
            if stored_kind(folder)[0] is not None:
                for sub in (folder, os.path.join(folder, "ckpt")):
                    for name in clean_temporaries(sub):
                        print(f"removed {os.path.join(sub, name)}, left by a writer that was stopped")
            yield
    except BaseException:
        for p in reversed(created):  # a failed first start leaves no trace (rmdir: only empty ones)
            _rmdir_if_empty(p)
        raise
