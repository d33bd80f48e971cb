"""The numbered notebooks stay consistent without executing them (nbval re-runs them in `make test`):

* each jupytext source notebooks/NN_*.py and its executed NN_*.ipynb hold the same cells;
* the .ipynb was really executed (every code cell has an execution_count, no error outputs),
  stays small, and follows the notebook template (what it teaches and needs; summary; next);
* the student copies in notebooks/student/ equal freshly generated ones (`make student`), and
  the generator blanks exactly the tagged solution regions.
"""
import glob
import importlib.util
import os

import jupytext
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
SOURCES = sorted(glob.glob(os.path.join(NB_DIR, "[0-9][0-9]_*.py")))
MAX_BYTES = 400_000

spec = importlib.util.spec_from_file_location("make_student", os.path.join(ROOT, "tools", "make_student.py"))
make_student = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_student)


def cells_of(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.get("metadata", {}).get("tags", [])),
             repr(sorted(c.get("metadata", {}).get("nbgrader", {}).items()))) for c in nb.cells]


def ids(paths):
    return [os.path.basename(p) for p in paths]


def test_there_are_notebooks():
    assert SOURCES, "no notebooks/NN_*.py sources found"
    orphans = [p for p in glob.glob(os.path.join(NB_DIR, "[0-9][0-9]_*.ipynb"))
               if not os.path.exists(p[:-len(".ipynb")] + ".py")]
    assert not orphans, f"notebooks without a .py source: {orphans}"


@pytest.mark.parametrize("py", SOURCES, ids=ids(SOURCES))
def test_source_and_ipynb_hold_the_same_cells(py):
    ipynb = py[:-3] + ".ipynb"
    assert os.path.exists(ipynb), f"{ipynb} missing: run `make notebooks`"
    a = cells_of(jupytext.read(py, fmt="py:percent"))
    b = cells_of(nbformat.read(ipynb, as_version=4))
    assert len(a) == len(b), f"{py}: {len(a)} cells vs {len(b)} in the .ipynb; run `make notebooks`"
    for i, (ca, cb) in enumerate(zip(a, b)):
        assert ca == cb, f"{os.path.basename(py)} cell {i} differs from the .ipynb; run `make notebooks`"


@pytest.mark.parametrize("py", SOURCES, ids=ids(SOURCES))
def test_ipynb_is_executed_small_and_follows_the_template(py):
    ipynb = py[:-3] + ".ipynb"
    assert os.path.getsize(ipynb) <= MAX_BYTES, f"{ipynb} is over {MAX_BYTES} bytes: shrink its figures"
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "unexecuted code cells: run `make notebooks`"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{ipynb} holds error outputs"
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    first, last = md[0].lower(), md[-1].lower()
    assert md[0].startswith("# "), "the first cell is the notebook's title"
    assert "you will learn" in first and "needs" in first, "say what it teaches and what it needs"
    assert any(s.lstrip().lower().startswith("## summary") for s in md), "a '## Summary' section"
    assert "next" in last, "end with what to read next"
    if any("solution" in c.get("metadata", {}).get("tags", []) for c in code):
        assert any("minivar.teaching.exercises" in c.source or "check_" in c.source for c in code)


@pytest.mark.parametrize("py", SOURCES, ids=ids(SOURCES))
def test_exercises_carry_grading_metadata(py):
    """What the grader (and nbgrader) reads: a 'setup' first code cell; every solution cell has a
    unique grade_id and is followed by a check cell with points that only calls checkers; no
    code cell spells a path relative to notebooks/ (a student copy runs from another folder)."""
    import ast

    from minivar.teaching import grading
    nb = jupytext.read(py, fmt="py:percent")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "setup" in code[0].metadata.get("tags", []), "tag the first code cell 'setup'"
    assert [c for c in code if "setup" in c.metadata.get("tags", [])] == code[:1], "only the first cell is 'setup'"
    for c in code:
        assert '"../' not in c.source and "'../" not in c.source, \
            f"a path relative to notebooks/ breaks the student copy: use minivar.teaching.resources\n{c.source}"
    pending, seen = None, set()
    for c in code:
        meta, tags = c.metadata.get("nbgrader", {}), c.metadata.get("tags", [])
        if "solution" in tags:
            assert meta.get("solution") is True and meta.get("grade") is False, "solution cell without nbgrader metadata"
            assert meta["grade_id"] not in seen
            seen.add(meta["grade_id"])
            pending = meta["grade_id"]
        elif "check" in tags:
            assert pending, "a check cell without an answer cell before it"
            assert meta.get("grade") is True and meta.get("points", 0) > 0 and meta["grade_id"] == pending + "-check"
            assert meta["grade_id"] not in seen
            seen.add(meta["grade_id"])
            body = ast.parse(c.source).body
            ok = all(isinstance(s, ast.ImportFrom) and s.module == "minivar.teaching.exercises" or
                     isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) for s in body)
            assert ok and grading.check_calls(c.source), "a check cell only imports and calls checkers"
            pending = None
        else:
            assert not meta, "nbgrader metadata on a cell that is neither a solution nor a check"
    assert pending is None, "an answer cell without a check cell after it"
    key = grading.read_key_notebook(py)
    assert len(key.exercises) == len([c for c in code if "check" in c.metadata.get("tags", [])])


def test_student_copies_are_up_to_date():
    problems = make_student.check(os.path.join(NB_DIR, "student"))
    assert not problems, "\n".join(problems) + "\nrun `make student`"


@pytest.mark.parametrize("py", SOURCES, ids=ids(SOURCES))
def test_student_copy_blanks_every_solution(py):
    nb = jupytext.read(py, fmt="py:percent")
    student = make_student.student_notebook(nb, "x")
    sol = [c for c in nb.cells if make_student.is_solution(c)]
    stu = [c for c in student.cells if make_student.is_solution(c)]
    assert len(sol) == len(stu)
    for a, b in zip(sol, stu):
        if "prediction" in a.metadata.get("tags", []):  # the guess stays to be written: name = ...
            assert "= ..." in b.source and "raise" not in b.source
        else:
            assert "raise NotImplementedError" in b.source
        assert make_student.BEGIN not in b.source and make_student.END not in b.source
        assert b.source != a.source
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    # everything that is not a solution (prose, headings, checker calls) is kept verbatim
    rest_a = [make_student.hide_derivations(c.source) if c.cell_type == "code" else c.source
              for c in nb.cells if not make_student.is_solution(c)]
    rest_b = [c.source for c in student.cells[1:] if not make_student.is_solution(c)]
    assert rest_a == rest_b


def test_blank_solution_keeps_indentation_and_code_outside_the_markers():
    src = "def f(x):\n    '''doc'''\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\ny = 2"
    assert make_student.blank_solution(src) == (
        "def f(x):\n    '''doc'''\n    # YOUR CODE HERE\n    raise NotImplementedError\n\ny = 2")
    assert make_student.blank_solution("x = 1") == "# YOUR CODE HERE\nraise NotImplementedError"
    with pytest.raises(ValueError):
        make_student.blank_solution("### BEGIN SOLUTION\nx = 1")


def test_hidden_derivations_leave_the_student_lines():
    src = "a = 1\n### BEGIN DERIVATION (exercise 2)\nb = a + 1\n### END DERIVATION\n#> b = 2\nprint(b)"
    assert make_student.hide_derivations(src) == "a = 1\nb = 2\nprint(b)"
    with pytest.raises(ValueError):
        make_student.hide_derivations("### BEGIN DERIVATION\nx = 1")


def test_generated_copies_are_stable(tmp_path):
    first = make_student.build(str(tmp_path / "a"))
    second = make_student.build(str(tmp_path / "b"))
    assert first == second and set(first) == {os.path.basename(p)[:-3] + ".ipynb" for p in SOURCES}
