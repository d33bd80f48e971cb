"""One attention function for next-scale models, several exact backends.

Both models attend over a sequence of K scales (``offsets[k]:offsets[k+1]`` is scale k):

    mode "causal" (VAR, Tian et al. 2024, Sec. 3.2): a query of scale k sees the keys of scales <= k;
    mode "intra"  (M-VAR, Ren et al. 2024, Sec. 3.2): a query of scale k sees only scale k's keys.

Backends (all compute the same numbers up to float rounding):
    "sdpa"   -- reference: one scaled_dot_product_attention call with the full (L, L) boolean mask.
    "blocks" -- per-scale calls with no mask at all: scale k's queries against keys [0, end_k)
                ("causal") or [begin_k, end_k) ("intra"). Skips every masked score (38% of them for
                VAR at 256 px, 61% for M-VAR), which makes it the default on CPU. On CPU its
                backward is written by hand (``minivar.fast.attention``).
    "triton" -- the flash-style kernels of ``minivar.kernels.scale_attention`` (GPU; on CPU only
                under TRITON_INTERPRET=1, for tests).
    "flash"  -- flash-attn's varlen kernel with every scale as its own sequence ("intra" only, CUDA,
                fp16/bf16, when flash-attn is installed; what the official M-VAR code uses).
                Untested: it needs a GPU, and none has run it yet.
    "auto"   -- "blocks"; "triton" on CUDA when ``minivar.fast.enabled.triton_attention`` is on
                (opt-in until a GPU run has checked it) and Triton imports.

Shapes: q_BHLc, k_BHLc, v_BHLc with B batch, H heads, L tokens, c head dim.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .. import fast, scales
from ..fast import attention as fast_attention
from ..fast import l2norm

BACKENDS = ("auto", "sdpa", "blocks", "triton", "flash")


@functools.lru_cache(maxsize=None)
def _triton_kernel():
    try:
        from ..kernels.scale_attention import scale_attention
        return scale_attention
    except ImportError:  # no triton
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
        gpu_fast = device.type == "cuda" and fast.enabled.triton_attention and _triton_kernel() is not None
        return "triton" if gpu_fast else "blocks"
    if backend == "triton" and _triton_kernel() is None:
        raise RuntimeError("the triton backend needs `pip install triton` (and a GPU, or "
                           "TRITON_INTERPRET=1 set before import for CPU tests)")
    if backend == "flash" and device.type != "cuda":
        raise RuntimeError("the flash backend needs CUDA and `pip install flash-attn`")
    return backend


def _flash_intra(q_BHLc, k_BHLc, v_BHLc, patch_nums, scale):
    from flash_attn import flash_attn_varlen_func  # optional dependency
    B, H, L, c = q_BHLc.shape
    pack = lambda t: t.transpose(1, 2).reshape(B * L, H, c)  # noqa: E731  (B*L, H, c)
    lens = torch.tensor([p * p for p in patch_nums] * B, device=q_BHLc.device, dtype=torch.int32)
    cu = F.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
    m = max(patch_nums) ** 2
    o = flash_attn_varlen_func(pack(q_BHLc), pack(k_BHLc), pack(v_BHLc), cu, cu, m, m, softmax_scale=scale)
    return o.reshape(B, L, H, c).transpose(1, 2)


def scale_attention(q_BHLc, k_BHLc, v_BHLc, patch_nums: tuple, mode: str, scale: float,
                    backend: str = "auto") -> torch.Tensor:
    """Attention over a whole next-scale sequence (training / teacher forcing)."""
    if mode not in ("causal", "intra"):
        raise ValueError(f"mode must be 'causal' or 'intra', got {mode!r}")
    backend = resolve_backend(backend, q_BHLc.device)
    if backend == "sdpa":
        mask = _mask(tuple(patch_nums), mode, q_BHLc.device)
        return F.scaled_dot_product_attention(q_BHLc, k_BHLc, v_BHLc, attn_mask=mask, scale=scale)
    if backend == "flash":
        if mode != "intra":
            raise ValueError("the flash backend covers intra-scale (M-VAR) attention only; use triton or sdpa")
        return _flash_intra(q_BHLc, k_BHLc, v_BHLc, tuple(patch_nums), scale)
    if backend == "triton":
        offs = _offsets_tensor(tuple(patch_nums), q_BHLc.device)
        return _triton_kernel()(q_BHLc, k_BHLc, v_BHLc, offs, mode, scale)
    spans = _spans(tuple(patch_nums), mode)
    if q_BHLc.device.type == "cpu" and fast.enabled.attention_backward:
        o = fast_attention.blocks_attention_cpu(q_BHLc, k_BHLc, v_BHLc, spans, scale)
        if o is not None:
            return o
    return blocks_attention(q_BHLc, k_BHLc, v_BHLc, spans, scale)


@functools.lru_cache(maxsize=32)
def _spans(patch_nums: tuple, mode: str) -> tuple:
    """(query begin, query end, key begin) of every scale; keys run from key begin to query end."""
    offs = scales.offsets(patch_nums)
    return tuple((b, e, 0 if mode == "causal" else b) for b, e in zip(offs[:-1], offs[1:]))


def blocks_attention(q_BHLc, k_BHLc, v_BHLc, spans, scale):
    """The "blocks" backend: one unmasked SDPA call per scale (``spans``: query begin, query end,
    key begin of each scale). On CPU the same calls run with a hand-written backward
    (``minivar.fast.attention``)."""
    outs = [F.scaled_dot_product_attention(q_BHLc[:, :, b:e], k_BHLc[:, :, kb:e], v_BHLc[:, :, kb:e], scale=scale)
            for b, e, kb in spans]
    return torch.cat(outs, dim=2)


def l2_normalize(x_BHLc: torch.Tensor, t_1H11: torch.Tensor | None = None, eps: float = 1e-12):
    """Cosine attention (VAR's ``attn_l2_norm``): unit-length rows, times a per-head temperature t.
    The fused op of ``minivar.fast.l2norm`` computes the same with a shorter backward."""
    if fast.enabled.l2_normalize:
        return l2norm.scaled_l2_normalize(x_BHLc, t_1H11, eps)
    y = F.normalize(x_BHLc, dim=-1, eps=eps)
    return y if t_1H11 is None else y * t_1H11
