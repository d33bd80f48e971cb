"""`minivar grade`: the solution notebooks get full marks, the untouched student copies zero, and
crafted wrong submissions -- an endless loop, a crash, a deleted cell, a patched checker, a lookup
of the package's implementation, a write into the repository, a broken file -- cost the exercise
they touch and nothing else."""
import copy
import csv
import glob
import json
import os
import shutil

import nbformat
import pytest

from minivar.cli.main import main
from minivar.teaching import grading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = os.path.join(ROOT, "notebooks")
SOLVED = sorted(glob.glob(os.path.join(KEY, "[0-9][0-9]_*.ipynb")))
BLANK = sorted(glob.glob(os.path.join(KEY, "student", "[0-9][0-9]_*.ipynb")))
NB01 = "01_scales_and_tokens.ipynb"

OFFSETS_OK = "def my_offsets(patch_nums):\n    out = [0]\n    for pn in patch_nums:\n        out.append(out[-1] + pn * pn)\n    return out\n"
MASK_OK = ("def my_block_causal_mask(patch_nums):\n"
           "    sid = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])\n"
           "    return sid[:, None] >= sid[None, :]\n")
MASK_GPT = ("def my_block_causal_mask(patch_nums):\n    L = sum(p * p for p in patch_nums)\n"
            "    return torch.ones(L, L, dtype=torch.bool).tril()\n")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def key():
    return grading.read_key(KEY)


def submission(folder, name: str, answers: dict[str, str], edit=None):
    """A copy of student notebook 01 in folder/name/, its answer cells (by grade_id) replaced."""
    nb = nbformat.read(os.path.join(KEY, "student", NB01), as_version=4)
    for c in nb.cells:
        gid = c.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            c.source = answers[gid]
    if edit:
        edit(nb)
    os.makedirs(folder / name, exist_ok=True)
    nbformat.write(nb, str(folder / name / NB01))
    return str(folder / name)


def by_student(rows):
    out = {}
    for r in rows:
        out.setdefault(r["student"], {})[r["exercise"]] = r
    return out


@pytest.mark.slow
def test_solutions_get_full_marks_and_student_copies_zero(tmp_path, key):
    solved, blank = tmp_path / "solutions", tmp_path / "untouched"
    solved.mkdir(), blank.mkdir()
    for p in SOLVED:
        shutil.copy(p, solved)
    for p in BLANK:
        shutil.copy(p, blank)
    out = tmp_path / "grades.csv"
    main(["grade", str(solved), str(blank), "--out", str(out), "--jobs", "2", "--quiet"])
    rows = by_student(read_csv(out))
    n_ex = sum(len(nb.exercises) for nb in key.values())
    assert len(rows["solutions"]) == len(rows["untouched"]) == n_ex
    assert all(r["status"] == "passed" and r["points"] == r["max_points"] for r in rows["solutions"].values()), \
        [r for r in rows["solutions"].values() if r["status"] != "passed"]
    assert all(r["points"] == "0" and ("not written yet" in r["feedback"] or "not answered yet" in r["feedback"])
               for r in rows["untouched"].values())
    doc = json.loads((tmp_path / "grades.json").read_text())
    total = sum(nb.max_points for nb in key.values())
    assert doc["students"]["solutions"]["points"] == doc["students"]["solutions"]["max_points"] == total
    assert doc["students"]["untouched"]["points"] == 0


def test_crafted_submissions_cost_only_the_exercise_they_touch(tmp_path, key):
    subs = tmp_path / "submitted"
    marker = os.path.join(ROOT, "graded_by_a_student.txt")

    def drop_offsets_cell(nb):
        nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "nb01-offsets"]

    def tamper_with_checks_and_points(nb):
        for c in nb.cells:
            meta = c.metadata.get("nbgrader", {})
            if meta.get("grade"):
                meta["points"] = 100
                c.source = "print('correct: everything')"

    def strip_metadata(nb):
        for c in nb.cells:
            c.metadata.pop("nbgrader", None)

    paths = [
        submission(subs, "alice", {"nb01-offsets": OFFSETS_OK, "nb01-block-causal-mask": MASK_GPT,
                                   "nb01-predict-pairs": "my_pairs_prediction = 354\n"}),
        submission(subs, "bob", {"nb01-offsets": "def my_offsets(patch_nums):\n    while True:\n        pass\n",
                                 "nb01-block-causal-mask": MASK_OK, "nb01-predict-pairs": "my_pairs_prediction = 900\n"}),
        submission(subs, "carol", {"nb01-offsets": "import os\nos._exit(3)\n", "nb01-block-causal-mask": MASK_OK}),
        submission(subs, "dave", {"nb01-block-causal-mask": MASK_OK}, edit=drop_offsets_cell),
        submission(subs, "eve", {
            "nb01-offsets": "import minivar.teaching.exercises as ex\nex.check_offsets = lambda fn: print('correct')\n"
                            "def my_offsets(patch_nums):\n    return [0]\n",
            "nb01-block-causal-mask": MASK_OK}, edit=tamper_with_checks_and_points),
        submission(subs, "frank", {"nb01-offsets": "from minivar.scales import offsets\n\n"
                                                   "def my_offsets(patch_nums):\n    return offsets(patch_nums)\n",
                                   "nb01-block-causal-mask": MASK_OK}),
        submission(subs, "grace", {"nb01-offsets": f"open({marker!r}, 'w').write('x')\n" + OFFSETS_OK,
                                   "nb01-block-causal-mask": MASK_OK}),
        submission(subs, "heidi", {"nb01-offsets": OFFSETS_OK, "nb01-block-causal-mask": MASK_OK},
                   edit=strip_metadata),
    ]
    (subs / "ivan").mkdir()
    (subs / "ivan" / NB01).write_text("{ this is not a notebook")
    (subs / "judy").mkdir()  # handed in nothing
    out = tmp_path / "grades.csv"
    main(["grade", *paths, str(subs / "ivan"), str(subs / "judy"), "--out", str(out), "--notebooks", "01",
          "--time-limit", "8", "--quiet"])
    rows = by_student(read_csv(out))
    off, mask = "nb01-offsets-check", "nb01-block-causal-mask-check"
    got = {s: (r[off]["status"], r[mask]["status"]) for s, r in rows.items()}
    assert got == {"alice": ("passed", "failed"), "bob": ("timeout", "passed"), "carol": ("crashed", "passed"),
                   "dave": ("missing", "passed"), "eve": ("failed", "passed"), "frank": ("failed", "passed"),
                   "grace": ("error", "passed"), "heidi": ("passed", "passed"), "ivan": ("error", "error"),
                   "judy": ("not submitted", "not submitted")}
    assert "token-causal mask of a GPT" in rows["alice"][mask]["feedback"]
    pred = "nb01-predict-pairs-check"  # a prediction is a value, sent over as data and checked here
    assert rows["alice"][pred]["status"] == "passed" and rows["bob"][pred]["status"] == "failed"
    assert "not answered yet" in rows["carol"][pred]["feedback"]
    assert "time limit of 8 s" in rows["bob"][off]["feedback"]
    assert rows["eve"][mask]["max_points"] == "2"  # the key's points, not the submission's
    assert "minivar's own" in rows["frank"][off]["feedback"]
    assert "PermissionError" in rows["grace"][off]["feedback"] and not os.path.exists(marker)
    assert "not a readable notebook" in rows["ivan"][off]["feedback"]


def test_grade_refuses_to_overwrite_and_names_bad_input(tmp_path, capsys):
    out = tmp_path / "grades.csv"
    out.write_text("the teacher's earlier grades")
    with pytest.raises(SystemExit) as e:
        main(["grade", str(tmp_path), "--out", str(out), "--notebooks", "01"])
    assert "--overwrite" in str(e.value.code) and out.read_text() == "the teacher's earlier grades"
    with pytest.raises(SystemExit) as e:
        main(["grade", str(tmp_path), "--out", str(tmp_path / "g.csv"), "--notebooks", "42"])
    assert str(e.value.code).startswith("error: --notebooks 42")
    with pytest.raises(SystemExit) as e:
        main(["grade", str(tmp_path), "--out", str(tmp_path / "g.csv"), "--key", os.path.join(KEY, "student")])
    assert "student copy" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["grade", str(tmp_path / "nobody"), "--out", str(tmp_path / "g.csv")])
    assert "no such file or folder" in str(e.value.code)
    assert not (tmp_path / "g.csv").exists()


def test_key_points_are_nbgrader_metadata(key):
    nb = nbformat.read(os.path.join(KEY, "student", NB01), as_version=4)
    graded = [c.metadata["nbgrader"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert [(m["grade_id"], m["points"]) for m in graded] == \
        [(e.grade_id, e.points) for e in key["01"].exercises]
    assert all(m["schema_version"] == 3 and m["locked"] for m in graded)
    assert copy.deepcopy(key["01"]).max_points == sum(m["points"] for m in graded)
