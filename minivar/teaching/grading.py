"""Grade a class: the answer cells of many submitted notebooks, checked by the teacher's checkers.

    python -m minivar grade submitted/* --out grades.csv        # also writes grades.json

How a submission is scored (one (student, notebook) at a time):

1. The **key** is the teacher's notebooks (``notebooks/NN_*.py``, with the solutions). In it, every
   exercise is a code cell with ``nbgrader`` metadata ``{"grade": true, "points": P,
   "grade_id": ID}`` (the *check cell*, tag ``check``) preceded by the answer cell(s) with
   ``{"solution": true, "grade_id": ...}`` (tag ``solution``); the first code cell is tagged
   ``setup``. These are the fields nbgrader reads, so a course on nbgrader can import them.
2. From the submitted notebook only the answer cells are taken, matched by ``grade_id`` (or,
   when a student's tool dropped the metadata, by the student copy's cell id). Everything else
   the student changed -- the check cells, the points, the training cells -- is ignored.
3. A fresh sandbox process (``minivar.teaching.sandbox``) runs the key's set-up cell and the
   answer cells, never a training cell. The checkers named in the key's check cells run in the
   grader's own process and call the student's functions across the process boundary.
4. Each exercise has a time limit; a crash, an endless loop, a missing cell or a missing
   function costs that exercise (the sandbox is started again for the next one), never the
   batch. The checker's message is the student's feedback.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import csv
import dataclasses
import glob
import io
import json
import os
import pickle
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from . import exercises, sandbox

NOTEBOOK_NAME = re.compile(r"^(\d\d)[_ .-]")


class GradeError(Exception):
    """A problem with the grader's input (the key, an argument): reported as one error line."""


# ----------------------------------------------------------------------------- the key
@dataclasses.dataclass
class Exercise:
    grade_id: str               # the check cell's grade_id
    points: float
    answers: list[str]          # grade_ids of the answer cells that belong to this exercise
    checks: list[tuple[str, str]]   # (checker name in minivar.teaching.exercises, function name)
    title: str = ""


@dataclasses.dataclass
class KeyNotebook:
    number: str
    name: str
    setup: list[str]
    answers: dict[str, str]         # answer grade_id -> the key's solution source
    cell_ids: dict[str, str]        # answer grade_id -> the student copy's cell id
    exercises: list[Exercise]

    @property
    def max_points(self) -> float:
        return sum(e.points for e in self.exercises)


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def _tags(cell) -> list:
    tags = cell.get("metadata", {}).get("tags", [])
    return tags if isinstance(tags, list) else []


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def check_calls(source: str) -> list[tuple[str, str]]:
    """The ``check_x(my_function)`` calls of a check cell, as (checker, function name)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_") \
                and len(node.args) == 1 and isinstance(node.args[0], ast.Name):
            out.append((node.func.id, node.args[0].id))
    return out


def read_key_notebook(path: str) -> KeyNotebook:
    """Parse one notebook of the key (``.py`` jupytext source or ``.ipynb``)."""
    base = os.path.basename(path)
    m = NOTEBOOK_NAME.match(base)
    if not m:
        raise GradeError(f"{path}: a key notebook's name starts with its two-digit number (NN_name)")
    cells = _read_cells(path)
    setup = [_source(c) for c in cells if c.get("cell_type") == "code" and "setup" in _tags(c)]
    answers, cell_ids, exs, pending = {}, {}, [], []
    # the student copy has a banner cell first and numbers its cells cell-000, cell-001, ...
    for i, cell in enumerate(cells):
        meta = _nbgrader(cell)
        if cell.get("cell_type") != "code" or not meta.get("grade_id"):
            continue
        gid = str(meta["grade_id"])
        if meta.get("solution"):
            answers[gid] = _source(cell)
            cell_ids[gid] = f"cell-{i + 1:03d}"
            pending.append(gid)
        elif meta.get("grade"):
            calls = check_calls(_source(cell))
            unknown = [c for c, _ in calls if not callable(getattr(exercises, c, None))]
            if not calls or unknown:
                raise GradeError(f"{path}: check cell {gid} must call checkers of minivar.teaching.exercises "
                                 f"as check_x(my_function); found {calls or 'none'}")
            exs.append(Exercise(gid, float(meta.get("points", 0)), pending, calls,
                                title=calls[0][0][len("check_"):]))
            pending = []
    if not setup:
        raise GradeError(f"{path}: no code cell is tagged 'setup'")
    return KeyNotebook(m.group(1), os.path.splitext(base)[0], setup, answers, cell_ids, exs)


def _read_cells(path: str) -> list:
    try:
        if path.endswith(".py"):
            import jupytext
            nb = jupytext.read(path, fmt="py:percent")
        else:
            import nbformat
            nb = nbformat.read(path, as_version=4)
    except ImportError as exc:
        raise GradeError(f"reading {path} needs {exc.name}: pip install 'minivar[dev]'") from None
    except Exception as exc:  # noqa: BLE001 -- a broken key file
        raise GradeError(f"{path} is not a readable notebook: {exc}") from None
    return [dict(c) for c in nb.cells]


def read_key(folder: str) -> dict[str, KeyNotebook]:
    """Every graded notebook of the key folder, by number ("00", "01", ...)."""
    if not os.path.isdir(folder):
        raise GradeError(f"--key {folder}: no such folder (it holds the teacher's notebooks NN_*.py)")
    paths = sorted(glob.glob(os.path.join(folder, "[0-9][0-9]_*.py"))) or \
        sorted(glob.glob(os.path.join(folder, "[0-9][0-9]_*.ipynb")))
    if not paths:
        raise GradeError(f"--key {folder}: no notebooks NN_*.py or NN_*.ipynb in it")
    key = {}
    for p in paths:
        nb = read_key_notebook(p)
        if nb.exercises:
            if any(_blank(src) for src in nb.answers.values()):
                raise GradeError(f"--key {folder}: {os.path.basename(p)} is a student copy (blank answers); "
                                 "the key is the folder with the solutions")
            key[nb.number] = nb
    return key


def _blank(source: str) -> bool:
    return "raise NotImplementedError" in source and "BEGIN SOLUTION" not in source


def default_key() -> str:
    from . import resources
    found = resources.find("notebooks")
    if not found or not glob.glob(os.path.join(found, "[0-9][0-9]_*.py")):
        raise GradeError("no key found: pass --key DIR, the folder of the teacher's notebooks (NN_*.py with "
                         "solutions; notebooks/ in the minivar repository)")
    return found


# ----------------------------------------------------------------------------- submissions
@dataclasses.dataclass
class Submission:
    student: str
    notebooks: dict[str, list[str]]   # number -> paths found (more than one is an error)


def find_submissions(paths: list[str]) -> list[Submission]:
    """A folder per student (name = folder name, notebooks anywhere below it) or one notebook file
    (name = the file's name without .ipynb)."""
    subs, seen = [], {}
    for p in paths:
        if os.path.isdir(p):
            student = os.path.basename(os.path.normpath(p))
            files = [f for f in glob.glob(os.path.join(p, "**", "*.ipynb"), recursive=True)
                     if ".ipynb_checkpoints" not in f.split(os.sep)]
        elif os.path.isfile(p):
            if not p.endswith(".ipynb"):
                raise GradeError(f"{p}: a submission is a folder or an .ipynb file")
            student, files = os.path.splitext(os.path.basename(p))[0], [p]
        else:
            raise GradeError(f"{p}: no such file or folder")
        if student in seen:
            raise GradeError(f"two submissions are both called {student!r} ({seen[student]} and {p}); "
                             "give each student their own folder")
        seen[student] = p
        by_number: dict[str, list[str]] = {}
        for f in sorted(files):
            m = NOTEBOOK_NAME.match(os.path.basename(f))
            if m:
                by_number.setdefault(m.group(1), []).append(f)
        subs.append(Submission(student, by_number))
    return subs


def answer_cells(path: str, nb: KeyNotebook) -> tuple[dict[str, str], str | None]:
    """({answer grade_id: the student's source}, a problem with the file or None)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        cells = raw["cells"]
        if not isinstance(cells, list):
            raise ValueError("'cells' is not a list")
    except Exception as exc:  # noqa: BLE001 -- whatever the student handed in
        return {}, f"{os.path.basename(path)} is not a readable notebook ({type(exc).__name__})"
    by_gid, by_id = {}, {}
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        gid = _nbgrader(cell).get("grade_id")
        if isinstance(gid, str) and gid in nb.answers and gid not in by_gid:
            by_gid[gid] = _source(cell)
        cid = cell.get("id")
        if isinstance(cid, str):
            by_id.setdefault(cid, _source(cell))
    for gid, cid in nb.cell_ids.items():
        if gid not in by_gid and cid in by_id and _source_defines_same(by_id[cid], nb.answers[gid]):
            by_gid[gid] = by_id[cid]
    return by_gid, None


def _source_defines_same(student: str, key: str) -> bool:
    """A cell found by id only counts when it defines the same function names as the key's answer."""
    def defs(src):
        try:
            return {n.name for n in ast.parse(src).body if isinstance(n, ast.FunctionDef)}
        except SyntaxError:
            return None
    want = defs(key)
    got = defs(student)
    return got is None or (bool(want) and want <= got)


# ----------------------------------------------------------------------------- the sandbox, from outside
class _Timeout(BaseException):
    """The exercise ran past its time limit (BaseException: a checker's `except Exception` must not catch it)."""


class _Died(BaseException):
    """The sandbox process ended."""


class Sandbox:
    """One ``python -m minivar.teaching.sandbox`` process and its pipes."""

    def __init__(self, memory_gb: float | None = None):
        self.dir = tempfile.mkdtemp(prefix="minivar-grade-")
        self.log = open(os.path.join(self.dir, "sandbox.log"), "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONSTARTUP", "PYTHONINSPECT"))}
        env.update(HOME=self.dir, MPLCONFIGDIR=os.path.join(self.dir, ".mpl"), XDG_CACHE_HOME=os.path.join(
            self.dir, ".cache"), TRITON_CACHE_DIR=os.path.join(self.dir, ".triton"), MPLBACKEND="Agg",
            PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
            TRITON_INTERPRET="1")  # a Triton answer runs interpreted: it cannot be compiled from a cell's text
        nbytes = int(memory_gb * (1 << 30)) if memory_gb else 0

        def limit():  # runs in the child before it starts Python
            if nbytes:
                import resource
                resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
        self.proc = subprocess.Popen([sys.executable, "-m", "minivar.teaching.sandbox"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=self.dir, env=env,
                                     preexec_fn=limit, start_new_session=True)

    def request(self, message: tuple, deadline: float):
        try:
            sandbox.write_frame(self.proc.stdin.fileno(), pickle.dumps(message, protocol=4))
        except (BrokenPipeError, OSError):
            raise _Died() from None
        fd = self.proc.stdout.fileno()
        head = self._read(fd, sandbox.FRAME.size, deadline)
        body = self._read(fd, sandbox.FRAME.unpack(head)[0], deadline)
        try:
            return sandbox.decode_reply(body)
        except Exception:  # noqa: BLE001 -- a reply the sandbox could not have written honestly
            raise _Died() from None

    def _read(self, fd: int, n: int, deadline: float) -> bytes:
        chunks, left = [], n
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise _Timeout()
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise _Timeout()
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise _Died()
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def exit_code(self):
        return self.proc.poll()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                f.close()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class AnswerFunction:
    """What a checker receives: calls go to the sandbox; ``answer_source`` is the student's cell."""

    def __init__(self, box: Sandbox, name: str, source: str, deadline: float):
        self._box, self.__name__, self.answer_source, self._deadline = box, name, source, deadline

    def __call__(self, *args):
        reply = self._box.request(("call", self.__name__, args), self._deadline)
        kind = reply[0]
        if kind == "ok":
            return sandbox.from_plain(reply[1])
        if kind == "raise":
            _, typename, message = reply
            cls = getattr(builtins, typename, None)
            if isinstance(cls, type) and issubclass(cls, Exception) and cls is not AssertionError:
                raise cls(message)
            raise StudentError(f"your function raised {typename}: {message}")
        if kind == "missing":
            raise StudentError(f"`{self.__name__}` is not defined")
        raise StudentError(f"your function raised {reply[1]}: {reply[2]}")


def _answer(box: Sandbox, name: str, source: str, deadline: float):
    """What the check cell passes to its checker: the student's function (as a proxy) or value
    (a prediction, sent over as plain data)."""
    reply = box.request(("get", name), deadline)
    if reply[0] == "function":
        return AnswerFunction(box, name, source, deadline)
    if reply[0] == "value":
        return sandbox.from_plain(reply[1])
    if reply[0] == "missing":
        raise StudentError(f"`{name}` is not defined: did the answer cell run without an error?")
    raise StudentError(f"your answer raised {reply[1]}: {reply[2]}")


class StudentError(Exception):
    """An exception raised by the student's code, of a type the grader does not re-create."""


# ----------------------------------------------------------------------------- grading one notebook
@dataclasses.dataclass
class Result:
    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str       # passed | failed | missing | error | timeout | crashed | not submitted
    feedback: str


_local = threading.local()


class _ThreadStdout(io.TextIOBase):
    """sys.stdout that a grading thread can capture on its own (checkers print their 'correct:' line)."""

    def __init__(self, real):
        self.real = real

    def write(self, s):
        target = getattr(_local, "buffer", None)
        return (target or self.real).write(s)

    def flush(self):
        target = getattr(_local, "buffer", None)
        (target or self.real).flush()


_stdout_lock = threading.Lock()


@contextlib.contextmanager
def _captured():
    with _stdout_lock:
        if not isinstance(sys.stdout, _ThreadStdout):
            sys.stdout = _ThreadStdout(sys.stdout)
    _local.buffer = io.StringIO()
    try:
        yield _local.buffer
    finally:
        _local.buffer = None


def _shorten(text: str, n: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def grade_notebook(student: str, nb: KeyNotebook, paths: list[str], time_limit: float,
                   setup_limit: float = 180.0, memory_gb: float | None = None) -> list[Result]:
    """Results for every exercise of ``nb`` in one student's submission."""
    def all_as(status, feedback):
        return [Result(student, nb.name, e.grade_id, 0.0, e.points, status, feedback) for e in nb.exercises]

    if not paths:
        return all_as("not submitted", f"no notebook {nb.number}_*.ipynb was handed in")
    if len(paths) > 1:
        names = ", ".join(os.path.basename(p) for p in paths)
        return all_as("error", f"{len(paths)} notebooks numbered {nb.number} ({names}): hand in exactly one")
    answers, problem = answer_cells(paths[0], nb)
    if problem:
        return all_as("error", problem)

    results: list[Result] = []
    box: Sandbox | None = None
    ran_ok: list[str] = []            # answer cells that ran without error, replayed after a restart

    def start() -> Sandbox:
        b = Sandbox(memory_gb)
        reply = b.request(("setup", nb.setup), time.monotonic() + setup_limit)
        if reply[0] != "ok":
            b.close()
            raise GradeError(f"the set-up cell of {nb.name} failed in the grader's sandbox: {reply[1]}: {reply[2]}")
        for gid in ran_ok:
            b.request(("run", gid, answers[gid]), time.monotonic() + time_limit)
        return b

    try:
        for ex in nb.exercises:
            res = Result(student, nb.name, ex.grade_id, 0.0, ex.points, "failed", "")
            results.append(res)
            missing = [g for g in ex.answers if g not in answers]
            if missing:
                res.status, res.feedback = "missing", (f"the answer cell {missing[0]} is missing from the notebook "
                                                       "(deleted, or its metadata was removed)")
                continue
            try:
                if box is None:
                    box = start()
                deadline = time.monotonic() + time_limit
                cell_error = None
                for gid in ex.answers:
                    reply = box.request(("run", gid, answers[gid]), deadline)
                    if reply[0] == "ok":
                        ran_ok.append(gid)
                    elif cell_error is None:
                        cell_error = f"your answer cell raised {reply[1]}: {reply[2]}"
                if cell_error:
                    res.status, res.feedback = "error", _shorten(cell_error)
                    continue
                source = "\n".join(answers[g] for g in ex.answers)
                messages = []
                for checker, fname in ex.checks:
                    answer = _answer(box, fname, source, deadline)
                    with _captured() as out:
                        getattr(exercises, checker)(answer)
                    messages.append(out.getvalue().strip())
                res.points, res.status, res.feedback = ex.points, "passed", _shorten(" ".join(messages))
            except AssertionError as exc:
                res.feedback = _shorten(exc)
            except StudentError as exc:
                res.status, res.feedback = "error", _shorten(str(exc))
            except _Timeout:
                res.status, res.feedback = "timeout", (f"stopped after the time limit of {time_limit:g} s "
                                                       "(an endless loop, or far too slow)")
                box.close()
                box = None
            except _Died:
                code = box.exit_code() if box else None
                res.status, res.feedback = "crashed", (f"the Python process running the answer ended (exit code "
                                                       f"{code}): os._exit, a crash, or too much memory")
                box.close()
                box = None
            except GradeError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the checker choked on what the function returned
                res.status, res.feedback = "error", _shorten(f"{type(exc).__name__}: {exc}")
    finally:
        if box is not None:
            box.close()
    return results


# ----------------------------------------------------------------------------- a class
def grade(submissions: list[Submission], key: dict[str, KeyNotebook], numbers: list[str], time_limit: float,
          jobs: int = 1, memory_gb: float | None = None, progress=None) -> list[Result]:
    """Every (student, notebook, exercise), in a stable order."""
    tasks = [(s, key[n]) for s in submissions for n in numbers]
    out: dict[int, list[Result]] = {}

    def one(i):
        s, nb = tasks[i]
        out[i] = grade_notebook(s.student, nb, s.notebooks.get(nb.number, []), time_limit, memory_gb=memory_gb)
        if progress:
            progress(out[i])

    if jobs <= 1:
        for i in range(len(tasks)):
            one(i)
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(one, i) for i in range(len(tasks))]:
                f.result()
    return [r for i in range(len(tasks)) for r in out[i]]


CSV_FIELDS = ("student", "notebook", "exercise", "points", "max_points", "status", "feedback")


def write_reports(results: list[Result], csv_path: str, json_path: str, meta: dict) -> None:
    """Long-form CSV (a row per student and exercise) and JSON with per-student and per-notebook totals."""
    from ..checkpoints import atomic_json, atomic_write

    def text(body):
        def write(tmp):
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(body)
        return write
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for r in results:
        w.writerow([r.student, r.notebook, r.exercise, f"{r.points:g}", f"{r.max_points:g}", r.status, r.feedback])
    students: dict = {}
    for r in results:
        s = students.setdefault(r.student, {"points": 0.0, "max_points": 0.0, "notebooks": {}})
        n = s["notebooks"].setdefault(r.notebook, {"points": 0.0, "max_points": 0.0, "exercises": []})
        for d in (s, n):
            d["points"] += r.points
            d["max_points"] += r.max_points
        n["exercises"].append({k: getattr(r, k) for k in ("exercise", "points", "max_points", "status", "feedback")})
    doc = {**meta, "students": students}
    atomic_write(csv_path, text(buf.getvalue()))
    atomic_json(doc, json_path)
