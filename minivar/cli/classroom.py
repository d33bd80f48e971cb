"""The classroom verbs: ``handout`` (a student-only course folder) and ``grade`` (a class's submissions)."""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import time

from ..teaching import grading, resources
from . import options

HANDOUT_README = """\
# minivar course folder

Open the notebooks in `notebooks/` (Jupyter or JupyterLab) with minivar installed
(`pip install -e PATH/TO/minivar`, or the course's JupyterHub). Each exercise cell ends in
`raise NotImplementedError`: replace it with your code and run the check cell below it.

The other folders hold what the notebooks read: `weights/digits16` (the demo models),
`experiments/results` (the study of notebook 09), `configs/imagenet` (notebook 10). Keep them next
to `notebooks/`; a notebook opened elsewhere finds them through the environment variable
MINIVAR_HOME=PATH/TO/THIS/FOLDER.

Hand in the notebooks you were asked for, with their file names unchanged.
"""


def notebook_numbers(text: str) -> str:
    text = text.strip()
    if not (text.isdigit() and len(text) <= 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not a notebook number such as 01 or 4")
    return text.zfill(2)


def grade_parser(sub, verb) -> None:
    g = verb(sub, "grade", "score a class's completed notebooks with the teacher's checkers (CSV + JSON)",
             "minivar grade submitted/* --out grades.csv --notebooks 01 04",
             description="Score a class's completed notebooks. Each SUBMISSION is a student's folder (the "
             "student is the folder's name; their NN_*.ipynb anywhere below it) or one .ipynb file. Only the "
             "answer cells are taken from a submission; they run in a fresh process with the key's set-up "
             "cell, and the key's checkers score them. Writes OUT (a row per student and exercise, with the "
             "checker's message as feedback) and OUT with .json (totals per student and notebook).")
    g.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="a student's folder or notebook file")
    g.add_argument("--out", required=True, type=options.output_file, help="the CSV file (OUT.json is written too)")
    g.add_argument("--key", help="the teacher's notebooks (NN_*.py with solutions) [default: notebooks/ of the "
                   "minivar checkout]")
    g.add_argument("--notebooks", nargs="+", type=notebook_numbers, metavar="NN",
                   help="grade these notebooks only [default: every notebook some submission holds]")
    g.add_argument("--time-limit", type=options.number(float, above=0), default=60.0, metavar="SECONDS",
                   help="per exercise: running the answer cell and its checker [default: 60]")
    g.add_argument("--memory-gb", type=options.number(float, at_least=0), default=8.0, metavar="FLOAT",
                   help="address-space limit of each answer's process, 0: none [default: 8]")
    g.add_argument("--jobs", type=options.number(int, at_least=1), default=1, metavar="INT",
                   help="submissions graded at once [default: 1]")
    g.add_argument("--overwrite", action="store_true", help="replace OUT and OUT.json if they exist")
    g.add_argument("--quiet", action="store_true", help="no line per graded notebook")


def handout_parser(sub, verb) -> None:
    h = verb(sub, "handout", "write a student-only course folder: the student copies and the files they read",
             "minivar handout --out course_2027",
             description="Write a course folder for students: notebooks/ (the student copies, no solutions), "
             "weights/digits16, experiments/results and configs/imagenet, and a README. The solutions, the "
             "tests and the package's source stay out.")
    h.add_argument("--out", required=True, type=options.output_folder, help="a new (or empty) folder")
    h.add_argument("--notebooks", nargs="+", type=notebook_numbers, metavar="NN",
                   help="only these notebooks [default: all]")


def json_path(csv_path: str) -> str:
    root, ext = os.path.splitext(csv_path)
    return (root if ext.lower() == ".csv" else csv_path) + ".json"


def run_grade(args) -> list:
    out_json = json_path(args.out)
    existing = [p for p in (args.out, out_json) if os.path.exists(p)]
    if existing and not args.overwrite:
        raise grading.GradeError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace")
    key_dir = args.key or grading.default_key()
    key = grading.read_key(key_dir)
    subs = grading.find_submissions(args.submissions)
    if args.notebooks:
        unknown = [n for n in args.notebooks if n not in key]
        if unknown:
            raise grading.GradeError(f"--notebooks {' '.join(unknown)}: the key has no graded notebook with that "
                                     f"number (it has {' '.join(sorted(key))})")
        numbers = sorted(set(args.notebooks))
    else:
        numbers = sorted({n for s in subs for n in s.notebooks if n in key})
        if not numbers:
            raise grading.GradeError("no submission holds a notebook of the key (files named NN_*.ipynb, e.g. "
                                     "01_scales_and_tokens.ipynb)")
    t0 = time.time()

    def progress(rs):
        if not args.quiet and rs:
            got, most = sum(r.points for r in rs), sum(r.max_points for r in rs)
            print(f"{rs[0].student:20s} {rs[0].notebook:24s} {got:g} / {most:g}", flush=True)

    results = grading.grade(subs, key, numbers, args.time_limit, jobs=args.jobs,
                            memory_gb=args.memory_gb or None, progress=progress)
    meta = {"key": os.path.abspath(key_dir), "notebooks": numbers, "time_limit_s": args.time_limit,
            "max_points": sum(key[n].max_points for n in numbers)}
    grading.write_reports(results, args.out, out_json, meta)
    print(f"graded {len(subs)} submission(s), notebooks {' '.join(numbers)}, in {time.time() - t0:.0f} s: "
          f"wrote {args.out} and {out_json}")
    return results


def run_handout(args) -> str:
    out = args.out
    if os.path.isdir(out) and os.listdir(out):
        raise grading.GradeError(f"{out} is not empty; choose a new folder for the handout")
    student_dir = resources.find("notebooks/student")
    if not student_dir:
        raise grading.GradeError("no student copies found (notebooks/student of the minivar checkout); run this "
                                 "from the checkout, or set MINIVAR_HOME to it")
    copies = sorted(glob.glob(os.path.join(student_dir, "[0-9][0-9]_*.ipynb")))
    if args.notebooks:
        copies = [p for p in copies if os.path.basename(p)[:2] in set(args.notebooks)]
        missing = sorted(set(args.notebooks) - {os.path.basename(p)[:2] for p in copies})
        if missing:
            raise grading.GradeError(f"--notebooks {' '.join(missing)}: no such student copy in {student_dir}")
    for p in copies:
        with open(p, encoding="utf-8") as f:
            if "### BEGIN SOLUTION" in f.read():
                raise grading.GradeError(f"{p} holds a solution: run `make student` and try again")
    files = [(p, os.path.join("notebooks", os.path.basename(p))) for p in copies]
    for rel in resources.COURSE_FILES + ("experiments/study.py",):
        files.append((resources.path(rel), rel))
    os.makedirs(out, exist_ok=True)
    for src, rel in files:
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            shutil.copy2(src, dst)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(HANDOUT_README)
    print(f"wrote {out}: {len(copies)} student notebook(s) in notebooks/, and "
          f"{', '.join(resources.COURSE_FILES)}")
    return out
