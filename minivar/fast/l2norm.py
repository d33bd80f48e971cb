"""Cosine attention's q / k normalisation with a temperature, as one op with a three-pass backward.

Replaces: ``F.normalize(x, dim=-1) * t`` (``minivar.models.attention.l2_normalize``'s plain path),
when ``minivar.fast.enabled.l2_normalize`` is on.

Why: the plain-autograd version makes about ten passes over the (B, H, L, c) tensor in backward,
with the divisor broadcast to full size: ~15% of a VAR-d4 training step on CPU. Tested equal in
tests/test_model.py.
"""
from __future__ import annotations

import torch


def scaled_l2_normalize(x_BHLc: torch.Tensor, t_1H11: torch.Tensor | None = None, eps: float = 1e-12):
    """``F.normalize(x, dim=-1) * t`` (t: a per-head temperature, or None for 1) in one op.

    With y = t x / max(|x|, eps), r = t / max(|x|, eps) and
    s = <y, dy> per row, backward is dx = r * (dy - y * s / t^2) and dt = sum(s) / t
    (for |x| <= eps the normaliser is constant and dx = r * dy): three passes."""
    if t_1H11 is None:
        return _ScaledL2Norm.apply(x_BHLc, x_BHLc.new_ones(()), eps)
    return _ScaledL2Norm.apply(x_BHLc, t_1H11, eps)


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
