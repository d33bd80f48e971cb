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
# # 11 · Zero-shot editing: in-painting, out-painting, class editing
#
# **You will learn** how a next-scale model edits images it was never trained to edit (VAR, Tian
# et al. 2024, Sec. 4.4 and Fig. 6): encode the image into its K token maps, and while sampling,
# at every scale, *force* the tokens outside a mask to the image's own tokens and let the model
# sample only the tokens inside. You will see how a pixel mask becomes one token mask per scale
# (`minivar.sample.scale_masks`), in-paint the centre of digits, out-paint their border,
# regenerate half of a digit under another class label, and check that every unmasked token is
# reproduced exactly (while the decoded pixels are not — and why).
#
# **This notebook needs** a CPU and about 20 seconds (a classifier trained in 5 s). It edits with the
# committed demo VAR (`weights/digits16`).

# %% tags=["setup"]
import time
import warnings

import matplotlib.pyplot as plt
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar.evaluation import metrics
from minivar import scales, viz
from minivar.teaching import tutorial
from minivar.sample import scale_masks

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 0. A tokenizer and a VAR (the demo weights of notebook 00)

# %%
(train_x, train_y), (val_x, val_y) = tutorial.digits_split()
vae, model, _ = tutorial.demo_models()  # the committed tokenizer and VAR (depth 6, width 96), as in notebook 00
patch_nums = vae.patch_nums
print(f"{len(train_x)} training and {len(val_x)} held-out digits; VAR of depth {model.config.depth}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## 1. From a pixel mask to one token mask per scale
#
# A mask is an H × W picture, 1 = "regenerate". Scale k has pn_k × pn_k tokens, each covering a
# patch of the image. `scale_masks` area-downsamples the mask to pn × pn and marks a token when
# **at least half** of its area is masked. Three masks on our 16 px digits (scales 1, 2, 3, 4):

# %%
H = W = 16
centre = torch.zeros(H, W)
centre[4:12, 4:12] = 1          # in-painting: regenerate the middle 8 x 8 pixels
border = 1 - centre             # out-painting: keep the middle, regenerate the rest
bottom = torch.zeros(H, W)
bottom[8:] = 1                  # class editing: regenerate the bottom half
masks = {"centre": centre, "border": border, "bottom half": bottom}
for name, m in masks.items():
    per_scale = scale_masks(m, patch_nums)
    print(f"{name:>11}: masked tokens per scale {[int(s.sum()) for s in per_scale]} of "
          f"{[pn * pn for pn in patch_nums]}")
    for k, (s, pn) in enumerate(zip(per_scale, patch_nums)):
        print(f"{'':13}scale {k} ({pn}x{pn}): {s.view(pn, pn).int().tolist()}")

# %%
fig, axes = plt.subplots(3, 1 + len(patch_nums), figsize=(7, 5))
for r, (name, m) in enumerate(masks.items()):
    axes[r, 0].imshow(m, cmap="gray", vmin=0, vmax=1)
    axes[r, 0].set_title(f"{name} (pixels)", fontsize=8)
    for k, (s, pn) in enumerate(zip(scale_masks(m, patch_nums), patch_nums)):
        axes[r, k + 1].imshow(s.view(pn, pn).float(), cmap="gray", vmin=0, vmax=1)
        axes[r, k + 1].set_title(f"{pn}x{pn}", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the centre mask: the 8 × 8 hole covers a quarter of the 1 × 1 scale and a quarter of each
# 2 × 2 token, so at the two coarsest scales **nothing** is regenerated — the image's own coarse
# tokens (its overall shape) are kept, and the model only fills in the detail of the hole at
# 3 × 3 and 4 × 4, *conditioned on* that kept coarse structure. The border mask is the opposite:
# it covers most of every coarse token, so out-painting re-samples the coarse layout too, and only
# the fine tokens of the centre are forced.

# %% [markdown]
# ## 2. In-painting the centre
#
# `model.edit(images, mask, labels)` (= `minivar.sample.edit`) encodes the images, then samples
# scale by scale exactly like `generate` (notebook 04), except that after each scale is drawn,
# `torch.where(mask_k, sampled, image's tokens)` overwrites the unmasked tokens. The model then
# sees those tokens (through the teacher input f̂) when it predicts the next scale, so the
# generated hole agrees with its surroundings. No retraining, no special training: "zero-shot".

# %%
x = val_x[:10]
y = val_y[:10]
with torch.no_grad():
    gt = vae.encode(x)
    recon = vae.decode(gt)
inpainted, got = model.edit(x, centre, y, cfg=1.5, top_k=0, top_p=0.0, seed=0, return_indices=True)
inpainted = inpainted * 2 - 1  # edit returns [0, 1], like generate; our pictures use [-1, 1]

m_k = scale_masks(centre, patch_nums)
kept = all(torch.equal(got[k][:, ~m_k[k][0]], gt[k][:, ~m_k[k][0]]) for k in range(len(patch_nums)))
print("every unmasked token equals the image's own token:", kept)
print("tokens the model sampled per image:", int(sum(m.sum() for m in m_k)), "of", sum(p * p for p in patch_nums))

# %%
# NBVAL_IGNORE_OUTPUT
changed = sum(int((got[k][:, m_k[k][0]] != gt[k][:, m_k[k][0]]).sum()) for k in range(len(patch_nums)))
print(f"of the {int(sum(m.sum() for m in m_k)) * len(x)} sampled tokens, {changed} differ from the original's")

# %% [markdown]
# The tokens are kept exactly, the pixels are not: the decoder is a convolutional network and
# each f̂ is a sum of *upsampled* token maps, so a regenerated token changes the pixels around its
# patch too. The change outside the hole is small, inside it is large:

# %%
# NBVAL_IGNORE_OUTPUT
inside = centre.bool().expand_as(recon)
d = (inpainted - recon).abs()
print(f"mean |edited - reconstruction|: inside the hole {d[inside].mean():.3f}, outside {d[~inside].mean():.3f}")

# %%
print("pixels change more inside the hole than outside:", bool(d[inside].mean() > d[~inside].mean()))

# %%
hole = x.clone()
hole[:, :, 4:12, 4:12] = 0.0  # grey where the model must fill in
plt.figure(figsize=(2.4, 6))
plt.imshow(viz.grid([x, hole, inpainted], upscale=2))
plt.axis("off")
plt.title("original | hole | in-painted", fontsize=9)
plt.show()

# %% [markdown]
# ## 3. Out-painting the border
#
# Keep the centre 8 × 8, regenerate everything around it. Because the border mask covers the
# coarse tokens, the model re-invents the digit's overall layout around a fixed middle.

# %%
outpainted, got_o = model.edit(x, border, y, cfg=1.5, top_k=0, top_p=0.0, seed=0, return_indices=True)
outpainted = outpainted * 2 - 1
m_o = scale_masks(border, patch_nums)
print("every unmasked token equals the image's own token:",
      all(torch.equal(got_o[k][:, ~m_o[k][0]], gt[k][:, ~m_o[k][0]]) for k in range(len(patch_nums))))
frame = x.clone()
frame[:, :, :4], frame[:, :, 12:], frame[:, :, :, :4], frame[:, :, :, 12:] = 0.0, 0.0, 0.0, 0.0
plt.figure(figsize=(2.4, 6))
plt.imshow(viz.grid([x, frame, outpainted], upscale=2))
plt.axis("off")
plt.title("original | kept | out-painted", fontsize=9)
plt.show()

# %% [markdown]
# ## 4. Class-conditional editing
#
# The label passed to `edit` need not be the image's. Keep the top half of one digit and
# regenerate the bottom half under each of the 10 labels. A classifier (the frozen feature network
# of notebook 08, `metrics.train_classifier`) tells us how often the edit "became" the new label.

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.time()
clf = metrics.train_classifier(train_x, train_y, num_classes=10, epochs=10, seed=0)
print(f"classifier trained in {time.time() - t0:.0f} s, held-out accuracy "
      f"{(metrics.classify(clf, val_x)[1] == val_y).double().mean().item() * 100:.1f}%")

# %%
src = val_x[:6]
new_labels = torch.arange(10)
edited = []
for i in range(len(src)):
    e, got_c = model.edit(src[i:i + 1], bottom, new_labels, cfg=3.0, top_k=0, top_p=0.0, seed=i,
                          return_indices=True)
    edited.append(e * 2 - 1)
    gt_i, m_b = vae.encode(src[i:i + 1]), scale_masks(bottom, patch_nums)
    assert all(torch.equal(got_c[k][:, ~m_b[k][0]], gt_i[k].expand(10, -1)[:, ~m_b[k][0]])
               for k in range(len(patch_nums)))
edited = torch.stack(edited)  # (6 source digits, 10 labels, 3, H, W)
print("edits:", tuple(edited.shape[:2]), "| top half's tokens kept in all of them: True")

# %%
# NBVAL_IGNORE_OUTPUT
pred = metrics.classify(clf, edited.flatten(0, 1))[1].view(len(src), 10)
print(f"edits classified as their new label: {(pred == new_labels).double().mean().item() * 100:.0f}% "
      f"(as the source digit's label: {(pred == val_y[:6, None]).double().mean().item() * 100:.0f}%, chance 10%)")

# %%
plt.figure(figsize=(6, 4.2))
plt.imshow(viz.grid([src] + [edited[:, c] for c in range(10)], upscale=2))
plt.axis("off")
plt.title("source | bottom half regenerated as label 0, 1, ..., 9", fontsize=9)
plt.show()

# %% [markdown]
# With a model this small the edits are rough, and how far a label can pull depends on
# how much the kept top half already says: a kept top of a 7 and a label "0" must meet somewhere.
# In the VAR paper the same loop, with a 2B-parameter model at 256 px, in-paints and out-paints
# ImageNet photographs convincingly (Fig. 6).

# %% [markdown]
# ## 5. Exercise
#
# Write `my_scale_masks(mask_HW, patch_nums)`: for every scale a bool tensor of shape (1, pn·pn)
# in raster order, True where at least half of the token's area is masked. Hint:
# `F.interpolate(..., mode="area")` averages the mask over each token's patch.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb11-scale-masks", "locked": false, "schema_version": 3, "solution": true}
import torch.nn.functional as F


def my_scale_masks(mask_HW, patch_nums):
    ### BEGIN SOLUTION
    m = mask_HW.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) >= 0.5 for pn in patch_nums]
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb11-scale-masks-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_scale_masks

check_scale_masks(my_scale_masks)

# %% [markdown]
# ## Summary
#
# * Zero-shot editing = sampling with some tokens forced: at every scale the tokens outside the
#   (downsampled) mask are set to the image's own codes, the model samples the rest, and the next
#   scale is predicted from the mixed f̂ — so the new region agrees with the kept one.
# * A token is regenerated when at least half of its patch is masked: a small hole leaves the
#   coarse scales (the global layout) untouched, a border mask re-samples them.
# * Unmasked *tokens* are reproduced exactly; unmasked *pixels* only approximately (upsampled
#   token maps and the convolutional decoder spread each token over its neighbours).
# * The label is free: regenerating a region under another class is class-conditional editing.
#
# **Read next:** `08_evaluation.ipynb` if you have not yet — how to measure whether such samples
# are any good; `09_scaling_up.ipynb` for VAR vs M-VAR in numbers; `10_imagenet_256.ipynb` for
# the same pipeline at 256 px on a GPU. In the VAR paper: Sec. 4.4 and Fig. 6.
