"""The student copies run where students open them.

* from notebooks/student/: every copy's set-up cell, answer cells (the solutions put back in)
  and check cells, executed by a Jupyter kernel whose working folder is notebooks/student/;
* from a course folder outside the repository (`minivar handout`): the notebooks that read course
  files (00 the demo weights, 09 the study results, 10 the configs) run whole, solutions put back;
* `minivar.teaching.resources` finds the files from any folder, and says what to copy when it cannot.
"""
import glob
import os
import subprocess
import sys

import nbformat
import pytest

from minivar.cli.main import main
from minivar.teaching import grading, resources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDENT = os.path.join(ROOT, "notebooks", "student")
COPIES = sorted(glob.glob(os.path.join(STUDENT, "[0-9][0-9]_*.ipynb")))
nbclient = pytest.importorskip("nbclient")


def key_of(copy: str):
    return grading.read_key_notebook(os.path.join(ROOT, "notebooks", os.path.basename(copy)[:-6] + ".py"))


def with_solutions(copy: str, only_graded: bool):
    """The student copy with every answer cell replaced by the key's solution; with only_graded, just
    the set-up, answer and check cells (what a student must be able to run to do the exercises)."""
    nb = nbformat.read(copy, as_version=4)
    key = key_of(copy)
    cells = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        meta, tags = c.metadata.get("nbgrader", {}), c.metadata.get("tags", [])
        if meta.get("solution"):
            c.source = key.answers[meta["grade_id"]]
        elif only_graded and not ({"setup", "check"} & set(tags)):
            continue
        cells.append(c)
    nb.cells = cells
    return nb


def execute(nb, cwd: str, timeout: int = 600):
    """Run every cell in a fresh kernel whose working folder is cwd; a cell that raises fails the test."""
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    return nb


@pytest.mark.parametrize("copy", COPIES, ids=[os.path.basename(p) for p in COPIES])
def test_student_copy_runs_its_exercises_from_its_own_folder(copy):
    nb = execute(with_solutions(copy, only_graded=True), STUDENT)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    checks = sum("check" in c.metadata.get("tags", []) for c in nb.cells)
    assert checks > 0 and printed.count("correct: ") == checks


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course") / "handout"
    main(["handout", "--out", str(out)])
    return out


def test_handout_holds_no_solution_and_what_the_notebooks_read(course):
    names = sorted(os.listdir(course / "notebooks"))
    assert names == [os.path.basename(p) for p in COPIES]
    for p in (course / "notebooks").iterdir():
        text = p.read_text()
        assert "BEGIN SOLUTION" not in text and "raise NotImplementedError" in text
    for rel in resources.COURSE_FILES:
        assert (course / rel).exists()
    assert not (course / "tests").exists() and not (course / "minivar").exists()


@pytest.mark.slow
@pytest.mark.parametrize("number", ["00", "09", "10"])
def test_whole_student_copy_runs_in_a_course_folder_outside_the_repository(course, number, monkeypatch):
    monkeypatch.delenv(resources.HOME_VARIABLE, raising=False)
    copy = next(p for p in COPIES if os.path.basename(p).startswith(number))
    nb = with_solutions(str(course / "notebooks" / os.path.basename(copy)), only_graded=False)
    execute(nb, str(course / "notebooks"))
    if number == "10":  # its files went to the course folder's runs/, not to the repository's
        assert (course / "runs" / "notebook10").is_dir()


def run_python(code: str, cwd, **env):
    e = {k: v for k, v in os.environ.items() if k != resources.HOME_VARIABLE}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=e, capture_output=True, text=True)


def test_resources_are_found_from_any_folder(tmp_path, course):
    code = "from minivar.teaching import resources; print(resources.path('weights/digits16'))"
    # outside any course folder: the checkout minivar is imported from
    r = run_python(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == os.path.join(ROOT, "weights", "digits16")
    # inside a course folder: its own copy, found by walking up from notebooks/
    r = run_python(code, course / "notebooks")
    assert r.stdout.strip() == str(course / "weights" / "digits16")
    # MINIVAR_HOME wins
    r = run_python(code, tmp_path, MINIVAR_HOME=str(course))
    assert r.stdout.strip() == str(course / "weights" / "digits16")


def test_a_missing_resource_says_what_to_copy(tmp_path):
    r = run_python("from minivar.teaching import resources; resources.path('weights/nothing_here')", tmp_path)
    assert r.returncode != 0
    assert "Copy 'weights/nothing_here' from the minivar repository" in r.stderr and "MINIVAR_HOME" in r.stderr
