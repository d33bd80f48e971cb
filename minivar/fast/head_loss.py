"""The head matmul and the cross-entropy fused, without ever holding the (B*L, V) logits.

Replaces: ``F.cross_entropy(head(h), t)`` on materialised logits (``minivar.models.losses.
next_scale_loss``), in ``model.loss`` and ``model(labels, x, targets)``, when
``minivar.fast.enabled.head_loss`` is on.

Why: at 256 px, B16, V 4096 the logits are 16 * 680 * 4096 fp32 = 178 MB, and so is their
gradient. On CPU such buffers are slow twice over: log-softmax and its backward stream them
through memory, and glibc hands every buffer over 32 MB back to the OS after use, so the next step
page-faults it in again. ``linear_cross_entropy`` runs the head matmul and the loss together over
chunks of rows whose logits fit in cache:

    reference:  ce = F.cross_entropy(h @ W.T + b, t, reduction="none")
    here:       ce = linear_cross_entropy(h, W, b, t)      same numbers up to float rounding

Gradients. Row i (logits z_i, p_i = softmax(z_i), upstream gradient g_i) has dz_i = g_i * e_i with
e_i = p_i - onehot(t_i), and dh_i = dz_i W,  dW = sum_i dz_i^T h_i,  db = sum_i dz_i.
When gradients are wanted, forward already has each chunk's softmax in hand, so it computes
E_h = e W (per row) and E_W = sum_i e_i^T h_i, E_b = sum_i e_i right there. Backward then needs no
logits: dh = g * E_h always, and dW = g * E_W, db = g * E_b when g is the same for every row -- the
case of a mean (or sum) loss, i.e. of training. For any other g, backward recomputes each chunk's
logits (one more head matmul) and does the sums with g inside.

Dims: N rows (B*L tokens), C width, V vocabulary, n rows of one chunk.
"""
from __future__ import annotations

import torch

CHUNK_ROWS = 512  # 512 x 4096 fp32 logits = 8 MB: one chunk stays well under glibc's 32 MB mmap line


def linear_cross_entropy(h_NC: torch.Tensor, W_VC: torch.Tensor, b_V: torch.Tensor | None,
                         t_N: torch.Tensor, chunk: int = CHUNK_ROWS):
    """Per-row cross-entropy of the logits ``h @ W.T + b`` against targets t, and whether each
    row's argmax hits its target: (ce_N float, hit_N bool)."""
    if h_NC.dim() != 2 or t_N.shape != h_NC.shape[:1]:
        raise ValueError(f"need h (N, C) and targets (N,), got {tuple(h_NC.shape)} and {tuple(t_N.shape)}")
    return _LinearCrossEntropy.apply(h_NC, W_VC, b_V, t_N, chunk)


def _chunk_logits(h_nC, W_VC, b_V):
    z_nV = h_nC @ W_VC.t() if b_V is None else torch.addmm(b_V, h_nC, W_VC.t())
    return z_nV.to(torch.promote_types(z_nV.dtype, torch.float32))  # bf16 under autocast -> fp32


def _minus_onehot_(p_nV, t_n):
    """p -> p - onehot(t), in place."""
    return p_nV.scatter_add_(1, t_n[:, None], p_nV.new_full((len(t_n), 1), -1.0))


def _add_sums_(dW_VC, db_V, e_nV, h_nC):
    """dW += e^T h and db += sum of e's rows, in place (either may be None)."""
    if dW_VC is not None:
        dW_VC.addmm_(e_nV.t(), h_nC.to(e_nV.dtype))
    if db_V is not None:
        db_V.add_(e_nV.sum(0))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_NC, W_VC, b_V, t_N, chunk):
        dev = h_NC.device.type  # a recomputing backward runs under the same autocast settings
        ctx.amp = (dev, torch.get_autocast_dtype(dev), torch.is_autocast_enabled(dev))
        want_h, want_W = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = b_V is not None and ctx.needs_input_grad[2]
        N = h_NC.shape[0]
        ce_N, lse_N = h_NC.new_empty(N), h_NC.new_empty(N)
        hit_N = torch.empty(N, dtype=torch.bool, device=h_NC.device)
        Eh_NC = torch.empty_like(h_NC) if want_h else None
        EW_VC = torch.zeros_like(W_VC) if want_W else None
        Eb_V = torch.zeros_like(b_V) if want_b else None
        for i in range(0, N, chunk):
            h_nC, t_n, rows = h_NC[i:i + chunk], t_N[i:i + chunk], slice(i, i + chunk)
            z_nV = _chunk_logits(h_nC, W_VC, b_V)
            zmax_n, arg_n = z_nV.max(dim=1)                  # one pass: the max and the argmax
            hit_N[rows] = arg_n == t_n
            z_t = z_nV.gather(1, t_n[:, None])[:, 0]
            p_nV = z_nV.sub_(zmax_n[:, None]).exp_()        # in place: unnormalised softmax
            sum_n = p_nV.sum(1)
            lse_N[rows] = zmax_n + sum_n.log()
            ce_N[rows] = lse_N[rows] - z_t
            if want_h or want_W or want_b:
                e_nV = _minus_onehot_(p_nV.div_(sum_n[:, None]), t_n)   # softmax - onehot(t)
                if want_h:
                    Eh_NC[rows] = e_nV.to(W_VC.dtype) @ W_VC
                _add_sums_(EW_VC, Eb_V, e_nV, h_nC)
        ctx.save_for_backward(h_NC, W_VC, b_V, t_N, lse_N, Eh_NC, EW_VC, Eb_V)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(hit_N)
        return ce_N, hit_N

    @staticmethod
    def backward(ctx, g_N, _g_hit):
        h_NC, W_VC, b_V, t_N, lse_N, Eh_NC, EW_VC, Eb_V = ctx.saved_tensors
        dh_NC = None if Eh_NC is None else Eh_NC * g_N[:, None].to(Eh_NC.dtype)
        if EW_VC is None and Eb_V is None:
            return dh_NC, None, None, None, None
        if bool((g_N == g_N[0]).all()):  # a mean / sum loss: the forward's sums, scaled
            g = g_N[0]
            dW_VC = None if EW_VC is None else EW_VC * g
            db_V = None if Eb_V is None else Eb_V * g
            return dh_NC, dW_VC, db_V, None, None
        dev, dtype, enabled = ctx.amp
        with torch.autocast(dev, dtype=dtype, enabled=enabled):
            dW_VC, db_V = _weighted_sums(h_NC, W_VC, b_V, t_N, lse_N, g_N, ctx.chunk,
                                         EW_VC is not None, Eb_V is not None)
        return dh_NC, dW_VC, db_V, None, None


def _weighted_sums(h_NC, W_VC, b_V, t_N, lse_N, g_N, chunk, want_W, want_b):
    """dW = sum_i g_i e_i^T h_i and db = sum_i g_i e_i for a general g: logits recomputed per chunk."""
    dW_VC = torch.zeros_like(W_VC) if want_W else None
    db_V = torch.zeros_like(b_V) if want_b else None
    for i in range(0, h_NC.shape[0], chunk):
        rows = slice(i, i + chunk)
        p_nV = _chunk_logits(h_NC[rows], W_VC, b_V).sub_(lse_N[rows, None]).exp_()   # softmax
        e_nV = _minus_onehot_(p_nV, t_N[rows]).mul_(g_N[rows, None])
        _add_sums_(dW_VC, db_V, e_nV, h_NC[rows])
    return dW_VC, db_V
