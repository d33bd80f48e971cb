"""Keep freed memory in the process instead of handing it back to the OS (glibc, CPU training).

glibc serves every allocation above 32 MB with its own mmap and unmaps it on free; below that it
trims the top of the heap whenever more than twice the last such size is free. A training step
allocates and frees the same large activations every time, so each step page-faults them in
again: on a 2-core CPU an M-VAR-d4 step at B16 spent about 1 s of system time in page faults (the
official VAR code shows the same effect). Telling glibc to never mmap and never trim makes the
second step reuse the first step's memory (the README's performance notes give the measured gain).

The price: the process keeps its peak heap for its whole life (what a training run does anyway).
``python -m minivar train`` / ``train-tokenizer`` call ``keep_freed_memory()`` on CPU; set
MINIVAR_MALLOC=default to opt out. The same effect from outside Python, for any program:
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 python ...``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameter numbers from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse. True if applied (Linux with glibc), else False."""
    if os.environ.get("MINIVAR_MALLOC", "keep") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_MAX, 0) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1  # an int: ~2 GB of free heap kept at most
    return ok_mmap and ok_trim
