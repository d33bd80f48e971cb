"""minivar.fast.cpu_memory: glibc keeps freed memory (fewer page faults per training step)."""
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import resource, sys, torch
from minivar.fast.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x = torch.randn(8192, 256, generator=g)
w1 = torch.randn(256, 1536, generator=g, requires_grad=True)  # activations 8192 x 1536 fp32 = 48 MB
w2 = torch.randn(1536, 256, generator=g, requires_grad=True)
def step():  # a training step's pattern: big activations, saved, freed in backward
    (torch.tanh(x @ w1) @ w2).square().mean().backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    env = {**os.environ, "MINIVAR_MALLOC": "keep"}
    for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keeping_freed_memory_removes_the_page_faults_of_a_reallocated_big_buffer():
    default, keep = _faults("default"), _faults("keep")
    pages = 4 * 48 * 2**20 // 4096  # one 48 MB activation per step, four steps
    assert default > pages  # every step faults its big buffers in again
    assert keep < 0.25 * default  # measured: ~200k page faults by default, 6k-16k kept


def test_opt_out(monkeypatch):
    from minivar.fast.cpu_memory import keep_freed_memory
    monkeypatch.setenv("MINIVAR_MALLOC", "default")
    assert keep_freed_memory() is False
