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
# # 01 · Scales and tokens
#
# **You will learn** what a *scale* is in next-scale image generation: how VAR (Tian et al.,
# NeurIPS 2024, Sec. 3.2) cuts an image into K token maps of growing side, how many tokens that
# makes, where each scale sits in the token sequence, and which tokens may look at which — the
# block-causal mask of VAR and the block-diagonal mask of M-VAR (Ren et al., arXiv 2411.10433,
# Sec. 3.2). Everything is computed by hand first and then compared with `minivar.scales`.
#
# **This notebook needs** a CPU and about 10 seconds. No training, no downloads.

# %% tags=["setup"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from minivar import data, scales

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine (and fast enough here)
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 1. A schedule is a list of sides
#
# A GPT-style image model reads an image as one long row of tokens and predicts them one by one,
# left to right, top to bottom. VAR instead predicts a whole **token map** at a time, from coarse
# to fine: first a 1×1 map, then 2×2, 3×3, … up to the full latent grid. The list of sides is the
# *scale schedule* `patch_nums` (the official code's name). At 256 px the tokenizer turns an image
# into a 16×16 latent, and the schedule is:

# %%
patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
K = len(patch_nums)
print("K =", K, "scales; the last side equals the latent side:", patch_nums[-1])

# %% [markdown]
# Let's *look* at the schedule: here is every token map at 256 px, drawn to the same size, one
# square per token.

# %%
fig, axes = plt.subplots(1, K, figsize=(12, 1.6))
for ax, pn in zip(axes, patch_nums):
    ax.imshow(np.indices((pn, pn)).sum(0) % 2, cmap="Greys", vmin=0, vmax=3, extent=(0, 1, 0, 1))
    ax.set_title(f"{pn}×{pn}", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle("the 10 token maps of a 256 px image, coarse → fine", y=1.08, fontsize=10)
plt.show()

# %% [markdown]
# ## 2. Counting tokens by hand
#
# Scale k holds `pn_k × pn_k` tokens. The whole image is L = Σ pn² tokens, and VAR needs only
# K = 10 forward passes to produce them, where a raster-order GPT needs L = 680.

# %%
counts = [pn * pn for pn in patch_nums]
L = sum(counts)
print("tokens per scale:", counts)
print("L =", L)

# %% [markdown]
# Tokens are stored in **raster order inside a scale, and scales are concatenated coarse →
# fine**. So scale k occupies positions `offsets[k]:offsets[k+1]` of the sequence, where the
# offsets are the running sums of the counts:

# %%
offsets = [0]
for n in counts:
    offsets.append(offsets[-1] + n)
print("offsets:", offsets)
for k in (0, 1, K - 1):
    print(f"scale {k} ({patch_nums[k]}x{patch_nums[k]}) = tokens {offsets[k]}..{offsets[k + 1] - 1}")

# %% [markdown]
# Every token also knows *which* scale it belongs to; the model adds a learned "level
# embedding" per scale (VAR Sec. 3.2). Now the same numbers from the package:

# %%
sid = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)])
print("scale id of the first 14 tokens:", sid[:14].tolist())
assert scales.token_counts(patch_nums) == counts
assert scales.num_tokens(patch_nums) == L
assert scales.offsets(patch_nums) == offsets
assert torch.equal(scales.scale_ids(patch_nums), sid)
print("hand-made counts, offsets and scale ids == minivar.scales")

# %% [markdown]
# ## 3. What a coarse scale "sees": a picture analogy
#
# The tokenizer (notebook 02) works on a latent, not on pixels, but the idea is the same as
# shrinking a picture: the 1×1 map can only hold the average, 2×2 a rough layout, and each finer
# scale adds detail. Here is a handwritten digit (scikit-learn's digits, upscaled to 16 px)
# area-averaged to each side of the small CPU schedule `16px` = (1, 2, 3, 4) and, for contrast,
# of the 256 px schedule.

# %%
images, labels = data.digits(size=16)
x = images[:1, :1]  # one digit, one channel, values in [-1, 1]
fig, axes = plt.subplots(2, K, figsize=(12, 2.8))
for row, pns in enumerate([scales.PRESETS["16px"], patch_nums]):
    big = F.interpolate(x, size=(pns[-1] * 4, pns[-1] * 4), mode="bilinear") if row else x
    for ax in axes[row]:
        ax.axis("off")
    for ax, pn in zip(axes[row], pns):
        ax.imshow(F.interpolate(big, size=(pn, pn), mode="area")[0, 0], cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"{pn}×{pn}", fontsize=9)
plt.show()

# %% [markdown]
# ## 4. The presets
#
# minivar ships the two official schedules and two small ones for CPUs (the VAR authors note that
# small data needs its own schedule, VAR issue #137). `scales.validate` refuses schedules that
# cannot work.

# %%
for name, pns in scales.PRESETS.items():
    print(f"{name:>5}: {str(pns):38s} K={len(pns):2d}  L={scales.num_tokens(pns):5d}")

# %%
for bad in [(1, 2, 2, 4), (4, 2, 1), (1, 2, 3)]:
    try:
        scales.validate(bad, latent_side=4)
    except scales.ScheduleError as e:
        print("ScheduleError:", e)

# %% [markdown]
# **Predict, then check.** Section 5 builds M-VAR's mask, in which a token attends only to the
# tokens of its own scale. For the 16 px schedule (1, 2, 3, 4), how many (query, key) pairs does
# that mask allow? Count before you read on.

# %% tags=["solution", "prediction"] nbgrader={"grade": false, "grade_id": "nb01-predict-pairs", "locked": false, "schema_version": 3, "solution": true}
my_pairs_prediction = ...  # a whole number
### BEGIN SOLUTION
my_pairs_prediction = 1 + 16 + 81 + 256
### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb01-predict-pairs-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_predict_pairs

check_predict_pairs(my_pairs_prediction)

# %% [markdown]
# ## 5. Who may look at whom: two masks
#
# A transformer mixes tokens with attention; a boolean mask says which key a query may read.
#
# * **VAR** is *block-causal*: a token of scale k sees every token of scales 0..k — its own scale
#   in full (the whole map is predicted at once) and all coarser ones, never a finer one. Seeing
#   its own scale does not leak the answer: the positions of scale k do not hold scale k's tokens.
#   They hold an *input* built from scales < k (the coarser maps summed and upsampled to side
#   pn_k: the teacher input of notebook 02), and the model predicts scale k's tokens from it.
# * **M-VAR** keeps attention *inside* a scale (block-diagonal) and lets a causal Mamba layer
#   carry information from coarse to fine (notebooks 05 and 06).
#
# Both masks follow from the scale ids in one line each (VAR's is exercise 2 in the student copy):

# %%
### BEGIN DERIVATION (exercise 2 asks for it; the student copy runs the #> line instead)
causal = sid[:, None] >= sid[None, :]   # query scale >= key scale
### END DERIVATION
#> causal = scales.block_causal_mask(patch_nums)  # exercise 2 derives it from the scale ids
diagonal = sid[:, None] == sid[None, :]  # same scale
assert torch.equal(causal, scales.block_causal_mask(patch_nums))
assert torch.equal(diagonal, scales.block_diagonal_mask(patch_nums))
print(f"allowed pairs at 256 px: VAR {int(causal.sum()):,}  M-VAR {int(diagonal.sum()):,} "
      f"({diagonal.sum() / causal.sum():.2f}x)  dense {L * L:,}")

# %% [markdown]
# Pictures say it better. Left to right: a GPT's token-causal mask, VAR's block-causal mask and
# M-VAR's block-diagonal mask for the small schedule (1, 2, 3, 4) — 30 tokens — and then VAR and
# M-VAR at 256 px (680 tokens). White = may attend; rows are queries, columns keys.

# %%
small = scales.PRESETS["16px"]
Ls = scales.num_tokens(small)
panels = [("GPT (token-causal)", torch.ones(Ls, Ls, dtype=torch.bool).tril()),
          ("VAR (block-causal)", scales.block_causal_mask(small)),
          ("M-VAR (block-diagonal)", scales.block_diagonal_mask(small)),
          ("VAR, 256 px", causal), ("M-VAR, 256 px", diagonal)]
fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
for ax, (title, m) in zip(axes, panels):
    ax.imshow(m, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% [markdown]
# Notice the staircase: inside a block (one scale) every token sees every other — the map is
# predicted jointly, in parallel — while the step below the diagonal is what makes the model
# autoregressive *over scales*.

# %% [markdown]
# ## 6. Exercises
#
# Write the two functions below; the cell after each checks your answer against
# `minivar.scales` on several schedules (`minivar.teaching.exercises`).
#
# **Exercise 1.** `my_offsets(patch_nums)` returns `[0, n0, n0+n1, ..., L]` as a list of Python ints.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb01-offsets", "locked": false, "schema_version": 3, "solution": true}
def my_offsets(patch_nums):
    ### BEGIN SOLUTION
    out = [0]
    for pn in patch_nums:
        out.append(out[-1] + pn * pn)
    return out
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb01-offsets-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_block_causal_mask, check_offsets

check_offsets(my_offsets)


# %% [markdown]
# **Exercise 2.** `my_block_causal_mask(patch_nums)` returns VAR's mask as a bool tensor (L, L),
# True where query i may attend to key j. Try it without looking at section 5.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb01-block-causal-mask", "locked": false, "schema_version": 3, "solution": true}
def my_block_causal_mask(patch_nums):
    ### BEGIN SOLUTION
    sid = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])
    return sid[:, None] >= sid[None, :]
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb01-block-causal-mask-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
check_block_causal_mask(my_block_causal_mask)

# %% [markdown]
# ## Summary
#
# * A scale schedule `patch_nums` lists the side of each token map, coarse → fine; the last side
#   is the latent side. At 256 px: 10 scales, **L = 680** tokens, offsets 0, 1, 5, …, 680.
# * Tokens are raster order inside a scale, scales concatenated; `scales.scale_ids` tags each.
# * VAR's block-causal mask (286,434 allowed pairs at 256 px) lets a scale see itself and all
#   coarser scales; M-VAR's block-diagonal mask (110,468 pairs, 0.39×) keeps attention inside a
#   scale.
#
# **Read next:** `02_tokenizer.ipynb` — where the token maps come from: the multi-scale
# residual tokenizer, quantisation step by step, and a tokenizer trained on digits.
