"""Per-scale attention on CPU with a hand-written backward.

Replaces: ``minivar.models.attention.blocks_attention`` (one unmasked SDPA call per scale, plain
autograd), on CPU, when ``minivar.fast.enabled.attention_backward`` is on.

Why: in plain autograd every scale's slices q[:, :, b:e], k[:, :, :e] and v[:, :, :e] send back a
zero-filled full-size gradient each, summed by the engine: 30 fills and adds of (B, H, L, c) per
layer, ~8% of a VAR-d4 training step. Here each scale's gradient is written (q) or added (k, v)
into its own slice of one buffer, with PyTorch's own CPU flash-attention kernels (private aten
ops) forward and backward: the same kernels as ``blocks_attention`` runs, the same numbers.
Tested equal in tests/test_model.py.
"""
from __future__ import annotations

import functools

import torch


def blocks_attention_cpu(q_BHLc, k_BHLc, v_BHLc, spans, scale):
    """``blocks_attention`` with the backward below; None when this torch lacks the CPU flash ops."""
    if _cpu_flash_ops() is None:
        return None
    return _CPUBlocks.apply(q_BHLc, k_BHLc, v_BHLc, spans, scale)


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
    """Forward: one flash call per scale into slices of one output. Backward: each scale's
    gradient written (q) or added (k, v) into its slice of one buffer."""

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
