"""What machine a number came from: torch version, CPU model and instruction set, thread count.

Floating-point results depend on more than the code: PyTorch picks its vectorised kernels by the
CPU's instruction set (AVX-512, AVX2, or none), oneDNN and MKL pick theirs the same way, and the
thread count fixes the order in which sums are reduced. Two machines can therefore disagree in the
last bits, and a discrete event (an argmax, a re-seeded code) can turn that into a visible
difference. Every result file minivar writes (``eval.json``, the study results, benchmark reports)
carries ``record()`` so that a number can be traced to the machine that produced it.

The environment variables that emulate another CPU on this one are recorded as well:
``ATEN_CPU_CAPABILITY=default|avx2|avx512`` (PyTorch's own kernels), ``ONEDNN_MAX_CPU_ISA`` (oneDNN
convolutions), ``MKL_ENABLE_INSTRUCTIONS`` (MKL matmuls) and ``OMP_NUM_THREADS``.
"""
from __future__ import annotations

import os
import platform

import torch

EMULATION_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 7B13", "Intel(R) Xeon(R) ..."), or the best guess we have."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The instruction set PyTorch's CPU kernels run with here ("AVX512", "AVX2", "DEFAULT", ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return "unknown"


def record() -> dict:
    """A small JSON-able description of this process's numerical environment."""
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": cpu_capability(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    set_vars = {k: os.environ[k] for k in EMULATION_VARS if k in os.environ}
    if set_vars:
        env["env"] = set_vars
    return env


def describe(env: dict | None = None) -> str:
    """One line for logs: 'torch 2.13.0 on AMD EPYC (AVX2), 2 threads'."""
    env = env or record()
    where = env["cuda"] or f"{env['cpu']} ({env['cpu_capability']})"
    extra = "".join(f", {k}={v}" for k, v in env.get("env", {}).items())
    return f"torch {env['torch']} on {where}, {env['threads']} thread(s){extra}"
