"""One attention function for next-scale models, several exact backends.

Both models attend over a sequence of K scales (``offsets[k]:offsets[k+1]`` is scale k):

    mode "causal" (VAR, Tian et al. 2024, Sec. 3.2): a query of scale k sees the keys of scales <= k;
    mode "intra"  (M-VAR, Ren et al. 2024, Sec. 3.2): a query of scale k sees only scale k's keys.

Backends (all compute the same numbers up to float rounding):
    "sdpa"   -- reference: one scaled_dot_product_attention call with the full (L, L) boolean mask.
    "blocks" -- per-scale calls with no mask at all: scale k's queries against keys [0, end_k)
                ("causal") or [begin_k, end_k) ("intra"). Skips every masked score (38% of them for
                VAR at 256 px, 61% for M-VAR), which makes it the default on CPU. On CPU its
                backward is written by hand (``_CPUBlocks``); ``_blocks_reference`` is its twin.
    "triton" -- the flash-style kernels of ``minivar.kernels.scale_attention`` (GPU; on CPU only
                under TRITON_INTERPRET=1, for tests).
    "flash"  -- flash-attn's varlen kernel with every scale as its own sequence ("intra" only, CUDA,
                fp16/bf16, when flash-attn is installed; what the official M-VAR code uses).
                UNTESTED on our CPU machines.
    "auto"   -- "triton" on CUDA when Triton imports, else "blocks".

Shapes: q_BHLc, k_BHLc, v_BHLc with B batch, H heads, L tokens, c head dim.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from . import scales

BACKENDS = ("auto", "sdpa", "blocks", "triton", "flash")


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
    if q_BHLc.device.type == "cpu" and _cpu_flash_ops() is not None:
        return _CPUBlocks.apply(q_BHLc, k_BHLc, v_BHLc, spans, scale)
    return _blocks_reference(q_BHLc, k_BHLc, v_BHLc, spans, scale)


@functools.lru_cache(maxsize=32)
def _spans(patch_nums: tuple, mode: str) -> tuple:
    """(query begin, query end, key begin) of every scale; keys run from key begin to query end."""
    offs = scales.offsets(patch_nums)
    return tuple((b, e, 0 if mode == "causal" else b) for b, e in zip(offs[:-1], offs[1:]))


def _blocks_reference(q_BHLc, k_BHLc, v_BHLc, spans, scale):
    """The "blocks" backend in plain autograd: one unmasked SDPA call per scale."""
    outs = [F.scaled_dot_product_attention(q_BHLc[:, :, b:e], k_BHLc[:, :, kb:e], v_BHLc[:, :, kb:e], scale=scale)
            for b, e, kb in spans]
    return torch.cat(outs, dim=2)


@functools.lru_cache(maxsize=None)
def _cpu_flash_ops():
    """PyTorch's CPU flash-attention forward and backward ops (private aten ops), or None."""
    try:
        ops = torch.ops.aten
        return (ops._scaled_dot_product_flash_attention_for_cpu.default,
                ops._scaled_dot_product_flash_attention_for_cpu_backward.default)
    except (AttributeError, RuntimeError):
        return None


class _CPUBlocks(torch.autograd.Function):
    """The "blocks" backend on CPU with a hand-written backward. In plain autograd every scale's
    slices q[:, :, b:e], k[:, :, :e] and v[:, :, :e] send back a zero-filled full-size gradient
    each, summed by the engine: 30 fills and adds of (B, H, L, c) per layer, ~8% of a VAR-d4
    training step. Here each scale's gradient is written (q) or added (k, v) into its own slice
    of one buffer. Same kernels, same numbers as ``_blocks_reference``."""

    @staticmethod
    def forward(ctx, q_BHLc, k_BHLc, v_BHLc, spans, scale):
        fwd, _ = _cpu_flash_ops()
        B, H, L, c = q_BHLc.shape
        o_BHLc = q_BHLc.new_empty(B, H, L, c)
        lse_BHL = q_BHLc.new_empty(B, H, L, dtype=torch.float32)
        for b, e, kb in spans:
            o, lse = fwd(q_BHLc[:, :, b:e], k_BHLc[:, :, kb:e], v_BHLc[:, :, kb:e], scale=scale)
            o_BHLc[:, :, b:e], lse_BHL[:, :, b:e] = o, lse
        ctx.save_for_backward(q_BHLc, k_BHLc, v_BHLc, o_BHLc, lse_BHL)
        ctx.spans, ctx.scale = spans, scale
        return o_BHLc

    @staticmethod
    def backward(ctx, do_BHLc):
        _, bwd = _cpu_flash_ops()
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        do_BHLc = do_BHLc.contiguous()
        for b, e, kb in ctx.spans:
            gq, gk, gv = bwd(do_BHLc[:, :, b:e], q[:, :, b:e], k[:, :, kb:e], v[:, :, kb:e], o[:, :, b:e],
                             lse[:, :, b:e], 0.0, False, scale=ctx.scale)
            dq[:, :, b:e] = gq
            dk[:, :, kb:e] += gk
            dv[:, :, kb:e] += gv
        return dq, dk, dv, None, None


# ---------------------------------------------------------------------------------------------
# cosine attention's q / k normalisation (VAR's attn_l2_norm)

def scaled_l2_normalize(x_BHLc: torch.Tensor, t_1H11: torch.Tensor | None = None, eps: float = 1e-12):
    """``F.normalize(x, dim=-1) * t`` (t: a per-head temperature, or None for 1) in one op.

    The plain-autograd version (``_scaled_l2_normalize_reference``) makes about ten passes over
    the (B, H, L, c) tensor in backward, with the divisor broadcast to full size: ~15% of a
    VAR-d4 training step on CPU. With y = t x / max(|x|, eps), r = t / max(|x|, eps) and
    s = <y, dy> per row, backward is dx = r * (dy - y * s / t^2) and dt = sum(s) / t
    (for |x| <= eps the normaliser is constant and dx = r * dy): three passes."""
    if t_1H11 is None:
        return _ScaledL2Norm.apply(x_BHLc, x_BHLc.new_ones(()), eps)
    return _ScaledL2Norm.apply(x_BHLc, t_1H11, eps)


def _scaled_l2_normalize_reference(x_BHLc, t_1H11=None, eps: float = 1e-12):
    y = F.normalize(x_BHLc, dim=-1, eps=eps)
    return y if t_1H11 is None else y * t_1H11


class _ScaledL2Norm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t, eps):
        n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        r = t / n.clamp_min(eps)
        y = x * r
        ctx.save_for_backward(y, r, t, n > eps)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, r, t, live = ctx.saved_tensors
        s = torch.linalg.vecdot(y, dy).unsqueeze(-1)                 # <y, dy> per row
        dx = (dy - y * (s * live / (t * t))) * r
        dt = None
        if ctx.needs_input_grad[1]:
            dt = (s / t).sum_to_size(t.shape) if t.dim() else (s / t).sum()
        return dx, dt, None
