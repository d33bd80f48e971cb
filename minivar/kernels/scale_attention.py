"""Scale attention: flash-style Triton kernels for next-scale models, with a pure-PyTorch twin.

A next-scale sequence holds K token maps (scales) back to back: scale k occupies tokens
``offsets[k]:offsets[k+1]`` of L (offsets = [0, n0, n0+n1, ..., L], n_k = pn_k^2). Two masks:

  mode "causal" (VAR, block-causal): a query of scale k sees every key of scales <= k.
  mode "intra"  (M-VAR, block-diagonal): a query of scale k sees only the keys of scale k
                (bidirectional inside the scale; cross-scale mixing is Mamba2's job).

Both masks have a simple shape: the keys a query row t may see form ONE contiguous range,

  causal: [0, end(t))            intra: [start(t), end(t))      (start/end: bounds of t's scale)

so a block of BLOCK_M query rows needs only the key tiles covering the union of its rows' ranges
(rows are consecutive, so the union is contiguous too). Everything else is skipped: at 256 px
(L = 680) with 64x64 tiles, intra-scale attention visits 49 of the 121 dense tiles, block-causal 85
(see ``visited_key_blocks`` and benchmarks/attention.py). Scales need not line up with the block size:
a block that straddles two scales visits both ranges and masks per element.

Forward = FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023): stream key tiles through
SRAM with an online softmax (running max m, running sum l, rescale the accumulator when m grows),
save log-sum-exp per row. Backward recomputes the probabilities from the saved LSE: one kernel per
key block for dk, dv (loops over the query blocks that see it), one per query block for dq.

Dims: B batch, H heads, L tokens, c head dim, K scales. fp32 / fp16 / bf16 in, fp32 accumulate.
Run ``TRITON_INTERPRET=1 python minivar/kernels/scale_attention.py`` for a CPU self-check.
This file imports only torch and triton.
"""
from __future__ import annotations

import math
import os

import torch

if __name__ == "__main__" and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before any @triton.jit runs

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

MODES = ("causal", "intra")
LOG2E = math.log2(math.e)


# ----------------------------------------------------------------------------- pure-PyTorch twin
def scale_ids(offsets: torch.Tensor) -> torch.Tensor:
    """(L,) int64: index of the scale each token belongs to."""
    offsets = torch.as_tensor(offsets)
    return torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=offsets.device), offsets.diff())


def scale_mask(offsets: torch.Tensor, mode: str) -> torch.Tensor:
    """(L, L) bool, True where query row i may attend to key column j."""
    assert mode in MODES, f"mode must be one of {MODES}, got {mode!r}"
    sid_L = scale_ids(offsets)
    if mode == "intra":
        return sid_L[:, None] == sid_L[None, :]
    return sid_L[None, :] <= sid_L[:, None]


def scale_attention_ref(q, k, v, offsets, mode: str, softmax_scale: float) -> torch.Tensor:
    """Readable reference: explicit (L, L) mask + softmax, computed in fp32, returned in q's dtype."""
    q_BHLc, k_BHLc, v_BHLc = q.float(), k.float(), v.float()
    mask_LL = scale_mask(torch.as_tensor(offsets, device=q.device), mode)
    assert mask_LL.shape[0] == q.shape[2], "offsets[-1] must equal the sequence length L"
    att_BHLL = (q_BHLc @ k_BHLc.transpose(-1, -2)) * softmax_scale
    att_BHLL = att_BHLL.masked_fill(~mask_LL, float("-inf")).softmax(dim=-1)
    return (att_BHLL @ v_BHLc).to(q.dtype)


def visited_key_blocks(offsets, L: int, mode: str, BLOCK_M: int, BLOCK_N: int) -> tuple[int, int]:
    """(visited, dense): how many (query block, key block) tiles the forward kernel visits, from
    the same per-row key ranges it uses, vs. the cdiv(L, BLOCK_M) x cdiv(L, BLOCK_N) dense grid."""
    assert mode in MODES
    offsets = torch.as_tensor(offsets).cpu().long()
    sid_L = scale_ids(offsets)
    end_L = offsets[sid_L + 1]                                           # end of each token's scale
    start_L = offsets[sid_L] if mode == "intra" else torch.zeros_like(end_L)
    visited = 0
    for m0 in range(0, L, BLOCK_M):                                      # one query block at a time
        lo, hi = int(start_L[m0:m0 + BLOCK_M].min()), int(end_L[m0:m0 + BLOCK_M].max())
        visited += triton.cdiv(hi, BLOCK_N) - lo // BLOCK_N
    return visited, triton.cdiv(L, BLOCK_M) * triton.cdiv(L, BLOCK_N)


# ----------------------------------------------------------------------------- Triton kernels
@triton.jit
def _scale_bounds(offsets_ptr, t, n_scales, L, KP: tl.constexpr):
    """start/end of the scale holding each token in t: max offset <= t, min offset > t."""
    j = tl.arange(0, KP)
    offs = tl.load(offsets_ptr + j, mask=j <= n_scales, other=L)  # padded with L (neutral)
    start = tl.max(tl.where(offs[None, :] <= t[:, None], offs[None, :], 0), axis=1)
    end = tl.min(tl.where(offs[None, :] > t[:, None], offs[None, :], L), axis=1)
    return start, end


@triton.jit
def _fwd_kernel(Q, K, V, O, LSE, TILES, offsets_ptr, qk_scale, L, n_scales,
                CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                HEAD_DIM: tl.constexpr, KP: tl.constexpr, PRECISION: tl.constexpr):
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    base = bh.to(tl.int64) * L * HEAD_DIM                    # this (batch, head)'s (L, c) slab
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    # Each row's key range [row_lo, row_hi); the block visits the key tiles covering their union.
    # Padding rows (>= L) borrow row L-1's range so they do not widen the union.
    row_lo, row_hi = _scale_bounds(offsets_ptr, tl.minimum(rows, L - 1), n_scales, L, KP)
    if CAUSAL:
        row_lo = tl.zeros_like(row_lo)
    key_lo = (tl.min(row_lo, axis=0) // BLOCK_N) * BLOCK_N
    key_hi = tl.max(row_hi, axis=0)

    q = tl.load(Q + base + rows[:, None] * HEAD_DIM + d[None, :], mask=rows[:, None] < L, other=0.0)
    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)            # running max (log2 units); finite, so
    l_i = tl.zeros([BLOCK_M], tl.float32)                    # a fully masked tile gives alpha = 1
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    n_tiles = 0
    for start_n in range(key_lo, key_hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kT = tl.load(K + base + cols[None, :] * HEAD_DIM + d[:, None], mask=cols[None, :] < L, other=0.0)
        s = tl.dot(q, kT, input_precision=PRECISION) * qk_scale          # (BLOCK_M, BLOCK_N)
        allowed = (cols[None, :] >= row_lo[:, None]) & (cols[None, :] < row_hi[:, None])
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)                    # rescale what was summed so far
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + base + cols[:, None] * HEAD_DIM + d[None, :], mask=cols[:, None] < L, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
        n_tiles += 1
    out = acc / l_i[:, None]
    tl.store(O + base + rows[:, None] * HEAD_DIM + d[None, :], out.to(O.dtype.element_ty), mask=rows[:, None] < L)
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453    # natural-log log-sum-exp of the row
    tl.store(LSE + bh.to(tl.int64) * L + rows, lse, mask=rows < L)
    tl.store(TILES + bh * tl.num_programs(0) + pid_m, n_tiles)  # instrumentation: tiles visited


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, TILES, offsets_ptr, qk_scale, softmax_scale, L, n_scales,
                   CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_DIM: tl.constexpr, KP: tl.constexpr, PRECISION: tl.constexpr):
    """dq = softmax_scale * sum_j ds_ij k_j with ds = p * (dp - delta), dp = do v^T. Same tiles as fwd."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    base = bh.to(tl.int64) * L * HEAD_DIM
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    row_lo, row_hi = _scale_bounds(offsets_ptr, tl.minimum(rows, L - 1), n_scales, L, KP)
    if CAUSAL:
        row_lo = tl.zeros_like(row_lo)
    key_lo = (tl.min(row_lo, axis=0) // BLOCK_N) * BLOCK_N
    key_hi = tl.max(row_hi, axis=0)

    row_ok = rows < L
    q = tl.load(Q + base + rows[:, None] * HEAD_DIM + d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + base + rows[:, None] * HEAD_DIM + d[None, :], mask=row_ok[:, None], other=0.0)
    lse2 = tl.load(LSE + bh.to(tl.int64) * L + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + bh.to(tl.int64) * L + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    n_tiles = 0
    for start_n in range(key_lo, key_hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kT = tl.load(K + base + cols[None, :] * HEAD_DIM + d[:, None], mask=cols[None, :] < L, other=0.0)
        vT = tl.load(V + base + cols[None, :] * HEAD_DIM + d[:, None], mask=cols[None, :] < L, other=0.0)
        s = tl.dot(q, kT, input_precision=PRECISION) * qk_scale
        allowed = (cols[None, :] >= row_lo[:, None]) & (cols[None, :] < row_hi[:, None])
        p = tl.where(allowed, tl.math.exp2(s - lse2[:, None]), 0.0)      # probabilities, recomputed
        dp = tl.dot(do, vT, input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision=PRECISION)
        n_tiles += 1
    tl.store(DQ + base + rows[:, None] * HEAD_DIM + d[None, :], (dq * softmax_scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])
    tl.store(TILES + bh * tl.num_programs(0) + pid_m, n_tiles)


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, TILES, offsets_ptr, qk_scale, softmax_scale, L, n_scales,
                     CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     HEAD_DIM: tl.constexpr, KP: tl.constexpr, PRECISION: tl.constexpr):
    """dv = sum_i p_ij do_i, dk = softmax_scale * sum_i ds_ij q_i, per key block, computed transposed.

    The mask seen from a key column j is one contiguous query range too:
    causal: [start(j), L) (later scales see j), intra: [start(j), end(j))."""
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    base = bh.to(tl.int64) * L * HEAD_DIM
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    col_lo, col_hi = _scale_bounds(offsets_ptr, tl.minimum(cols, L - 1), n_scales, L, KP)
    if CAUSAL:
        col_hi = tl.zeros_like(col_hi) + L
    query_lo = (tl.min(col_lo, axis=0) // BLOCK_M) * BLOCK_M
    query_hi = tl.max(col_hi, axis=0)

    col_ok = cols < L
    k = tl.load(K + base + cols[:, None] * HEAD_DIM + d[None, :], mask=col_ok[:, None], other=0.0)
    v = tl.load(V + base + cols[:, None] * HEAD_DIM + d[None, :], mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    n_tiles = 0
    for start_m in range(query_lo, query_hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        qT = tl.load(Q + base + rows[None, :] * HEAD_DIM + d[:, None], mask=rows[None, :] < L, other=0.0)
        do = tl.load(DO + base + rows[:, None] * HEAD_DIM + d[None, :], mask=rows[:, None] < L, other=0.0)
        lse2 = tl.load(LSE + bh.to(tl.int64) * L + rows, mask=rows < L, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + bh.to(tl.int64) * L + rows, mask=rows < L, other=0.0)
        sT = tl.dot(k, qT, input_precision=PRECISION) * qk_scale        # (BLOCK_N, BLOCK_M)
        allowed = (rows[None, :] >= col_lo[:, None]) & (rows[None, :] < col_hi[:, None])
        pT = tl.where(allowed, tl.math.exp2(sT - lse2[None, :]), 0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=PRECISION)
        dpT = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision=PRECISION)
        n_tiles += 1
    tl.store(DK + base + cols[:, None] * HEAD_DIM + d[None, :], (dk * softmax_scale).to(DK.dtype.element_ty),
             mask=col_ok[:, None])
    tl.store(DV + base + cols[:, None] * HEAD_DIM + d[None, :], dv.to(DV.dtype.element_ty), mask=col_ok[:, None])
    tl.store(TILES + bh * tl.num_programs(0) + pid_n, n_tiles)


# ----------------------------------------------------------------------------- launchers
def default_blocks(device: torch.device) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): 64x64 on a GPU; 16x16 under the CPU interpreter (cost ~ tiles visited)."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1" or torch.device(device).type != "cuda"
    return (16, 16) if interpreted else (64, 64)


def _launch_args(q, offsets, mode, block_m, block_n):
    assert mode in MODES, f"mode must be one of {MODES}, got {mode!r}"
    B, H, L, c = q.shape
    assert c >= 16 and c & (c - 1) == 0, f"head dim must be a power of two >= 16, got {c}"
    offsets = torch.as_tensor(offsets, dtype=torch.int32, device=q.device).contiguous()
    if offsets.device.type == "cpu":
        assert int(offsets[-1]) == L, f"offsets end at {int(offsets[-1])} but L = {L}"
    dflt_m, dflt_n = default_blocks(q.device)
    block_m, block_n = block_m or dflt_m, block_n or dflt_n
    meta = dict(CAUSAL=mode == "causal", BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=c,
                KP=triton.next_power_of_2(offsets.numel()),
                PRECISION="ieee" if q.dtype == torch.float32 else "tf32")  # exact fp32, no TF32
    if q.is_cuda:
        meta.update(num_warps=4, num_stages=2)
    return offsets, offsets.numel() - 1, meta


def scale_attention_forward(q, k, v, offsets, mode, softmax_scale, block_m=None, block_n=None):
    """Forward kernel. Returns out (B,H,L,c), lse (B,H,L) fp32, tiles (B,H,cdiv(L,BLOCK_M)) int32:
    how many key tiles each query block's program visited (instrumentation for tests)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, H, L, c = q.shape
    offsets, n_scales, meta = _launch_args(q, offsets, mode, block_m, block_n)
    grid = (triton.cdiv(L, meta["BLOCK_M"]), B * H)
    o = torch.empty_like(q)
    lse = torch.empty((B, H, L), device=q.device, dtype=torch.float32)
    tiles = torch.zeros((B, H, grid[0]), device=q.device, dtype=torch.int32)
    _fwd_kernel[grid](q, k, v, o, lse, tiles, offsets, softmax_scale * LOG2E, L, n_scales, **meta)
    return o, lse, tiles


def scale_attention_backward(do, q, k, v, o, lse, offsets, mode, softmax_scale, block_m=None, block_n=None):
    """Backward kernels. Returns dq, dk, dv and the tiles visited by the dq and dk/dv programs."""
    do, q, k, v = do.contiguous(), q.contiguous(), k.contiguous(), v.contiguous()
    B, H, L, c = q.shape
    offsets, n_scales, meta = _launch_args(q, offsets, mode, block_m, block_n)
    delta = (do.float() * o.float()).sum(-1)                 # (B,H,L): rowsum(dO * O) = sum_j p_ij dp_ij
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    grid_m, grid_n = (triton.cdiv(L, meta["BLOCK_M"]), B * H), (triton.cdiv(L, meta["BLOCK_N"]), B * H)
    tiles_dq = torch.zeros((B, H, grid_m[0]), device=q.device, dtype=torch.int32)
    tiles_dkdv = torch.zeros((B, H, grid_n[0]), device=q.device, dtype=torch.int32)
    qk_scale = softmax_scale * LOG2E
    _bwd_dq_kernel[grid_m](q, k, v, do, lse, delta, dq, tiles_dq, offsets, qk_scale, softmax_scale,
                           L, n_scales, **meta)
    _bwd_dkdv_kernel[grid_n](q, k, v, do, lse, delta, dk, dv, tiles_dkdv, offsets, qk_scale, softmax_scale,
                             L, n_scales, **meta)
    return dq, dk, dv, tiles_dq, tiles_dkdv


class ScaleAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, offsets, mode, softmax_scale, block_m=None, block_n=None):
        o, lse, _ = scale_attention_forward(q, k, v, offsets, mode, softmax_scale, block_m, block_n)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.offsets, ctx.cfg = offsets, (mode, softmax_scale, block_m, block_n)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv, _, _ = scale_attention_backward(do, q, k, v, o, lse, ctx.offsets, *ctx.cfg)
        return dq, dk, dv, None, None, None, None, None


def scale_attention(q, k, v, offsets, mode: str, softmax_scale: float, block_m=None, block_n=None):
    """Differentiable scale attention. q, k, v: (B, H, L, c); offsets: (K+1,) int32 cumulative token
    counts; mode "causal" (VAR) or "intra" (M-VAR); softmax_scale multiplies q k^T (1.0 when the
    caller already l2-normalised q, k and applied a temperature). Returns (B, H, L, c) in q's dtype."""
    return ScaleAttention.apply(q, k, v, offsets, mode, softmax_scale, block_m, block_n)


# ----------------------------------------------------------------------------- self-check
if __name__ == "__main__":
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    offsets = torch.tensor([0, 1, 5, 14, 30], dtype=torch.int32)  # schedule (1, 2, 3, 4)
    for mode in MODES:
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            q_BHLc, k_BHLc, v_BHLc = (torch.randn(2, 2, 30, 16, device=device, dtype=dtype, requires_grad=True)
                                      for _ in range(3))
            do_BHLc = torch.randn_like(q_BHLc)
            out = scale_attention(q_BHLc, k_BHLc, v_BHLc, offsets, mode, 0.25)
            grads = torch.autograd.grad(out, (q_BHLc, k_BHLc, v_BHLc), do_BHLc)
            ref = scale_attention_ref(*(t.float() for t in (q_BHLc, k_BHLc, v_BHLc)), offsets, mode, 0.25)
            ref_grads = torch.autograd.grad(ref, (q_BHLc, k_BHLc, v_BHLc), do_BHLc.float())
            errs = [(a.float() - b.float()).abs().max().item() for a, b in zip((out, *grads), (ref, *ref_grads))]
            print(f"{mode:6s} {str(dtype):13s} max|err| out {errs[0]:.2e} dq {errs[1]:.2e} "
                  f"dk {errs[2]:.2e} dv {errs[3]:.2e}  {'ok' if max(errs) <= tol else 'FAIL'}")
            assert max(errs) <= tol
