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
# # 02 · The multi-scale residual tokenizer
#
# **You will learn** where VAR's token maps come from (Tian et al. 2024, Sec. 3.2 and
# Algorithms 1–2): an image is encoded to a latent grid `f`, and `f` is quantised *residually*,
# coarse → fine — each scale encodes what the coarser ones left unexplained. You will quantise a
# latent step by step (area-downsample → nearest code → bicubic upsample → φ), check every step
# against `vae.encode`, see why the transformer's input is the *cumulative* reconstruction, and
# train a small tokenizer on handwritten digits.
#
# **This notebook needs** a CPU and about 1.5 minutes (one minute of it is training).

# %% tags=["setup"]
import time
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar import data, viz
from minivar.tokenizer.quantizer import phi_table
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
from minivar.training import TokenizerTrainConfig, train_tokenizer
from minivar.training.tokenizer_trainer import evaluate_tokenizer

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 1. The pipeline
#
# ```
# image x (B,3,16,16) --encoder--> --quant_conv--> f (B,Cv,4,4) --multi-scale quantiser--> K index maps
# K index maps --codebook, up, φ, sum--> f_hat (B,Cv,4,4) --post_quant_conv--> --decoder--> x_rec
# ```
#
# We use the CPU preset `tiny16`: 16 px images, a 4× downsampling conv net (so a 4×4 latent),
# Cv = 16 latent channels, a codebook of V = 256 vectors, and the schedule (1, 2, 3, 4). The
# official tokenizer is the same design at 256 px (16×16 latent, V = 4096, 109M parameters).

# %%
cfg = TOKENIZER_PRESETS["tiny16"]
vae = VQVAE(cfg).eval()
print("schedule", cfg.patch_nums, "| latent", f"{cfg.latent_side}x{cfg.latent_side}",
      "| Cv", cfg.z_channels, "| V", cfg.vocab_size)
print(f"{sum(p.numel() for p in vae.parameters()):,} parameters")

images, labels = data.digits(size=16)
(train_x, train_y), (val_x, val_y) = data.split(images, labels, val_fraction=0.1, seed=0)
print("digits:", tuple(train_x.shape), "train,", tuple(val_x.shape), "held out; values in [-1, 1]")

# %% [markdown]
# ## 2. Quantisation, step by step
#
# The weights are still random — that does not matter for *checking the algorithm*, which must
# give exactly the codes `vae.encode` gives. For each scale k with side `pn`:
#
# 1. **area-downsample** the residual `f_rest` to pn × pn (average pooling; skipped at the last
#    scale, which already has the latent side);
# 2. replace each of the pn² vectors by the index of its **nearest codebook vector** (plain L2);
# 3. look the codes up and **bicubic-upsample** them back to the latent side;
# 4. pass them through **φ_k**, a light 3×3 conv: φ(h) = ½ h + ½ conv(h);
# 5. add the result to the reconstruction `f_hat` and **subtract** it from the residual.

# %%
x = val_x[:8]
q = vae.quantize  # the MultiScaleQuantizer inside the VQVAE
with torch.no_grad():
    f = vae.quant_conv(vae.encoder(x))  # (B, Cv, 4, 4)
    B, C, side, _ = f.shape
    codebook = q.embedding.weight  # (V, Cv)

    ### BEGIN DERIVATION (exercise 1 asks for this loop; the student copy runs the #> lines instead)
    f_rest, f_hat, my_idx = f.clone(), torch.zeros_like(f), []
    for k, pn in enumerate(cfg.patch_nums):
        z = F.interpolate(f_rest, size=(pn, pn), mode="area") if pn != side else f_rest   # 1
        z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)                                       # pn² vectors per image
        idx = torch.cdist(z_NC, codebook).argmin(dim=1).view(B, pn * pn)                   # 2
        h = codebook[idx].transpose(1, 2).reshape(B, C, pn, pn)                            # 3: lookup ...
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")                        #    ... and up
        h = q.phis[q.phi_of_scale[k]](h)                                                   # 4
        f_hat, f_rest = f_hat + h, f_rest - h                                              # 5
        my_idx.append(idx)
        print(f"scale {k} ({pn}x{pn}): {pn * pn:2d} codes per image, first image's: {idx[0].tolist()}")
    ### END DERIVATION
    #> my_idx = vae.encode(x)  # exercise 1 writes this loop from the five steps above
    #> f_hat = q.indices_to_fhat(my_idx)

    ref_idx = vae.encode(x)
print("hand-made codes == vae.encode:", all(torch.equal(a, b) for a, b in zip(my_idx, ref_idx)))

# %% [markdown]
# ### φ, and a float32 trap
#
# Scales share a few φ convs: with K scales and n φs, scale k uses the conv whose "tick" in
# `linspace(1/(3n), 1 − 1/(3n), n)` is closest to k/(K−1). For the official 10 scales and 4 φs
# two scales are *exact ties* — the official code computes the ticks in float64 (numpy), and
# float32 breaks the ties the other way (asked about in FoundationVision/VAR#73).

# %%
print("float64 (official):", phi_table(10, 4))
ticks32 = torch.linspace(1 / 12, 11 / 12, 4)  # float32
print("float32 (wrong):   ", [int((ticks32 - k / 9).abs().argmin()) for k in range(10)])
print("tiny16 (4 scales): ", q.phi_of_scale)

# %% [markdown]
# ### Decoding
#
# Decoding needs only the codes: f_hat = Σ_k φ_k(up(e[idx_k])), and the image is
# `decoder(post_quant_conv(f_hat))`. The sum we built above is exactly that.

# %%
with torch.no_grad():
    fhat_ref = q.indices_to_fhat(ref_idx)
    x_rec = vae.fhat_to_img(f_hat)
print("our f_hat == quantize.indices_to_fhat:", torch.allclose(f_hat, fhat_ref, atol=1e-5))
print("our decode == vae.decode:", torch.allclose(x_rec, vae.decode(ref_idx), atol=1e-5))

# %% [markdown]
# ## 3. What the transformer reads: the cumulative reconstruction
#
# When the transformer predicts scale k+1 it does not read scale k's codes. It reads **f_hat
# after scales 0..k, area-downsampled to scale k+1's side** (FoundationVision/VAR#106 and #126
# ask why): the coarse scales have already been upsampled and added into f_hat, so this input
# carries everything decided so far, in the geometry of the next map. For scale 0 the input is
# a learned start token instead, so the teacher input holds L − 1 = 29 vectors.

# %%
with torch.no_grad():
    tf = vae.teacher_input(ref_idx)  # (B, L - 1, Cv)
    f_hat0 = q.indices_to_fhat(ref_idx, cumulative=True)[0]  # f_hat after scale 0 only
    by_hand = F.interpolate(f_hat0, size=(2, 2), mode="area").flatten(2).transpose(1, 2)
print("teacher input:", tuple(tf.shape))
print("its first 4 vectors == area-down(f_hat after scale 0) to 2x2:", torch.allclose(tf[:, :4], by_hand))

# %% [markdown]
# ## 4. Training on digits
#
# `minivar.training.tokenizer_trainer` trains with L1·0.2 + L2 reconstruction and VQ + commitment losses on
# the cumulative f_hat (β = 0.25, straight-through), and re-seeds codes that nobody uses (the
# official repo ships no tokenizer training code; VAR issue #5 and many more ask for it). We train
# 200 steps of 32 digits — about a minute on one CPU core.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
vae = VQVAE(cfg)
t0 = time.time()
history = train_tokenizer(vae, train_x, TokenizerTrainConfig(steps=200, batch_size=32, lr=1e-3,
                          warmup_steps=20, log_every=25, reseed_every=50), progress=False)
print(f"trained in {time.time() - t0:.0f} s")
for h in history[::2]:
    print(f"step {h['step']:3d}  loss {h['loss']:.3f}  batch PSNR {h['psnr']:.1f} dB  "
          f"code usage per scale {[round(u, 2) for u in h['usage']]}")

# %%
# NBVAL_IGNORE_OUTPUT
stats = evaluate_tokenizer(vae, val_x)
print(f"held-out PSNR {stats['psnr']:.1f} dB")
print("codebook usage per scale:", [f"{u:.2f}" for u in stats["usage"]])
print("perplexity per scale:    ", [f"{p:.1f}" for p in stats["perplexity"]])

# %%
print("held-out PSNR above 20 dB:", stats["psnr"] > 20)

# %% [markdown]
# ## 5. Pictures: what each scale adds
#
# `vae.decode_per_scale` decodes f_hat after scales 0..k for every k. Left column: the digit;
# then the image from scale 0 alone, scales 0–1, 0–2, and all four. The coarse scales set the
# overall blob; the last one adds the strokes.

# %%
with torch.no_grad():
    idx = vae.encode(val_x[:8])
    per_scale = vae.decode_per_scale(idx)
grid = viz.grid([val_x[:8], *per_scale], upscale=3)
plt.figure(figsize=(3, 5))
plt.imshow(grid)
plt.axis("off")
plt.title("original | ≤1×1 | ≤2×2 | ≤3×3 | ≤4×4", fontsize=9)
plt.show()

# %% [markdown]
# The same story in numbers: the share of the latent's energy that is still unexplained after
# each scale (‖f − f_hat_k‖² / ‖f‖² on the held-out digits), and how many of the 256 codes each
# scale uses. The 1×1 scale can only use a handful of codes — one per image at most — so
# "codebook collapse" at the smallest scales is partly arithmetic.

# %%
with torch.no_grad():
    f = vae.img_to_f(val_x)
    cum = vae.quantize.indices_to_fhat(vae.encode(val_x), cumulative=True)
    left = [((f - fh).square().sum() / f.square().sum()).item() for fh in cum]
fig, axes = plt.subplots(1, 2, figsize=(8, 2.6))
axes[0].bar(range(len(left)), left)
axes[0].set_title("unexplained energy after scale k", fontsize=9)
axes[1].bar(range(len(left)), stats["usage"], color="tab:orange")
axes[1].set_title("fraction of codes used, per scale", fontsize=9)
for ax in axes:
    ax.set_xticks(range(len(left)), [f"{p}×{p}" for p in cfg.patch_nums])
plt.show()
print("each scale explains more:", all(b < a for a, b in zip(left, left[1:])))

# %% [markdown]
# ## 6. Exercises
#
# **Exercise 1.** Write the quantiser's encode loop yourself: `my_residual_quantize(q, f)` takes a
# `MultiScaleQuantizer` `q` (use `q.patch_nums`, `q.embedding.weight` and `q.phi(k, h)`) and a
# latent `f` (B, Cv, h, w); it returns the list of K LongTensors (B, pn²). The checker compares
# your codes with `q.quantize` on two schedules. Try it without scrolling up!

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb02-residual-quantize", "locked": false, "schema_version": 3, "solution": true}
def my_residual_quantize(q, f):
    ### BEGIN SOLUTION
    B, C, side, _ = f.shape
    f_rest, out = f.clone(), []
    for k, pn in enumerate(q.patch_nums):
        z = F.interpolate(f_rest, size=(pn, pn), mode="area") if pn != side else f_rest
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, C), q.embedding.weight).argmin(1).view(B, pn * pn)
        h = q.embedding.weight[idx].transpose(1, 2).reshape(B, C, pn, pn)
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f_rest = f_rest - q.phi(k, h)
        out.append(idx)
    return out
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb02-residual-quantize-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_residual_quantize

check_residual_quantize(my_residual_quantize)

# %% [markdown]
# **Exercise 2: the teacher input.** `my_teacher_input(q, indices)` builds the transformer's
# teacher-forcing input from the K index maps of a batch: for each scale k = 1..K−1, f̂ after the
# scales *before* k (the sum over j < k of `q.upsample_phi(j, q.codes_to_map(indices[j], pn_j), side)`),
# area-downsampled to pn_k × pn_k and flattened in raster order to (B, pn_k², Cv); concatenated
# along dim 1: (B, L−1, Cv). Section 3 did the first piece; `q.teacher_input` and
# `q.next_input` are off limits. (Why must f̂ stop *before* scale k?)

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb02-teacher-input", "locked": false, "schema_version": 3, "solution": true}
def my_teacher_input(q, indices):
    ### BEGIN SOLUTION
    side = q.patch_nums[-1]
    f_hat, rows = 0, []
    for k in range(1, len(q.patch_nums)):
        j = k - 1  # add the scale before k to f_hat
        f_hat = f_hat + q.upsample_phi(j, q.codes_to_map(indices[j], q.patch_nums[j]), side)
        pn = q.patch_nums[k]
        x = F.interpolate(f_hat, size=(pn, pn), mode="area")
        rows.append(x.flatten(2).transpose(1, 2))  # (B, Cv, pn, pn) -> (B, pn*pn, Cv)
    return torch.cat(rows, dim=1)
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb02-teacher-input-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_teacher_input

check_teacher_input(my_teacher_input)

# %% [markdown]
# ## Summary
#
# * The tokenizer encodes an image to a latent f and quantises it **residually, coarse → fine**:
#   area-down the residual, nearest code, bicubic up, φ, add to f_hat, subtract from the residual.
# * Decoding needs only the codes: f_hat = Σ_k φ_k(up(e[idx_k])) → post_quant_conv → decoder.
# * The transformer's input for scale k+1 is the cumulative f_hat, area-downsampled to pn_{k+1}
#   (`vae.teacher_input`), not the previous scale's codes.
# * φ tables must be computed in float64 to match the official checkpoints.
# * A 1M-parameter tokenizer reaches > 20 dB PSNR on 16 px digits after a minute on one core;
#   the small scales use few codes.
#
# **Read next:** `03_var_transformer.ipynb` — the transformer that predicts these token maps, one
# scale at a time. (Or `05_mamba_from_scratch.ipynb` if you want the M-VAR path first.)
