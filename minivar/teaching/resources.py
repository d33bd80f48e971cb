"""Where a notebook finds the course's files: the demo weights, the study results, the configs.

A notebook may be opened from ``notebooks/``, from ``notebooks/student/``, from a handout folder
(``python -m minivar handout``) or from any folder of a JupyterHub where minivar is installed, so
it never spells a path like ``../weights``. ``path("weights/digits16")`` looks in, in order:

1. the folder named by the environment variable ``MINIVAR_HOME``;
2. the current folder and every folder above it;
3. the source checkout minivar is imported from (an editable install, ``pip install -e .``);

and, when none of them holds the file, raises ``FileNotFoundError`` that says what to copy where.
"""
from __future__ import annotations

import os

HOME_VARIABLE = "MINIVAR_HOME"
# what a course folder holds (copied by `python -m minivar handout`)
COURSE_FILES = ("weights/digits16", "experiments/results", "configs/imagenet")


def candidate_roots() -> list[str]:
    """The folders searched, in order, without duplicates."""
    roots = []
    home = os.environ.get(HOME_VARIABLE, "").strip()
    if home:
        roots.append(os.path.abspath(os.path.expanduser(home)))
    here = os.path.abspath(os.getcwd())
    while True:
        roots.append(here)
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    roots.append(package)
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def find(relative: str) -> str | None:
    """The first ``root/relative`` that exists, or None."""
    for root in candidate_roots():
        p = os.path.join(root, relative)
        if os.path.exists(p):
            return p
    return None


def path(relative: str) -> str:
    """The course file or folder ``relative`` (e.g. ``"weights/digits16"``); FileNotFoundError if absent."""
    p = find(relative)
    if p is None:
        raise FileNotFoundError(
            f"minivar cannot find '{relative}': it looked in ${HOME_VARIABLE}, in this folder and the folders "
            f"above it, and next to the installed package. Copy '{relative}' from the minivar repository (or a "
            f"handout made by `python -m minivar handout`) into this folder, or set {HOME_VARIABLE} to the "
            "folder that holds it")
    return p


def course_root() -> str:
    """The folder that holds the demo weights (a checkout or a handout), else the current folder."""
    p = find(COURSE_FILES[0])
    return os.path.dirname(os.path.dirname(p)) if p else os.path.abspath(os.getcwd())


def work_dir(name: str) -> str:
    """A folder for a notebook's own output files: ``<course root>/runs/<name>`` (not committed)."""
    return os.path.join(course_root(), "runs", name)
