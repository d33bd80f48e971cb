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
# # 00 · Setup and a 10-line tour
#
# **You will learn** what minivar is made of, by using it before opening it up: load a small
# pretrained tokenizer, a VAR and an M-VAR (trained on 8×8 handwritten digits, upscaled to 16 px),
# sample digits of every class, watch an image grow from 1×1 to 4×4 tokens, and turn a real image
# into tokens and back. Every later notebook opens one of these pieces.
#
# **This notebook needs** a CPU and about 20 seconds. It reads the demo weights committed in
# `weights/digits16/` (6 MB, float16); nothing is downloaded.
#
# **Setup**, once, from the repository root: `make demo` creates `.venv`, installs minivar and
# runs a 5-minute demo; `make lab` opens these notebooks; `make test` re-runs everything.

# %% tags=["setup"]
import json
import os
import warnings

import matplotlib.pyplot as plt
import torch

warnings.filterwarnings("ignore", message="IProgress not found")

import minivar
from minivar import data, scales, viz
from minivar.teaching import resources

torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})
print("torch", torch.__version__, "| minivar", minivar.__version__)  # minivar.__file__ says which copy


show = viz.show  # columns of image batches in [0, 1] as one picture

# %% [markdown]
# ## 1. The tour: load, sample, look
#
# These are the ten lines. `VQVAE` is the multi-scale tokenizer (notebook 02), `load_model`
# returns a `NextScaleTransformer` (notebooks 03 and 06), `generate` runs the K-step sampler
# (notebook 04). Labels are digit classes 0–9; `cfg` is the guidance strength.

# %%
from minivar.tokenizer import VQVAE
from minivar.loading import load_model

W = resources.path("weights/digits16")  # found from any folder: see minivar/teaching/resources.py
vae = VQVAE.load(f"{W}/tokenizer.pt").eval()  # images <-> token maps of 1x1, 2x2, 3x3, 4x4
var = load_model(f"{W}/var.pt")  # VAR: block-causal attention + FFN
mvar = load_model(f"{W}/mvar.pt")  # M-VAR: intra-scale attention + Mamba2 + FFN
labels = torch.arange(10).repeat_interleave(6)  # six of each digit
with torch.no_grad():
    img_var = var.generate(labels, cfg=1.5, top_k=0, top_p=0.0, seed=0, vae=vae)  # (60, 3, 16, 16) in [0, 1]
    img_mvar = mvar.generate(labels, cfg=1.5, top_k=0, top_p=0.0, seed=0, vae=vae)
show(list(img_var.view(10, 6, 3, 16, 16)), "VAR samples: one column per class 0..9")
show(list(img_mvar.view(10, 6, 3, 16, 16)), "M-VAR samples: one column per class 0..9")

# %% [markdown]
# The two models have nearly the same number of parameters: M-VAR is shallower (4 blocks) but
# each block holds a Mamba2 layer besides attention and the FFN; VAR has 6 plain blocks.

# %%
for name, m in (("VAR", var), ("M-VAR", mvar)):
    c = m.config
    print(f"{name:6s} depth {c.depth}, width {c.width}, {sum(p.numel() for p in m.parameters()):,} parameters, "
          f"vocabulary {c.vocab_size}, scales {c.patch_nums} -> L = {m.L} tokens")
print(f"tokenizer {sum(p.numel() for p in vae.parameters()):,} parameters, codebook of {vae.config.vocab_size}")

# %% [markdown]
# ## 2. Coarse to fine
#
# VAR does not predict pixels or one token at a time: it predicts a whole token *map* per step,
# 1×1 first, then 2×2, 3×3, 4×4, each conditioned on all coarser ones. `return_indices=True`
# gives those maps; the tokenizer decodes any prefix of them into a picture.

# %%
with torch.no_grad():
    img, idx = mvar.generate(torch.arange(10), cfg=1.5, top_k=0, top_p=0.0, seed=1, vae=vae,
                             return_indices=True)
print("token maps per scale:", [tuple(i.shape) for i in idx], "-> 1 + 4 + 9 + 16 =", sum(i.shape[1] for i in idx))
steps = [(s + 1) / 2 for s in vae.decode_per_scale(idx)]  # after 1, 2, 3, 4 scales; [-1, 1] -> [0, 1]
show(steps, "scales 1x1 | +2x2 | +3x3 | +4x4 (one row per class)", height=5)
print("the last step is the sample:", torch.allclose(steps[-1], img, atol=1e-5))

# %% [markdown]
# ## 3. A real image, tokenized
#
# The tokenizer works both ways (images in [-1, 1]). An 8×8 scikit-learn digit, upscaled to 16 px,
# becomes 30 integers; decoding them gives back a close copy (the tokenizer's reconstruction quality bounds
# what any generator on top of it can reach).

# %%
x, y = data.load("digits", 16)
x8 = x[:8]
with torch.no_grad():
    tokens = vae.encode(x8)
    back = vae.decode(tokens)
print("first digit's tokens:", [t[0].tolist() for t in tokens])
mse = (((back - x8) / 2) ** 2).mean().item()  # on the [0, 1] scale
print(f"reconstruction PSNR on these 8 images: {10 * torch.log10(torch.tensor(1 / mse)).item():.1f} dB")
show([(x8 + 1) / 2, (back + 1) / 2], "input | decoded from its 30 tokens", upscale=3)

# %% [markdown]
# ## 4. Where the weights came from
#
# Nothing here is magic: the three files are the seed-0 runs of the digits tier of the small-data
# study (notebook 09), written by one command on a 2-core CPU. `tests/test_demo_weights.py`
# re-runs the beginning of that training and checks that the logged losses come out again.

# %%
for name in ("tokenizer", "var", "mvar"):
    with open(f"{W}/{name}_metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    print(f"{name:9s} trained {last['step']} steps, final loss {last['loss']:.3f}")
print(open(f"{W}/README.md").read().split("```")[1].strip())

# %% [markdown]
# ## Exercises
#
# **1. Coarse decode.** Write `coarse_decode(vae, indices, k)` that returns the images (B, 3, H, W)
# decoded from the first `k` scales only (`k = 1` is the 1×1 map alone). Build it from
# `vae.quantize.indices_to_fhat` (give it the first `k` index maps: f̂ is the sum of what each
# scale adds) and `vae.fhat_to_img`. `vae.decode` and `vae.decode_per_scale` do not count: the
# checker refuses them, and compares your pictures with `vae.decode_per_scale(indices)[k - 1]`.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb00-coarse-decode", "locked": false, "schema_version": 3, "solution": true}
def coarse_decode(vae, indices, k):
    ### BEGIN SOLUTION
    with torch.no_grad():
        f_hat = vae.quantize.indices_to_fhat(indices[:k])  # phi_k(up(codes)) summed over scales 0..k-1
        return vae.fhat_to_img(f_hat)
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb00-coarse-decode-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_coarse_decode

check_coarse_decode(coarse_decode)


# %% [markdown]
# **2. Where do M-VAR's parameters go?** Write `mamba_fraction(model)`: the fraction (0..1) of
# all parameters that sit inside `minivar.models.mamba2.Mamba2` layers (hint: `model.modules()`).

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb00-mamba-fraction", "locked": false, "schema_version": 3, "solution": true}
def mamba_fraction(model):
    ### BEGIN SOLUTION
    from minivar.models.mamba2 import Mamba2
    inside = sum(p.numel() for m in model.modules() if isinstance(m, Mamba2) for p in m.parameters())
    return inside / sum(p.numel() for p in model.parameters())
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb00-mamba-fraction-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_mamba_fraction

check_mamba_fraction(mamba_fraction)

# %%
print(f"in the demo M-VAR: {mamba_fraction(mvar):.3f}")

# %% [markdown]
# ## Summary
#
# * minivar = a multi-scale tokenizer (images ↔ token maps of growing size) + a next-scale
#   transformer (VAR or M-VAR) + a sampler, all in `minivar/`, each a short file.
# * An image is generated in K = 4 steps here (10 at 256 px), one whole token map per step.
# * The demo weights are small and reproducible; notebook 09 shows how good they are, in numbers.
#
# **Read next:** 01 (scales and tokens), then in order. The paper: Tian et al. 2024, Sec. 3;
# for M-VAR, Ren et al. 2024, Sec. 3.
