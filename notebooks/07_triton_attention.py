# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Writing the Triton attention kernel
#
# **You will learn** how `minivar/kernels/scale_attention.py` computes VAR's block-causal and M-VAR's
# intra-scale attention without ever building the L × L mask: every query sees *one contiguous
# range* of keys, so a FlashAttention-style kernel (Dao et al. 2022; FlashAttention-2, 2023) can
# skip every tile outside it. You will compute the ranges, draw which tiles are visited, write
# the online softmax in PyTorch, and run the real Triton kernel — forward and backward — under
# Triton's CPU interpreter, checking it against the plain PyTorch reference.
#
# **This notebook needs** a CPU (Triton runs in interpreter mode, `TRITON_INTERPRET=1`) and
# about 30 seconds. On a GPU the same cells compile the kernel for real.

# %% tags=["setup"]
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before the first @triton.jit runs

import time

import matplotlib.pyplot as plt
import numpy as np
import torch.nn.functional as F

from minivar import scales
from minivar.kernels import scale_attention as sa

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72})
device = "cuda" if torch.cuda.is_available() else "cpu"

# %% [markdown]
# ## 1. One contiguous key range per query
#
# Look at a row of either mask from notebook 01: the allowed keys are never scattered.
#
# * block-causal (VAR): query t of scale k sees keys `[0, end_k)`;
# * intra-scale (M-VAR): query t of scale k sees keys `[start_k, end_k)`.
#
# So a kernel only needs the scale offsets, not a mask. Checked on every row of the 256 px
# schedule:

# %%
pns = scales.PRESETS["256"]
offs = scales.offsets(pns)
sid = scales.scale_ids(pns)
for mode, mask in (("causal", scales.block_causal_mask(pns)), ("intra", scales.block_diagonal_mask(pns))):
    ok = True
    for t in range(offs[-1]):
        k = int(sid[t])
        ### BEGIN DERIVATION (exercise 1 asks for it; the student copy runs the #> line instead)
        lo, hi = (0 if mode == "causal" else offs[k]), offs[k + 1]
        ### END DERIVATION
        #> lo, hi = int(mask[t].nonzero()[0]), int(mask[t].nonzero()[-1]) + 1  # exercise 1: from the offsets
        want = torch.zeros(offs[-1], dtype=torch.bool)
        want[lo:hi] = True
        ok &= torch.equal(mask[t], want)
    print(f"{mode:>6}: every row of the mask is one range [lo, hi): {ok}")

# %% [markdown]
# ## 2. Tiles
#
# A flash kernel gives each program a block of BLOCK_M consecutive queries and streams the keys
# through fast memory in tiles of BLOCK_N. Consecutive queries have ranges whose union is again
# one range, so the program visits only the key tiles that cover it. At 256 px (L = 680) with
# 64 × 64 tiles, dark = visited:

# %%
def visit_map(mode, BM=64, BN=64):
    n_m, n_n = -(-offs[-1] // BM), -(-offs[-1] // BN)
    m = np.zeros((n_m, n_n))
    for i in range(n_m):
        rows = range(i * BM, min((i + 1) * BM, offs[-1]))
        lo = min(0 if mode == "causal" else offs[int(sid[t])] for t in rows)
        hi = max(offs[int(sid[t]) + 1] for t in rows)
        m[i, lo // BN: -(-hi // BN)] = 1
    return m


fig, axes = plt.subplots(1, 2, figsize=(6, 3))
for ax, mode in zip(axes, ("causal", "intra")):
    vm = visit_map(mode)
    visited, dense = sa.visited_key_blocks(offs, offs[-1], mode, 64, 64)
    assert vm.sum() == visited
    ax.imshow(vm, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_title(f"{mode}: {visited} of {dense} tiles", fontsize=9)
    ax.set_xlabel("key tile"), ax.set_ylabel("query tile")
plt.show()

# %% [markdown]
# Tiles that straddle two scales are visited and masked element by element — that is why the
# counts are a bit above the fraction of allowed pairs (62% causal, 24% intra at 256 px).

# %% [markdown]
# ## 3. The online softmax, in PyTorch
#
# Inside a program, keys arrive tile by tile, so the softmax cannot see a whole row at once.
# FlashAttention keeps, per query row, a running max m, a running sum l of exp(s − m) and an
# accumulator of exp(s − m)·v; when a new tile raises the max, the old sums are rescaled by
# exp(m_old − m_new). At the end, out = acc / l. Here for one block of queries (scale 9 at
# 256 px, intra mode) with tiles of 64 keys:

# %%
c = 16
q, k, v = (torch.randn(offs[-1], c) for _ in range(3))
scale = c ** -0.5
rows = torch.arange(offs[-2], offs[-1])            # scale 9's queries
lo, hi = offs[-2], offs[-1]                        # their key range (intra)

m_i = torch.full((len(rows),), -float("inf"))
l_i = torch.zeros(len(rows))
acc = torch.zeros(len(rows), c)
for start in range(lo // 64 * 64, hi, 64):
    cols = torch.arange(start, min(start + 64, offs[-1]))
    s = (q[rows] @ k[cols].T) * scale
    s = s.masked_fill(~((cols[None] >= lo) & (cols[None] < hi)), -float("inf"))
    m_new = torch.maximum(m_i, s.max(1).values)
    alpha = torch.exp(m_i - m_new)                 # rescale what was summed so far
    p = torch.exp(s - m_new[:, None])
    l_i = l_i * alpha + p.sum(1)
    acc = acc * alpha[:, None] + p @ v[cols]
    m_i = m_new
online = acc / l_i[:, None]
full = F.scaled_dot_product_attention(q[rows][None], k[lo:hi][None], v[lo:hi][None], scale=scale)[0]
print("online softmax over tiles == softmax over the whole range:", torch.allclose(online, full, atol=1e-5))

# %% [markdown]
# The Triton kernel `_fwd_kernel` is this loop, with three changes: it works in base 2
# (`exp2`, the scale pre-multiplied by log2 e), it uses a large finite number instead of −∞ for
# the initial max (so a fully masked tile gives alpha = 1, not NaN), and it saves the row's
# log-sum-exp so the backward pass can recompute the probabilities instead of storing them.
# Read it now: `minivar/kernels/scale_attention.py`, from `_scale_bounds` (each token's scale range,
# found by comparing t with the offsets) to the `for start_n in range(key_lo, key_hi, BLOCK_N)`
# loop.

# %% [markdown]
# ## 4. Running the kernel (interpreted on CPU)
#
# Under `TRITON_INTERPRET=1` every program runs in Python with NumPy — about 8 ms per program and
# loop iteration — so we use the 32 px schedule (1, 2, 3, 4, 6, 8) (L = 130) and 16 × 16 tiles.
# Forward against the reference, and the number of key tiles each query block visited:

# %%
small = scales.PRESETS["32px"]
offs_t = torch.tensor(scales.offsets(small), dtype=torch.int32)
L = int(offs_t[-1])
torch.manual_seed(0)
q, k, v = (torch.randn(1, 2, L, 16, device=device, requires_grad=True) for _ in range(3))
for mode in sa.MODES:
    out, lse, tiles = sa.scale_attention_forward(q, k, v, offs_t, mode, 0.25, 16, 16)
    ref = sa.scale_attention_ref(q, k, v, offs_t, mode, 0.25)
    visited, dense = sa.visited_key_blocks(offs_t, L, mode, 16, 16)
    print(f"{mode:>6}: max |kernel - reference| < 1e-5: {(out - ref).abs().max().item() < 1e-5}; "
          f"tiles per query block {tiles[0, 0].tolist()} ({visited} of {dense})")

# %% [markdown]
# And the backward kernels (one program per query block for dq, one per key block for dk and
# dv), through `torch.autograd`:

# %%
do = torch.randn_like(q)
for mode in sa.MODES:
    grads = torch.autograd.grad(sa.scale_attention(q, k, v, offs_t, mode, 0.25), (q, k, v), do)
    ref_grads = torch.autograd.grad(sa.scale_attention_ref(q, k, v, offs_t, mode, 0.25), (q, k, v), do)
    err = max((a - b).abs().max().item() for a, b in zip(grads, ref_grads))
    print(f"{mode:>6}: dq, dk, dv match the reference (max error < 1e-5): {err < 1e-5}")

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.perf_counter()
sa.scale_attention_forward(q, k, v, offs_t, "causal", 0.25, 16, 16)
print(f"one interpreted forward: {(time.perf_counter() - t0) * 1000:.0f} ms "
      f"({'compiled on GPU' if device == 'cuda' else 'NumPy interpreter'})")

# %% [markdown]
# In the model, `attn_backend="triton"` routes the attention of every block through this kernel
# (the default `"auto"` picks it on CUDA and the masked-free per-scale SDPA calls, `"blocks"`, on
# CPU). A tiny M-VAR-free check: a depth-1 VAR with head dim 16 gives the same logits either way.

# %%
from minivar.models import ModelConfig, NextScaleTransformer

logits = {}
for backend in ("blocks", "triton"):
    torch.manual_seed(0)
    m = NextScaleTransformer(ModelConfig(mixer="var", depth=1, width=32, heads=2, num_classes=2, vocab_size=16,
                                         z_channels=4, patch_nums=small, drop_path=0.0, attn_backend=backend)).eval()
    with torch.no_grad():
        logits[backend] = m(torch.tensor([0, 1]), torch.randn(2, L - 1, 4, generator=torch.Generator().manual_seed(1)))
print("triton backend == blocks backend:", torch.allclose(logits["blocks"], logits["triton"], atol=1e-5))

# %% [markdown]
# ## 5. Exercises
#
# `my_key_range(offsets, t, mode)` returns the pair `(lo, hi)` of the keys query t may see
# (hi exclusive), for `mode` "causal" or "intra" — what `_scale_bounds` computes inside the
# kernel.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb07-key-range", "locked": false, "schema_version": 3, "solution": true}
def my_key_range(offsets, t, mode):
    ### BEGIN SOLUTION
    k = max(i for i in range(len(offsets) - 1) if offsets[i] <= t)
    return (0 if mode == "causal" else offsets[k]), offsets[k + 1]
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb07-key-range-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_key_range

check_key_range(my_key_range)

# %% [markdown]
# **Exercise 2: the forward loop, in Triton.** Write `row_attention_kernel`, a Triton kernel with
# one program per query row t: it loops over t's key range [lo, hi) in tiles of BLOCK_N keys with
# the online softmax of section 3 — a running max m, a running sum and an accumulator, both
# rescaled by exp(m_old − m_new) whenever the max grows; scores scaled by 1/√D. Then
# `my_row_attention(q, k, v, offsets, mode, block_n)`: compute lo and hi of every row (as
# `my_key_range` does), launch the kernel on a grid of (L,) and return a float32 CPU tensor
# (L, D). No softmax or SDPA: the loop is the exercise. (`tl.load(ptr + offsets, mask=...)`,
# `tl.sum`, `tl.max`, `tl.exp`, `tl.where`, `tl.store` are all you need; on a CPU it runs in
# the interpreter.)

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb07-triton-row-attention", "locked": false, "schema_version": 3, "solution": true}
import triton
import triton.language as tl


@triton.jit
def row_attention_kernel(Q, K, V, O, LO, HI, scale, D: tl.constexpr, BLOCK_N: tl.constexpr):
    ### BEGIN SOLUTION
    t = tl.program_id(0)  # one program per query row
    d = tl.arange(0, D)
    lo = tl.load(LO + t)
    hi = tl.load(HI + t)
    q = tl.load(Q + t * D + d)
    m = tl.full([1], float("-inf"), tl.float32)  # running max of the scores
    total = tl.zeros([1], tl.float32)  # running sum of exp(score - m)
    acc = tl.zeros([D], tl.float32)  # running sum of exp(score - m) * v
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        ok = cols < hi
        k = tl.load(K + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        s = tl.where(ok, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)  # rescales what was summed under the old max
        p = tl.exp(s - m_new)
        v = tl.load(V + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        total = total * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    tl.store(O + t * D + d, acc / total)
    ### END SOLUTION


def my_row_attention(q, k, v, offsets, mode, block_n):
    ### BEGIN SOLUTION
    L, D = q.shape
    lo, hi = [], []
    for t in range(L):
        s = max(i for i in range(len(offsets) - 1) if offsets[i] <= t)  # t's scale
        lo.append(0 if mode == "causal" else offsets[s])
        hi.append(offsets[s + 1])
    q, k, v = (x.to(device).contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    row_attention_kernel[(L,)](q, k, v, out, torch.tensor(lo, dtype=torch.int32, device=device),
                               torch.tensor(hi, dtype=torch.int32, device=device), D ** -0.5, D=D, BLOCK_N=block_n)
    return out.cpu()
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb07-triton-row-attention-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_triton_row_attention

check_triton_row_attention(my_row_attention)

# %% [markdown]
# ## Summary
#
# * Both next-scale masks give every query one contiguous key range, so the kernel needs only
#   the scale offsets and skips every tile outside the range (at 256 px with 64 × 64 tiles:
#   85 of 121 tiles for VAR, 49 for M-VAR).
# * The forward is FlashAttention's online softmax; the backward recomputes probabilities from
#   the saved log-sum-exp.
# * `TRITON_INTERPRET=1` runs the same kernel on CPU (slowly), which is how minivar's tests check
#   it without a GPU; keep the blocks ≥ 16 and the shapes tiny.
#
# **Read next:** `08_evaluation.ipynb` — measuring sample quality at small scale, honestly;
# `benchmarks/attention.py` prints the kernel's tile table (and its speed tables on a GPU).
