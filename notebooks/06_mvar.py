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
# # 06 · M-VAR: intra-scale attention + Mamba
#
# **You will learn** what M-VAR (Ren et al., arXiv 2411.10433, Sec. 3.2–3.3) changes in VAR: each
# block attends only *inside* a scale and hands cross-scale information to a causal Mamba2 layer
# (notebook 05) that scans all tokens coarse → fine. You will check where information can flow,
# train a small M-VAR and a VAR of the same size on digits with the same budget and compare them,
# and see that a recurrent Mamba state makes sampling exact and cheaper than the official
# re-scan of the prefix.
#
# **This notebook needs** a CPU and about 2.5 minutes (40 s tokenizer, 40 s VAR, 60 s M-VAR).

# %% tags=["setup"]
import time
import warnings

import matplotlib.pyplot as plt
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar import data, scales, viz
from minivar.teaching import tutorial
from minivar.models import ModelConfig, NextScaleTransformer, next_scale_loss

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 0. Tokens (the tokenizer of notebook 02)

# %%
# NBVAL_IGNORE_OUTPUT
(train_x, train_y), (val_x, val_y) = tutorial.digits_split()
t0 = time.time()
vae = tutorial.digits_tokenizer(train_x, steps=200)     # notebook 02's tokenizer
patch_nums = vae.patch_nums
K, L, offs = len(patch_nums), scales.num_tokens(patch_nums), scales.offsets(patch_nums)
targets, inputs = tutorial.teacher_data(vae, train_x)   # the digits encoded once, as minivar.training.trainer does
val_targets, val_inputs = tutorial.teacher_data(vae, val_x)
print(f"tokenizer trained and digits encoded in {time.time() - t0:.0f} s")

# %% [markdown]
# ## 1. The M-VAR block
#
# ```
# x = x + γ1 · Attn_intra( mod(x; scale1, shift1) )     # only tokens of the same scale
# x = x + γ2 · Mamba2   ( mod(x; scale2, shift2) )     # causal scan over all L tokens
# x = x + γ3 · FFN      ( mod(x; scale3, shift3) )
# ```
#
# Nine AdaLN vectors per block instead of six. The official M-VAR uses Mamba2 with d_state 64,
# headdim 64; at our width we take d_state 16, headdim 32. Two models of the same depth and width:

# %%
common = dict(depth=4, width=128, heads=4, num_classes=10, vocab_size=256, z_channels=16,
              patch_nums=patch_nums, drop_path=0.0, attn_backend="blocks")
torch.manual_seed(0)
mvar = NextScaleTransformer(ModelConfig(mixer="mvar", d_state=16, mamba_headdim=32, mamba_chunk=32, **common))
torch.manual_seed(0)
var = NextScaleTransformer(ModelConfig(mixer="var", **common))
for name, m in (("VAR", var), ("M-VAR", mvar)):
    print(f"{name:>5}: {sum(p.numel() for p in m.parameters()):,} parameters")
blk = mvar.blocks[0]
print("M-VAR block:", [n for n, _ in blk.named_children()], "| ada_lin out:", blk.ada_lin[1].out_features, "= 9 x 128")

# %% [markdown]
# ## 2. Train both with the same budget
#
# The recipe of notebook 03 (AdamW, warm-up + linear decay, clipping, 10% label dropout), 200
# steps of 32 digits each, same data order. We compare held-out cross-entropy per scale.

# %%
def train(model, steps=200):
    t0 = time.time()
    losses = tutorial.fit_digits(model, train_y, inputs, targets, steps)  # the recipe of notebook 03
    return losses, time.time() - t0


# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
curves, secs = {}, {}
for name, m in (("VAR", var), ("M-VAR", mvar)):
    curves[name], secs[name] = train(m)
    print(f"{name:>5}: {secs[name]:.0f} s, final training loss {sum(curves[name][-20:]) / 20:.3f}")

# %%
with torch.no_grad():
    val = {name: next_scale_loss(m(val_y, val_inputs), val_targets, patch_nums)
           for name, m in (("VAR", var), ("M-VAR", mvar))}
fig, axes = plt.subplots(1, 2, figsize=(9, 2.6))
for name, c in curves.items():
    axes[0].plot(torch.tensor(c).unfold(0, 20, 20).mean(1), label=name)
    axes[1].plot(range(K), val[name]["scale_loss"], "o-", label=name)
axes[0].set_title("training loss (means of 20 steps)", fontsize=9)
axes[1].set_title("held-out cross-entropy per scale", fontsize=9)
axes[1].set_xticks(range(K), [f"{p}×{p}" for p in patch_nums])
for ax in axes:
    ax.legend(fontsize=8)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
for name in val:
    print(f"{name:>5}: held-out loss {val[name]['loss'].item():.3f}, token accuracy {val[name]['acc']:.3f}")

# %%
print("both learned (held-out loss below 4):", all(v["loss"].item() < 4 for v in val.values()))

# %% [markdown]
# At this toy size (and a minute of training) the gap between the two says little: M-VAR has
# more parameters at the same width (the Mamba layers), and one seed is one seed. The M-VAR
# paper's claim (better FID per parameter, faster sampling at 256 px) is about ImageNet scale —
# notebook 09 scales up.

# %% [markdown]
# ## 3. Where information flows
#
# Attention alone would make the scales blind to each other (the block-diagonal mask of notebook
# 01, 0.39× VAR's attention pairs at 256 px). The Mamba layer is causal in token order, and the
# tokens are ordered coarse → fine, so information flows from coarse to fine only. The picture of
# notebook 03 for both trained models: how strongly each output's logits depend on each
# teacher-input position (blank: not at all). (On an untrained M-VAR the Mamba branch is gated
# by γ ≈ 1e-5, too weak to see.)

# %%
lab, x_in = train_y[:4], inputs[:4]
infl = {name: viz.influence(m, lab, x_in) for name, m in (("VAR", var), ("M-VAR", mvar))}
viz.show_influence({"VAR: block-causal attention": infl["VAR"],
                    "M-VAR: intra-scale attention + Mamba": infl["M-VAR"]}, patch_nums)
sid = scales.scale_ids(patch_nums)
finer = sid[1:][None, :] > sid[:, None]  # input j belongs to a finer scale than output i
for name, m in infl.items():
    zero = m <= m.max() * 1e-9
    print(f"{name:>5}: some output depends on a finer scale's input: {bool((~zero[finer]).any())}; "
          f"every output depends on every input of its own and coarser scales: {bool((~zero[~finer]).all())}")

# %% [markdown]
# Both are blank above the staircase: neither model lets a scale see a finer one. Inside a scale
# they differ in how: VAR's attention reads the whole prefix directly; M-VAR's attention reads only
# its own scale (the blocks on the diagonal), and everything from coarser scales arrives through
# the Mamba scan — coarse → fine, as a running state.

# %% [markdown]
# **Predict, then check.** Section 4 compares two ways of running Mamba while sampling. If one
# M-VAR layer keeps its recurrent state between scales, how many token-steps does it take to
# sample one 256 px image (scales 1, 2, 3, 4, 5, 6, 8, 10, 13, 16)?

# %% tags=["solution", "prediction"] nbgrader={"grade": false, "grade_id": "nb06-predict-cached-steps", "locked": false, "schema_version": 3, "solution": true}
my_steps_prediction = ...  # a whole number
### BEGIN SOLUTION
my_steps_prediction = 680
### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb06-predict-cached-steps-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_predict_cached_steps

check_predict_cached_steps(my_steps_prediction)

# %% [markdown]
# ## 4. Sampling: a state cache instead of a re-scan
#
# M-VAR's attention needs no KV cache at all (a scale never looks at earlier scales' keys). Its
# Mamba layers need the past, though. The official sampler re-runs each Mamba over the whole
# prefix at every scale; minivar keeps each layer's recurrent state (notebook 05) and feeds only
# the new scale. Same tokens, fewer token-steps:

# %%
from minivar.sample import generate

classes = torch.arange(10).repeat_interleave(4)
out = {}
for rescan in (False, True):
    imgs, idx = generate(mvar, vae, classes, cfg=2.0, top_k=20, top_p=0.9, seed=0, return_indices=True,
                         rescan_mamba=rescan)
    out[rescan] = (imgs, idx, mvar.blocks[0].mamba.tokens_scanned)
print("state cache == re-scan (same tokens):", all(torch.equal(a, b) for a, b in zip(out[False][1], out[True][1])))
print(f"Mamba token-steps per block: state cache {out[False][2]}, re-scan {out[True][2]}")

# %%
# NBVAL_IGNORE_OUTPUT
for rescan in (False, True):
    t0 = time.perf_counter()
    for _ in range(3):
        generate(mvar, vae, classes, cfg=2.0, top_k=20, top_p=0.9, seed=0, rescan_mamba=rescan)
    print(f"{'re-scan' if rescan else 'state cache'}: {(time.perf_counter() - t0) / 3 * 1000:.0f} ms for 40 images")

# %% [markdown]
# Samples from both models (4 per class, classes 0–9 in rows; VAR left, M-VAR right):

# %%
var_imgs = var.generate(classes, cfg=2.0, top_k=20, top_p=0.9, seed=0, vae=vae)
cols = [var_imgs[c::4] * 2 - 1 for c in range(4)] + [out[False][0][c::4] * 2 - 1 for c in range(4)]
plt.figure(figsize=(4.5, 5))
plt.imshow(viz.grid(cols, upscale=2))
plt.axis("off")
plt.title("VAR (left 4) | M-VAR (right 4)", fontsize=9)
plt.show()

# %% [markdown]
# ## 5. Exercises
#
# `my_rescan_token_steps(patch_nums)` returns how many token positions one Mamba layer scans to
# sample one image when every scale re-runs the whole prefix (no state cache). Hint: at step k it
# scans all tokens of scales 0..k.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb06-rescan-token-steps", "locked": false, "schema_version": 3, "solution": true}
def my_rescan_token_steps(patch_nums):
    ### BEGIN SOLUTION
    total, end = 0, 0
    for pn in patch_nums:
        end += pn * pn
        total += end
    return total
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb06-rescan-token-steps-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_rescan_token_steps

check_rescan_token_steps(my_rescan_token_steps)

# %% [markdown]
# **Exercise 2: the M-VAR block, from its parts.** `my_mvar_block(block, x, cond)` recomputes an
# M-VAR block's forward pass. `block.ada_lin(cond)` gives 9 vectors of width C laid out
# [gates | scales | shifts]; each sub-layer f = `block.attn`, `block.mamba`, `block.ffn`, in this
# order, does `x = x + gate * f(LayerNorm(x, eps=block.eps) * (1 + scale) + shift)`. The block's
# own `forward`, `sublayer` and `modulations` refuse to run.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb06-mvar-block", "locked": false, "schema_version": 3, "solution": true}
import torch.nn.functional as F


def my_mvar_block(block, x, cond):
    ### BEGIN SOLUTION
    C = x.shape[-1]
    vecs = block.ada_lin(cond).view(-1, 1, 9, C)  # [gates | scales | shifts], 3 of each
    for i, f in enumerate((block.attn, block.mamba, block.ffn)):
        gate, scale, shift = vecs[:, :, i], vecs[:, :, 3 + i], vecs[:, :, 6 + i]
        h = F.layer_norm(x, (C,), eps=block.eps) * (1 + scale) + shift
        x = x + gate * f(h)
    return x
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb06-mvar-block-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_mvar_block

check_mvar_block(my_mvar_block)

# %% [markdown]
# ## Summary
#
# * An M-VAR block = intra-scale attention + causal Mamba2 + FFN, nine AdaLN vectors.
# * Information crosses scales only through Mamba (and the teacher input), coarse → fine:
#   perturbing a fine scale never changes a coarser scale's logits.
# * Both train on digits in about a minute each; at this size one run says little about which
#   is better.
# * A recurrent Mamba state makes sampling exact with L token-steps per block; the official
#   re-scan needs Σ_k end_k (50 vs 30 here, 1,710 vs 680 at 256 px).
#
# **Read next:** `07_triton_attention.ipynb` — the fused attention kernel that skips the masked
# tiles of both masks.
