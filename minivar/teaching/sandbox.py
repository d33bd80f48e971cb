"""The process a submission's answer cells run in, apart from the grader.

``python -m minivar.teaching.sandbox`` is started by ``minivar.teaching.grading`` for one
(student, notebook). It runs the teacher's set-up cells, then the student's answer cells, and
then answers calls: "call my_offsets with these arguments". The checkers themselves run in the
grader's process and see only the values the student's functions return, so nothing a
submission does here can patch a checker, a point or another submission's result.

The protocol on the two pipes is a sequence of frames (8-byte length + body):

    grader -> sandbox   pickle of (op, *payload):  ("setup", sources) | ("run", cell_id, source)
                                                   | ("get", name) | ("call", name, args)
    sandbox -> grader   torch.save of a reply, read back with torch.load(weights_only=True), so a
                        reply can hold tensors, numbers, strings, lists, tuples and dicts only.

Before the first answer cell the sandbox installs an audit hook (PEP 578) that refuses to start
processes, open sockets, load C libraries with ctypes, or write, rename or delete anything
outside its own temporary folder; its working folder and HOME are that temporary folder.
This keeps an honest mistake from damaging the course files; it is not a security boundary
against a determined attacker (for that, run the grader in a container without network).
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import traceback

FRAME = struct.Struct("<Q")


def read_frame(fd: int) -> bytes | None:
    """One frame from ``fd``; None at the end of the stream."""
    head = _read_exactly(fd, FRAME.size)
    if head is None:
        return None
    body = _read_exactly(fd, FRAME.unpack(head)[0])
    if body is None:
        return None
    return body


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, body: bytes) -> None:
    data = FRAME.pack(len(body)) + body
    while data:
        data = data[os.write(fd, data):]


# ----------------------------------------------------------------------------- values that cross
def to_plain(value, depth: int = 0):
    """A student's return value in a form ``torch.load(weights_only=True)`` reads: numpy arrays and
    scalars are tagged so that the grader gives the checker the same type back."""
    import numpy as np
    import torch
    if depth > 20:
        raise TypeError("the returned value is nested too deeply")
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return {"__numpy_scalar__": value.item(), "dtype": str(value.dtype)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if value is Ellipsis:  # an unanswered prediction: `my_prediction = ...`
        return {"__ellipsis__": True}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("a numpy array of Python objects cannot be checked")
        return {"__numpy_array__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, torch.dtype):
        return {"__torch_dtype__": str(value)}
    if isinstance(value, list):
        return [to_plain(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in value.items()}
    raise TypeError(f"a {type(value).__name__} object cannot be checked; return tensors, numbers, lists or tuples")


def from_plain(value):
    """The inverse of :func:`to_plain`, on the grader's side."""
    import numpy as np
    import torch
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(from_plain(v) for v in value)
    if isinstance(value, dict):
        if "__numpy_array__" in value:
            return value["__numpy_array__"].numpy()
        if "__numpy_scalar__" in value:
            return np.dtype(value["dtype"]).type(value["__numpy_scalar__"])
        if "__ellipsis__" in value:
            return Ellipsis
        if "__torch_dtype__" in value:
            return getattr(torch, value["__torch_dtype__"].split(".")[-1])
        return {k: from_plain(v) for k, v in value.items()}
    return value


def encode_reply(reply) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(reply, buf)
    return buf.getvalue()


def decode_reply(body: bytes):
    import torch
    return torch.load(io.BytesIO(body), weights_only=True)


# ----------------------------------------------------------------------------- the guard
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_REFUSED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "os.kill", "os.killpg", "socket.connect", "socket.bind", "socket.sendto", "ctypes.dlopen",
            "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "pty.spawn", "webbrowser.open")
_PATH_EVENTS = ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.symlink", "os.link",
                "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.rename")


def install_guard(workdir: str) -> None:
    """Refuse, from now on, what an answer cell has no business doing (see the module docstring)."""
    root = os.path.realpath(workdir) + os.sep

    def inside(p) -> bool:
        if isinstance(p, int):
            return p > 2  # an already open descriptor other than stdin/stdout/stderr
        try:
            p = os.fsdecode(p)
        except TypeError:
            return False
        return (os.path.realpath(p) + os.sep).startswith(root)

    def hook(event, args):
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and path is not None and not inside(path):
                raise PermissionError(f"the grader does not let an answer write to {path!r}")
        elif event.startswith(_REFUSED):
            raise PermissionError(f"the grader does not let an answer do {event}")
        elif event in _PATH_EVENTS:
            paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
            if not all(inside(p) for p in paths):
                raise PermissionError(f"the grader does not let an answer do {event} outside its own folder")

    sys.addaudithook(hook)


# ----------------------------------------------------------------------------- the loop
def _error_reply(exc: BaseException, source_name: str) -> tuple:
    """("error", exception type, message, the last frames that belong to the student's code)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == source_name]
    where = f" (line {frames[-1].lineno} of the cell)" if frames else ""
    return ("error", type(exc).__name__, f"{exc}{where}")


def serve(fd_in: int, fd_out: int, workdir: str) -> None:
    namespace: dict = {"__name__": "__main__"}
    guarded = False
    while True:
        body = read_frame(fd_in)
        if body is None:
            return
        op, *payload = pickle.loads(body)  # the grader's own message: trusted
        if op == "exit":
            return
        try:
            if op == "setup":
                for i, source in enumerate(payload[0]):
                    exec(compile(source, f"<set-up cell {i}>", "exec"), namespace)
                reply = ("ok", None)
            elif op == "run":
                if not guarded:
                    install_guard(workdir)
                    guarded = True
                cell_id, source = payload
                name = f"<answer cell {cell_id}>"
                try:
                    exec(compile(source, name, "exec"), namespace)
                    reply = ("ok", None)
                except BaseException as exc:  # noqa: BLE001 -- a student's cell may raise anything
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    reply = _error_reply(exc, name)
            elif op == "get":  # what a name is: a function (called through "call") or a value (sent)
                name = payload[0]
                if name not in namespace:
                    reply = ("missing", name)
                elif callable(namespace[name]):
                    reply = ("function", name)
                else:
                    try:
                        reply = ("value", to_plain(namespace[name]))
                    except TypeError as exc:
                        reply = ("raise", "TypeError", str(exc))
            elif op == "call":
                name, args = payload
                fn = namespace.get(name)
                if not callable(fn):
                    reply = ("missing", name)
                else:
                    try:
                        reply = ("ok", to_plain(fn(*args)))
                    except BaseException as exc:  # noqa: BLE001
                        if isinstance(exc, KeyboardInterrupt):
                            raise
                        reply = ("raise", type(exc).__name__, str(exc)[:2000])
            else:
                reply = ("error", "ProtocolError", f"unknown operation {op!r}")
        except SystemExit as exc:
            reply = ("error", "SystemExit", f"the code called exit({exc.code})")
        except BaseException as exc:  # noqa: BLE001 -- the set-up failed: report it, keep serving
            if isinstance(exc, KeyboardInterrupt):
                raise
            reply = ("error", type(exc).__name__, "".join(traceback.format_exception_only(type(exc), exc)).strip())
        try:
            body = encode_reply(reply)
        except Exception as exc:  # noqa: BLE001 -- a value that does not serialise
            body = encode_reply(("raise", "TypeError", f"the returned value cannot be sent to the checker: {exc}"))
        write_frame(fd_out, body)


def main() -> None:
    # The protocol keeps its own copies of the pipes; whatever the student's code prints goes to
    # stderr (the grader keeps it in a log), never into the protocol.
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.dont_write_bytecode = True
    workdir = os.getcwd()
    import torch
    torch.set_num_threads(1)
    serve(fd_in, fd_out, workdir)


if __name__ == "__main__":
    main()
