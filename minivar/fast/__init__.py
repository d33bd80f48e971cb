"""Fast paths, and the one place that says which are on.

Every concept module computes its idea the plain way first (``F.normalize``, one SDPA call per
scale, the loss on materialised logits, ``F.conv1d``, an NCHW decoder) and hands over to a module of
this package only where ``enabled`` says so. Each module here starts with what it replaces and why,
and has a test asserting it equals its plain twin:

    attention.py    per-scale CPU attention with a hand-written backward     tests/test_model.py
    l2norm.py       cosine attention's normalisation as one op               tests/test_model.py
    head_loss.py    head matmul + cross-entropy fused in chunks             tests/test_losses.py
    causal_conv.py  Mamba2's depthwise conv as shifted multiply-adds        tests/test_mamba2.py
    cpu_memory.py   glibc keeps freed memory between training steps         tests/test_cpu_memory.py
    (channels-last decoding, ``nhwc_decode``, is two lines in minivar/tokenizer/vqvae.py)

The CPU ones are on by default: each was measured faster (README, "Performance"). The GPU ones
(``triton_attention``, ``mamba_fused_scan``) are off until a GPU run has checked them against the
PyTorch path (``pytest -m gpu``): turn them on yourself to try them.

    from minivar import fast
    fast.enabled.head_loss = False           # the trainer now computes logits, then the loss
    with fast.disabled("l2_normalize", "attention_backward"):
        ...                                   # the plain paths, e.g. to compare
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass


@dataclass
class FastPaths:
    attention_backward: bool = True  # CPU: per-scale attention, hand-written backward (attention.py)
    l2_normalize: bool = True  # cosine attention's q / k normalisation in one op (l2norm.py)
    head_loss: bool = True  # head + cross-entropy fused in chunks, no (B*L, V) logits (head_loss.py)
    causal_conv: bool = True  # Mamba2's depthwise conv, shifted multiply-adds (causal_conv.py)
    nhwc_decode: bool = True  # CPU inference: decode in channels-last (oneDNN's native layout)
    triton_attention: bool = False  # CUDA: minivar.kernels' Triton attention as the "auto" backend
    mamba_fused_scan: bool = False  # CUDA: mamba-ssm's fused Triton scan when it is installed


enabled = FastPaths()


@contextlib.contextmanager
def disabled(*names: str):
    """Run a block on the plain paths (all of them when no name is given); restores the switches after."""
    names = names or tuple(f.name for f in dataclasses.fields(FastPaths))
    unknown = set(names) - {f.name for f in dataclasses.fields(FastPaths)}
    if unknown:
        raise ValueError(f"unknown fast paths {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(FastPaths)]}")
    saved = dataclasses.asdict(enabled)
    try:
        for n in names:
            setattr(enabled, n, False)
        yield enabled
    finally:
        for n, v in saved.items():
            setattr(enabled, n, v)
