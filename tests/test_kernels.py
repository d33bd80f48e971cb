"""Scale-attention Triton kernels (minivar/kernels/scale_attention.py) vs. their pure-PyTorch twin.

Runs on CPU under the Triton interpreter (TRITON_INTERPRET=1, set in conftest.py). The interpreter
costs ~8 ms per program x loop iteration, so shapes are tiny and the matrix is picked, not full.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
from minivar.kernels.scale_attention import (  # noqa: E402
    MODES, scale_attention, scale_attention_backward, scale_attention_forward, scale_attention_ref,
    scale_mask, visited_key_blocks)

SCHEDULES = {
    "16px": (1, 2, 3, 4),                        # offsets [0, 1, 5, 14, 30]
    "32px": (1, 2, 3, 4, 6, 8),                  # L = 130: scale 5 spans four 16-token blocks
    "straddle": (1, 3, 5),                       # offsets [0, 1, 10, 35]: block 0 holds 3 scales
    "256": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),    # L = 680
    "512": (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),   # L = 2240
}
TOL = {torch.float32: 1e-5, torch.float16: 2e-3}


def offsets_of(schedule):
    return torch.tensor([0, *itertools.accumulate(p * p for p in SCHEDULES[schedule])], dtype=torch.int32)


def make_qkv(B, H, L, c, dtype, l2norm):
    """l2norm=True: VAR's attn_l2_norm path (unit q, k; q times a per-head temperature; scale 1).
    Otherwise plain randn inputs and the usual 1/sqrt(c) scale."""
    q, k, v = (torch.randn(B, H, L, c) for _ in range(3))
    if l2norm:
        temperature_H11 = torch.linspace(4.0, 12.0, H)[:, None, None]
        q, k, scale = F.normalize(q, dim=-1) * temperature_H11, F.normalize(k, dim=-1), 1.0
    else:
        scale = c ** -0.5
    return [t.to(dtype).requires_grad_() for t in (q, k, v)], scale


def max_err(a, b):
    """Max abs error, relative to the reference's magnitude when that exceeds 1 (fp16 rounding)."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1.0)).item()


# (schedule, B, H, c, l2norm, block_m, block_n); None = the default blocks (16 x 16 on CPU)
CASES = [
    ("16px", 2, 2, 16, False, None, None),
    ("16px", 2, 1, 64, True, None, None),
    ("32px", 1, 1, 32, True, None, None),
    ("straddle", 2, 1, 16, True, 32, 16),
    ("straddle", 1, 2, 32, False, 16, 32),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-B{c[1]}H{c[2]}c{c[3]}-{'l2' if c[4] else 'plain'}"
                         + (f"-blk{c[5]}x{c[6]}" if c[5] else ""))
def test_forward_backward_match_ref(case, mode, dtype):
    schedule, B, H, c, l2norm, block_m, block_n = case
    offsets = offsets_of(schedule)
    (q, k, v), scale = make_qkv(B, H, int(offsets[-1]), c, dtype, l2norm)
    do = torch.randn_like(q)

    out = scale_attention(q, k, v, offsets, mode, scale, block_m, block_n)
    grads = torch.autograd.grad(out, (q, k, v), do)
    # the twin runs in fp32 on the same (possibly fp16) inputs
    ref = scale_attention_ref(q.float(), k.float(), v.float(), offsets, mode, scale)
    ref_grads = torch.autograd.grad(ref, (q, k, v), do.float())

    assert out.dtype == dtype and out.shape == q.shape
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
        assert a.dtype == dtype
        assert max_err(a, b) <= TOL[dtype], f"{name}: {max_err(a, b):.2e}"


def test_lse_and_fully_masked_first_tile():
    """The saved log-sum-exp is the row's logsumexp over its allowed keys. With 16x16 tiles on the
    'straddle' schedule, intra rows 10..15 (scale 2) start inside tile 0 whose first 10 keys they
    must not see: a partly masked tile; rows 16..34 never touch tile 0."""
    offsets = offsets_of("straddle")
    (q, k, v), scale = make_qkv(1, 2, 35, 16, torch.float32, False)
    for mode in MODES:
        out, lse, _ = scale_attention_forward(q, k, v, offsets, mode, scale)
        s = (q @ k.transpose(-1, -2) * scale).masked_fill(~scale_mask(offsets, mode), float("-inf"))
        torch.testing.assert_close(lse, s.logsumexp(-1), atol=1e-5, rtol=0)
        torch.testing.assert_close(out, scale_attention_ref(q, k, v, offsets, mode, scale), atol=1e-5, rtol=0)


def test_strided_inputs():
    """q, k, v as views of one packed qkv projection (B, L, 3, H, c), as a model makes them."""
    offsets = offsets_of("16px")
    qkv = torch.randn(2, 30, 3, 2, 16, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)              # 3 x (B, H, L, c), not contiguous
    for mode in MODES:
        out = scale_attention(q, k, v, offsets, mode, 0.25)
        (g,) = torch.autograd.grad(out.square().sum(), qkv)
        ref = scale_attention_ref(q, k, v, offsets, mode, 0.25)
        (g_ref,) = torch.autograd.grad(ref.square().sum(), qkv)
        assert max_err(out, ref) <= 1e-5 and max_err(g, g_ref) <= 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_ref_matches_sdpa(mode):
    """The twin itself vs. torch's SDPA with a boolean mask (True = may attend) from the offsets."""
    for schedule in ("16px", "32px", "straddle"):
        offsets = offsets_of(schedule)
        L = int(offsets[-1])
        q, k, v = (torch.randn(2, 3, L, 32) for _ in range(3))
        sid = torch.repeat_interleave(torch.arange(len(SCHEDULES[schedule])), offsets.diff().long())
        mask = (sid[:, None] == sid[None, :]) if mode == "intra" else (sid[None, :] <= sid[:, None])
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
        torch.testing.assert_close(scale_attention_ref(q, k, v, offsets, mode, 0.3), want, atol=1e-5, rtol=1e-5)


def test_mask_pair_counts():
    """Allowed (query, key) pairs at 256 px (README, "Scale schedules"): 286,434 block-causal, 110,468 intra."""
    offsets = offsets_of("256")
    assert int(scale_mask(offsets, "causal").sum()) == 286_434
    assert int(scale_mask(offsets, "intra").sum()) == 110_468


def nonempty_tiles(offsets, mode, block_m, block_n):
    """Tiles of the dense mask that hold at least one allowed pair: what any exact kernel must visit."""
    mask = scale_mask(offsets, mode)
    L = mask.shape[0]
    pad = F.pad(mask, (0, -L % block_n, 0, -L % block_m))
    return int(pad.reshape(pad.shape[0] // block_m, block_m, -1, block_n).any(3).any(1).sum())


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_visited_key_blocks_is_exactly_the_nonempty_tiles(schedule):
    """The per-query-block key ranges waste no tile: every visited tile holds an allowed pair."""
    offsets = offsets_of(schedule)
    L = int(offsets[-1])
    for mode, (bm, bn) in itertools.product(MODES, [(16, 16), (32, 16), (16, 64), (64, 64), (128, 64)]):
        visited, dense = visited_key_blocks(offsets, L, mode, bm, bn)
        assert visited == nonempty_tiles(offsets, mode, bm, bn)
        assert dense == -(-L // bm) * -(-L // bn)


def test_skipping_at_256px():
    """256 px, 64x64 tiles: intra visits 49 tiles, causal 85, dense 121 (and at 16x16: 523 / 1186 / 1849)."""
    offsets = offsets_of("256")
    assert [visited_key_blocks(offsets, 680, m, 64, 64) for m in ("intra", "causal")] == [(49, 121), (85, 121)]
    intra, _ = visited_key_blocks(offsets, 680, "intra", 16, 16)
    causal, dense = visited_key_blocks(offsets, 680, "causal", 16, 16)
    assert intra < 0.3 * dense and causal < 0.65 * dense and intra < 0.5 * causal


@pytest.mark.parametrize("schedule,block_m,block_n", [("straddle", 16, 16), ("32px", 32, 16), ("256", 64, 64)])
def test_kernels_visit_only_those_tiles(schedule, block_m, block_n):
    """Instrumented: each program counts the tiles its loop runs (at 256 px far fewer than dense;
    the tiny "straddle" schedule needs all 9). Forward and dq programs (one per
    query block) must total visited_key_blocks; dk/dv programs (one per key block) must total the
    non-empty tiles seen column-wise, which is the same set. Results stay exact meanwhile."""
    offsets = offsets_of(schedule)
    L = int(offsets[-1])
    (q, k, v), scale = make_qkv(1, 1, L, 16, torch.float32, True)
    do = torch.randn_like(q)
    for mode in MODES:
        visited, dense = visited_key_blocks(offsets, L, mode, block_m, block_n)
        out, lse, tiles_fwd = scale_attention_forward(q, k, v, offsets, mode, scale, block_m, block_n)
        dq, dk, dv, tiles_dq, tiles_dkdv = scale_attention_backward(
            do, q, k, v, out, lse, offsets, mode, scale, block_m, block_n)
        assert int(tiles_fwd.sum()) == int(tiles_dq.sum()) == visited <= dense
        assert int(tiles_dkdv.sum()) == nonempty_tiles(offsets, mode, block_m, block_n) == visited
        ref = scale_attention_ref(q, k, v, offsets, mode, scale)
        ref_grads = torch.autograd.grad(ref, (q, k, v), do)
        for a, b in zip((out, dq, dk, dv), (ref, *ref_grads)):
            assert max_err(a, b) <= 1e-5
