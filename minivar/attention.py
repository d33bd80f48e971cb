"""One attention function for next-scale models, several exact backends.

Both models attend over a sequence of K scales (``offsets[k]:offsets[k+1]`` is scale k):

    mode "causal" (VAR, Tian et al. 2024, Sec. 3.2): a query of scale k sees the keys of scales <= k;
    mode "intra"  (M-VAR, Ren et al. 2024, Sec. 3.2): a query of scale k sees only scale k's keys.

Backends (all compute the same numbers up to float rounding):
    "sdpa"   -- reference: one scaled_dot_product_attention call with the full (L, L) boolean mask.
    "blocks" -- per-scale calls with no mask at all: scale k's queries against keys [0, end_k)
                ("causal") or [begin_k, end_k) ("intra"). Skips every masked score (38% of them for
                VAR at 256 px, 61% for M-VAR), which makes it the default on CPU.
    "triton" -- the flash-style kernels of ``minivar.kernels.scale_attention`` (GPU; on CPU only
                under TRITON_INTERPRET=1, for tests).
    "auto"   -- "triton" on CUDA when Triton imports, else "blocks".

Shapes: q_BHLc, k_BHLc, v_BHLc with B batch, H heads, L tokens, c head dim.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import scales

BACKENDS = ("auto", "sdpa", "blocks", "triton")


@functools.lru_cache(maxsize=None)
def _triton_kernel():
    try:
        from minivar.kernels.scale_attention import scale_attention
        return scale_attention
    except Exception:  # triton missing or unusable
        return None


@functools.lru_cache(maxsize=32)
def _mask(patch_nums: tuple, mode: str, device: torch.device) -> torch.Tensor:
    make = scales.block_causal_mask if mode == "causal" else scales.block_diagonal_mask
    return make(patch_nums, device=device)


@functools.lru_cache(maxsize=32)
def _offsets_tensor(patch_nums: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor(scales.offsets(patch_nums), dtype=torch.int32, device=device)


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_kernel() is not None else "blocks"
    if backend == "triton" and _triton_kernel() is None:
        raise RuntimeError("the triton backend needs `pip install triton` (and a GPU, or "
                           "TRITON_INTERPRET=1 set before import for CPU tests)")
    return backend


def scale_attention(q_BHLc, k_BHLc, v_BHLc, patch_nums: tuple, mode: str, scale: float,
                    backend: str = "auto") -> torch.Tensor:
    """Attention over a whole next-scale sequence (training / teacher forcing)."""
    if mode not in ("causal", "intra"):
        raise ValueError(f"mode must be 'causal' or 'intra', got {mode!r}")
    backend = resolve_backend(backend, q_BHLc.device)
    if backend == "sdpa":
        mask = _mask(tuple(patch_nums), mode, q_BHLc.device)
        return F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=mask, scale=scale)
    if backend == "triton":
        offs = _offsets_tensor(tuple(patch_nums), q_BHLc.device)
        return _triton_kernel()(q_BHLc, k_BHLc, v_BHLc, offs, mode, scale)
    offs = scales.offsets(patch_nums)
    outs = []
    for b, e in zip(offs[:-1], offs[1:]):
        kb = 0 if mode == "causal" else b
        outs.append(F.scaled_dot_product_attention(q_BHLc[:, :, b:e], k_BHLc[:, :, kb:e],
                                                   v_BHLc[:, :, kb:e], scale=scale))
    return torch.cat(outs, dim=2)
