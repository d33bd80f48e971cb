"""Test configuration shared by every test file.

TRITON_INTERPRET must be set before any ``@triton.jit`` runs, so it is set here (on machines without
CUDA), at import time of the conftest, before pytest imports the test modules. Tests stay on CPU and small.
"""
import os

import torch

if not torch.cuda.is_available():  # on a GPU the kernels compile for real
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# two threads for a serial run; one per worker when pytest-xdist runs test files side by side
# (`make test` runs two workers on a 2-core machine)
_default_threads = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or _default_threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
