"""Mamba2's causal depthwise conv1d as W shifted multiply-adds, with a hand-written backward.

Replaces: ``F.conv1d(x, w[:, None], b, groups=K)`` over the left-padded sequence (the plain path of
``minivar.models.mamba2.causal_depthwise_conv``), when ``minivar.fast.enabled.causal_conv`` is on.

Why: on CPU, PyTorch's depthwise conv1d backward took over a third of an M-VAR-d4 training step
at B16, and plain autograd through shifted views (``shifted_views_conv``, the same
sum written out) zero-fills a full-size gradient per tap. Tested equal to ``F.conv1d`` in float64
(tests/test_mamba2.py).

Dims: B batch, T = L + W - 1 padded time, L output time, K channels, W taps.
"""
from __future__ import annotations

import torch
from torch import Tensor


def causal_depthwise_conv(x_BTK: Tensor, w_KW: Tensor, b_K: Tensor | None) -> Tensor:
    """Depthwise conv1d over time, already left-padded: T = L + W - 1 in, L out, (B, T, K) layout."""
    return _CausalConv.apply(x_BTK, w_KW, b_K)


def shifted_views_conv(x_BTK, w_KW, b_K):
    """The same sum with plain autograd through shifted views: the middle step between ``F.conv1d``
    and ``_CausalConv``, kept for the tests that compare all three."""
    W = w_KW.shape[1]
    L = x_BTK.shape[1] - W + 1
    y_BLK = x_BTK[:, :L] * w_KW[:, 0]
    for k in range(1, W):
        y_BLK = y_BLK + x_BTK[:, k:k + L] * w_KW[:, k]
    return y_BLK if b_K is None else y_BLK + b_K


class _CausalConv(torch.autograd.Function):
    """y_l = b + sum_k w_k x_{l+k};  dx_{l+k} += w_k dy_l;  dw_k = sum_{b,l} dy_l x_{l+k};  db = sum dy."""

    @staticmethod
    def forward(ctx, x_BTK, w_KW, b_K):
        W = w_KW.shape[1]
        L = x_BTK.shape[1] - W + 1
        y_BLK = x_BTK[:, :L] * w_KW[:, 0]
        for k in range(1, W):
            y_BLK.addcmul_(x_BTK[:, k:k + L], w_KW[:, k])
        if b_K is not None:
            y_BLK.add_(b_K)
        ctx.save_for_backward(x_BTK, w_KW)
        ctx.has_bias = b_K is not None
        return y_BLK

    @staticmethod
    def backward(ctx, dy_BLK):
        x_BTK, w_KW = ctx.saved_tensors
        W, L = w_KW.shape[1], dy_BLK.shape[1]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = x_BTK.new_zeros(x_BTK.shape)
            for k in range(W):
                dx[:, k:k + L].addcmul_(dy_BLK, w_KW[:, k])
        if ctx.needs_input_grad[1]:
            dw = torch.stack([torch.linalg.vecdot(dy_BLK, x_BTK[:, k:k + L], dim=1).sum(0) for k in range(W)], dim=1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy_BLK.sum((0, 1))
        return dx, dw, db
