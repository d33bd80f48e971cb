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
# # 08 · Evaluation, honestly
#
# **You will learn** why the FID of the VAR and M-VAR papers cannot be computed here, and what
# `minivar.evaluation.metrics` measures instead: a small feature classifier trained on the data's own
# training split (and its test accuracy), the Fréchet distance in its features (**FD-cls**,
# re-derived below from eigenvalues and checked on Gaussians whose answer we know), KID,
# precision / recall with k = 3, conditional accuracy, the real-vs-real floor every number must
# be read against, and a nearest-neighbour memorisation check. You will see what N (samples per
# evaluation) and seeds do to these numbers, and evaluate a small VAR trained on digits exactly
# like `python -m minivar eval` does.
#
# **This notebook needs** a CPU and about 30 seconds (classifier 5 s, 3 × 180 samples and their
# metrics 10 s). It evaluates the committed demo VAR (`weights/digits16`).

# %% tags=["setup"]
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar import data, viz
from minivar.evaluation import inception, metrics
from minivar.cli import runs
from minivar.teaching import tutorial

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 0. Why not FID?
#
# FID (Heusel et al. 2017) is the Fréchet distance between Gaussians fitted to the 2048-d pool
# features of one particular Inception-v3 network, on 50,000 samples against ImageNet's
# statistics. Three things stop us here:
#
# 1. **The weights.** FID is defined by `pt_inception-2015-12-05-6726825d.pth`; a different
#    Inception (torchvision's, say) gives different numbers. Nothing is downloaded on this
#    machine, and minivar refuses to pretend:

# %%
try:
    inception.check_weights_hash("pt_inception-2015-12-05-6726825d.pth")
except FileNotFoundError as e:
    print("FileNotFoundError:", e)

# %% [markdown]
# 2. **The data.** Inception was trained on ImageNet photographs at 299 px. Its features of 16 px
#    grey digits say little about digits.
# 3. **N.** FID is biased upwards at small N (the covariance estimate is noisy); published numbers
#    use 50,000 samples. We have 179 held-out digits.
#
# So on small data minivar trains its own feature network on the training split, freezes it,
# and reports the Fréchet distance in its 128-d features as **FD-cls** — a useful relative number
# for *this* dataset, feature network and N, and never comparable with a published FID. (On a GPU
# with ImageNet, `minivar.evaluation.fid.pack_npz` writes the file OpenAI's evaluator reads; notebook 10.)

# %% [markdown]
# ## 1. A model to evaluate
#
# The demo tokenizer and VAR of notebook 00, trained on digits at 16 px with the recipe of
# notebooks 02 and 03. The split is `data.split(..., 0.1, seed=0)`, the one they were trained
# on: 1,618 training and 179 held-out digits.

# %%
(train_x, train_y), (val_x, val_y) = tutorial.digits_split()
vae, model, _ = tutorial.demo_models()  # the committed tokenizer and VAR (depth 6, width 96), as in notebook 00
patch_nums = vae.patch_nums
print(f"{len(train_x)} training and {len(val_x)} held-out digits; VAR of depth {model.config.depth}, "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## 2. The feature network
#
# `metrics.train_classifier` trains `SmallCNN` (3 conv layers → 128-d features → 10 logits) on the
# training digits with ±1 px shifts, then freezes it. Its held-out accuracy tells you whether its
# features know what a digit is; the eval report prints it (and a SHA-256 of its weights) next to
# every FD-cls, because a different feature network means different numbers.

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.time()
clf = metrics.train_classifier(train_x, train_y, num_classes=10, epochs=10, seed=0)
val_feats, val_pred = metrics.classify(clf, val_x)
clf_acc = (val_pred == val_y).double().mean().item()
print(f"feature classifier trained in {time.time() - t0:.0f} s: test accuracy {clf_acc * 100:.1f}% "
      f"on {len(val_x)} held-out digits, sha256 {metrics.state_sha256(clf)[:12]}")

# %%
print("features:", val_feats.shape, val_feats.dtype, "| test accuracy above 90%:", clf_acc > 0.9)

# %% [markdown]
# ## 3. The Fréchet distance, re-derived
#
# Fit a Gaussian to each feature set, N(μ1, Σ1) and N(μ2, Σ2). The squared 2-Wasserstein
# ("Fréchet") distance between two Gaussians has a closed form (Dowson & Landau 1982):
#
# $$ d^2 = \|\mu_1-\mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
#          - 2\,\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}. $$
#
# The last trace is the sum of the square roots of the eigenvalues of the symmetric PSD matrix
# Σ1^½ Σ2 Σ1^½ (the same eigenvalues as Σ1Σ2, which is not symmetric). So no `scipy.linalg.sqrtm`
# with its complex round-off: two symmetric eigendecompositions. Inline:

# %%
def sqrt_psd(S):
    w, V = np.linalg.eigh((S + S.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def fd_by_hand(mu1, S1, mu2, S2):
    R = sqrt_psd(S1)
    ev = np.linalg.eigvalsh(R @ S2 @ R)
    return ((mu1 - mu2) ** 2).sum() + np.trace(S1) + np.trace(S2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum()


rng = np.random.default_rng(0)
D = 5
A, B = rng.normal(size=(D, D)), rng.normal(size=(D, D))
S1, S2 = A @ A.T + 0.1 * np.eye(D), B @ B.T + 0.1 * np.eye(D)
mu1, mu2 = rng.normal(size=D), rng.normal(size=D)
delta = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
print("by hand == metrics.frechet_distance:",
      np.isclose(fd_by_hand(mu1, S1, mu2, S2), metrics.frechet_distance(mu1, S1, mu2, S2)))
print(f"same Gaussian                 -> {abs(metrics.frechet_distance(mu1, S1, mu1, S1)):.6f}")
print(f"shifted by delta (same Σ)     -> {metrics.frechet_distance(mu1, S1, mu1 + delta, S1):.6f}"
      f"   closed form |delta|^2 = {(delta ** 2).sum():.6f}")
a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
print(f"diagonal Σ1 = diag(a), Σ2 = diag(b) -> {metrics.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)):.6f}"
      f"   closed form Σ(√a - √b)^2 = {((np.sqrt(a) - np.sqrt(b)) ** 2).sum():.6f}")

# %% [markdown]
# In practice μ and Σ are *estimated* from N samples, and the estimate is biased upwards: two
# samples of the *same* Gaussian have a distance above 0 that shrinks roughly like 1/N. This is why a
# small-N FD must be read against the floor of two real sets of the same N, and why two FDs at
# different N cannot be compared:

# %%
D = 16
for N in (100, 400, 1600, 6400):
    x, y = rng.normal(size=(N, D)), rng.normal(size=(N, D))
    print(f"N = {N:5d}: FD(sample, sample of the same Gaussian) = {metrics.fd_features(x, y):.2f}")

# %% [markdown]
# ## 4. Evaluating the model: what `python -m minivar eval` does
#
# `runs.evaluate` (the `eval` CLI verb; the demo calls it too) samples `per_class` images of every
# class for each seed with `runs.sample_classes` and hands them to `metrics.evaluate_samples`,
# which computes, at **N** = min(#samples, #held-out, #train) images:
#
# * **FD-cls** — samples vs held-out reals, in the classifier's features;
# * **KID** — unbiased MMD² with the cubic polynomial kernel (unbiased in N, so more comparable
#   across N than FD). Reported as `kid_e3`, the way papers print it and readable at this N:
#   ×10³, on features standardised with the real set's mean and std (the kernel was designed for
#   Inception's small feature values; ours are larger), mean ± std over 100 random subsets of N/2
#   (subsets of all N would all be the whole set, and their ± would be 0). Being unbiased, it
#   scatters around 0 for two sets of one distribution, negative values included. The raw form
#   (`kid`: no standardising, subsets of min(N, 100)) is kept in the report for older results;
# * **precision / recall** (k = 3) — the fraction of samples inside the k-NN balls of the reals
#   (fidelity), and of reals inside the balls of the samples (coverage); both need equal N;
# * **conditional accuracy** — how many class-c samples the classifier calls c;
# * the **floor** — the same metrics between N training and N held-out reals: the best a perfect
#   model could score at this N;
# * **memorisation** — each sample's distance to its nearest training image, vs the same for held-out reals.
#
# A **seed** is one draw of the sampler's randomness; the spread over seeds is the sampling noise
# of the numbers (it does not cover the randomness of training — that would need several runs).
# We use 18 per class (180 samples, N = 179, the size of the held-out set), 3 seeds, cfg 1.5, no top-k / top-p:

# %%
# NBVAL_IGNORE_OUTPUT
t0 = time.time()
seeds, per_class = [0, 1, 2], 18
per_seed = []
for s in seeds:
    fake, fake_labels = runs.sample_classes(model, vae, per_class, cfg=1.5, top_k=0, top_p=0.0, seed=s)
    per_seed.append(metrics.evaluate_samples(clf, fake, fake_labels, val_x, train_x))
keys = ("fd_cls", "kid", "kid_e3", "precision", "recall", "cond_acc")
report = {"N": per_seed[0]["N"], "seeds": seeds, "sampling": {"cfg": 1.5, "top_k": 0, "top_p": 0.0, "per_class": per_class},
          "feature_net": {"arch": "SmallCNN(width 32, 128-d features)", "data": "digits", "size": 16,
                          "test_acc": clf_acc, "sha256": metrics.state_sha256(clf)},
          "summary_mean_std": {k: (float(np.mean([r[k] for r in per_seed])), float(np.std([r[k] for r in per_seed])))
                               for k in keys},
          "per_seed": per_seed, "tokenizer": runs.vae_report(vae, val_x, clf)}
runs.print_report(report)
print(f"\n(sampling + metrics in {time.time() - t0:.0f} s)")

# %% [markdown]
# The same numbers as a table: the model (mean ± std over the 3 seeds) next to the real-vs-real
# floor. Lower is better for FD-cls and KID, higher for the rest.

# %%
# NBVAL_IGNORE_OUTPUT
s, fl = report["summary_mean_std"], per_seed[0]["floor"]
print(f"{'metric':<12}{'model (3 seeds)':>20}{'real vs real':>15}")
for k, fmt in (("fd_cls", ".2f"), ("kid_e3", ".2f"), ("precision", ".2f"), ("recall", ".2f")):
    print(f"{k:<12}{format(s[k][0], fmt):>12} ± {format(s[k][1], fmt):<6}{format(fl[k], fmt):>14}")
print(f"{'cond_acc':<12}{format(s['cond_acc'][0], '.2f'):>12} ± {format(s['cond_acc'][1], '.2f'):<6}"
      f"{format(clf_acc, '.2f'):>14}   (real: the classifier's test accuracy)")

# %% [markdown]
# What to read from it (the checks below are loose on purpose: they hold on any machine):
#
# * The floor is **not zero**: at N = 179 two real sets of digits sit at an FD-cls of a few units
#   — any model number below the floor's noise is "as good as we can measure".
# * The small VAR is above the floor in FD-cls: its digits are recognisable (conditional
#   accuracy well above the 10% of chance) but not yet as varied as real ones. KID cannot tell
#   it from the floor at this N: the spread over subsets (the ± of the report) is larger than
#   the gap — at N = 179 it is not a meaningful number, and the report says so.
# * Precision and recall at k = 3 are coarse at this N; compare them with the floor's, not with 1.
#   A typical short run here shows high precision and low recall: samples that look like real
#   digits but cover less of their variety (guidance, cfg 1.5, trades diversity for fidelity).
# * KID ×10³ of the floor scatters around 0 (it may come out negative): read the model's value
#   against the floor's ± (the spread over subsets), not against 0, and compare KIDs of one
#   feature network only. The "seeds" ± of the table is the spread over sampling seeds instead.

# %%
print("N =", report["N"], "| seeds", seeds, "| samples per seed", per_class * 10)
print("floor FD-cls > 0 (finite N):", fl["fd_cls"] > 0)
print("model FD-cls above the floor:", s["fd_cls"][0] > fl["fd_cls"])
print("conditional accuracy above chance (10%):", s["cond_acc"][0] > 0.1)
print("all of precision, recall in [0, 1]:", all(0 <= r[k] <= 1 for r in per_seed for k in ("precision", "recall")))

# %% [markdown]
# ## 5. Is the model copying its training set?
#
# A model that memorised its training images would get a perfect FD-cls. `metrics.memorisation`
# compares the distance from each sample to its nearest *training* image with the distance from
# each *held-out* real to its nearest training image. A ratio of the medians well below 1 (or many
# samples closer than the closest 1% of held-out reals) means copying. As a sanity check, the
# training images themselves are the perfect copier:

# %%
mem = per_seed[0]["memorisation_pixels"]
copier = metrics.memorisation(train_x[:179], train_x, val_x)
print(f"the copier: ratio {copier['ratio']:.2f}, fraction closer than test's 1% quantile "
      f"{copier['frac_closer_than_test_p1']:.2f}")
print("the model copies? (ratio < 0.5):", mem["ratio"] < 0.5)

# %% [markdown]
# Samples of seed 0 (columns = classes 0–9) and, below them, the nearest training image of each
# sample in pixels:

# %%
fake, _ = runs.sample_classes(model, vae, 4, cfg=1.5, top_k=0, top_p=0.0, seed=0)
nn_idx = torch.cdist(fake.flatten(1), train_x.flatten(1)).argmin(1)
cols = [torch.cat((fake[4 * c:4 * c + 4], train_x[nn_idx[4 * c:4 * c + 4]])) for c in range(10)]
plt.figure(figsize=(5, 4.2))
plt.imshow(viz.grid(cols, upscale=2))
plt.axhline(4 * 17 * 2 + 1, color="red", lw=1)
plt.axis("off")
plt.title("samples (top 4 rows) | nearest training image (bottom 4)", fontsize=9)
plt.show()

# %% [markdown]
# ## 6. Exercise
#
# Write the unbiased MMD² of KID for one subset: `my_mmd2_unbiased(x, y)` with x, y numpy arrays
# (m, d) and the kernel k(a, b) = (a·b / d + 1)³. "Unbiased" means the within-set means leave out
# the diagonal (a point with itself): average k(x_i, x_j) over i ≠ j, the same for y, minus twice
# the mean of k(x_i, y_j) over all pairs.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb08-mmd2-unbiased", "locked": false, "schema_version": 3, "solution": true}
def my_mmd2_unbiased(x, y):
    ### BEGIN SOLUTION
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * kxy.mean()
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb08-mmd2-unbiased-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_mmd2_unbiased

check_mmd2_unbiased(my_mmd2_unbiased)

# %% [markdown]
# ## Summary
#
# * FID needs one specific Inception network, ImageNet-like images and 50k samples; none fits
#   here. minivar reports **FD-cls**: the Fréchet distance in the features of a small classifier
#   trained on the dataset's own training split (report its test accuracy and hash with it).
# * The Fréchet distance of two Gaussians needs only symmetric eigendecompositions; it is |δ|²
#   for a shift and Σ(√a − √b)² for diagonal covariances. Estimated from N samples it is biased
#   upwards (roughly ∝ 1/N), so numbers are only comparable at the same N, and always next to the
#   real-vs-real floor.
# * KID (unbiased), precision / recall (k = 3, equal N), conditional accuracy and a memorisation
#   check complete the picture; seeds measure the sampling noise, not the training noise.
# * `python -m minivar eval --run RUN --seeds 0,1,2` runs exactly section 4 on a run folder and
#   writes `eval.json`.
#
# **Read next:** `09_scaling_up.ipynb` — these metrics applied to a small study, VAR vs M-VAR on
# three datasets with seeds and floors; then `10_imagenet_256.ipynb` (the real FID protocol) and
# `11_zero_shot_editing.ipynb` (editing with the same kind of model, no retraining).
