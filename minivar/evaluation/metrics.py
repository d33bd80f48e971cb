"""Sample-quality metrics that work offline, in a frozen classifier's features.

No Inception weights can be downloaded here, so on small data the feature network is a small
classifier trained on the dataset's own training split and then frozen (its test accuracy and
weights hash are reported with every number). The Fréchet distance in its features is called
**FD-cls** -- never FID: it is not comparable with published FIDs, nor across feature networks.

    FD        ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)   (eigenvalues, no sqrtm)
    KID       unbiased MMD^2 with the kernel (x.y / d + 1)^3, mean +- std over subsets (Binkowski 2018);
              reported as ``kid_e3``: x 10^3, on features standardised with the real set's mean and
              std, over 100 subsets of half the samples (``kid_readable``); ``kid`` is the raw form
    P / R     k-NN manifolds, k = 3, equal N (Kynkaanniemi et al. 2019)
    cond-acc  fraction of class-conditional samples the classifier assigns to their label
    floor     the same metrics between two real sets (train vs test) of the same N
    memorise  distance of each sample to its nearest training image vs test-to-train distances

The ImageNet protocol (FID with the Inception network, npz files) is in ``fid.py``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints import CheckpointError, atomic_save, load_weights, safe_load


# ---------------------------------------------------------------------- Fréchet distance, KID, P/R
def feature_stats(f_ND) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) in float64."""
    f = np.asarray(f_ND, dtype=np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Fréchet distance of two Gaussians, from eigenvalues of a symmetric PSD matrix (no sqrtm)."""
    mu1, mu2, s1, s2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, s1, s2))
    r1 = _sqrt_psd(s1)
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)  # same eigenvalues as s1 @ s2, but symmetric
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fd_features(f1, f2) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def kid(f1, f2, num_subsets: int = 50, subset_size: int = 500, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception-style distance on any features: (mean, std) of unbiased MMD^2 over subsets."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    d, rng, vals = f1.shape[1], np.random.default_rng(seed), []
    for _ in range(num_subsets):
        x, y = f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
        vals.append(off(kxx) + off(kyy) - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


KID_MIN_N = 20  # below this, subsets of N/2 are too small for the estimate to mean anything


def kid_readable(f_fake, f_real, num_subsets: int = 100, seed: int = 0) -> tuple[float, float] | None:
    """KID the way papers print it, and readable at small N: (mean, std) of 10^3 x unbiased MMD^2.

    * The features are standardised with the real set's per-dimension mean and std first. The
      cubic kernel was designed for Inception's pool features (values of order 0.1-1); our
      classifier's features are larger, which makes raw MMD^2 values huge and hard to compare.
    * Each subset holds half of the N samples, drawn anew: the subsets differ, so the std says how
      much the number moves with the draw (with subsets of all N, every subset is the whole set
      and the std is 0).
    * The estimator is unbiased, so two sets from the same distribution give values scattered
      around 0, negative ones included: a value within a std or two of the real-vs-real floor
      means "indistinguishable at this N", not "better than real".

    None when N < KID_MIN_N (too few samples for subsets of N/2)."""
    f_fake, f_real = np.asarray(f_fake, np.float64), np.asarray(f_real, np.float64)
    n = min(len(f_fake), len(f_real))
    if n < KID_MIN_N:
        return None
    mu, sd = f_real.mean(0), f_real.std(0) + 1e-6
    m, v = kid((f_fake - mu) / sd, (f_real - mu) / sd, num_subsets=num_subsets, subset_size=n // 2, seed=seed)
    return 1e3 * m, 1e3 * v


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """k-NN precision (fakes inside the real manifold) and recall (reals inside the fake one)."""
    r, f = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (real, fake))
    if len(r) != len(f):
        raise ValueError(f"precision/recall need equal N (got {len(r)} real, {len(f)} fake): they are biased in N")
    if len(r) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples")
    rr = torch.cdist(r, r).kthvalue(k + 1, dim=1).values  # k-th neighbour, self excluded
    ff = torch.cdist(f, f).kthvalue(k + 1, dim=1).values
    d = torch.cdist(f, r)
    return (d <= rr[None]).any(1).double().mean().item(), (d.T <= ff[None]).any(1).double().mean().item()


def memorisation(samples, train, test) -> dict:
    """Nearest-training-image distances of samples vs of held-out reals (flattened pixels or features).

    A ratio well below 1 (samples much closer to training images than real test images are) or a
    large ``frac_closer_than_test_p1`` signals copying.
    """
    s, tr, te = (torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten(1) for a in (samples, train, test))
    ds = torch.cdist(s, tr).min(1).values
    dt = torch.cdist(te, tr).min(1).values
    p1 = torch.quantile(dt, 0.01)
    return {"median_nn_sample_to_train": ds.median().item(), "median_nn_test_to_train": dt.median().item(),
            "ratio": (ds.median() / dt.median().clamp_min(1e-12)).item(),
            "frac_closer_than_test_p1": (ds < p1).double().mean().item()}


# ---------------------------------------------------------------------- the frozen feature classifier
class SmallCNN(nn.Module):
    """3 conv layers -> 128-d features -> class logits; input (B, 3, S, S) in [-1, 1]."""

    def __init__(self, num_classes: int, width: int = 32, feat_dim: int = 128):
        super().__init__()
        c = width
        self.net = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.GELU(), nn.Conv2d(c, 2 * c, 3, 2, 1), nn.GELU(),
                                 nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.GELU(), nn.AdaptiveAvgPool2d(2),
                                 nn.Flatten(), nn.Linear(16 * c, feat_dim), nn.GELU())
        self.fc = nn.Linear(feat_dim, num_classes)
        self.num_classes, self.width, self.feat_dim = num_classes, width, feat_dim

    def features(self, x):
        return self.net(x)

    def forward(self, x):
        return self.fc(self.features(x))


def train_classifier(x, y, num_classes: int, epochs: int = 10, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0) -> SmallCNN:
    """Train the feature network on real training images (light shift augmentation), then freeze it."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = SmallCNN(num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    clf.train()
    for _ in range(steps):
        i = torch.randint(len(x), (batch_size,), generator=g)
        xb = x[i]
        sh = torch.randint(-1, 2, (2,), generator=g).tolist()  # +-1 px shifts
        xb = torch.roll(xb, shifts=sh, dims=(2, 3))
        loss = F.cross_entropy(clf(xb), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return clf.eval().requires_grad_(False)


@torch.no_grad()
def classify(clf: SmallCNN, x, batch_size: int = 256) -> tuple[np.ndarray, torch.Tensor]:
    """(features (N, D) float64, predicted labels (N,))."""
    clf.eval()
    feats, preds = [], []
    for i in range(0, len(x), batch_size):
        f = clf.features(x[i:i + batch_size])
        feats.append(f)
        preds.append(clf.fc(f).argmax(-1))
    return torch.cat(feats).double().numpy(), torch.cat(preds)


def state_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_classifier(clf: SmallCNN, path: str, **info) -> None:
    atomic_save({"kind": "minivar-classifier", "num_classes": clf.num_classes, "width": clf.width,
                 "feat_dim": clf.feat_dim, "state_dict": clf.state_dict(), "info": info}, path)


def load_classifier(path: str) -> tuple[SmallCNN, dict]:
    blob = safe_load(path)
    if not isinstance(blob, dict) or blob.get("kind") != "minivar-classifier":
        raise CheckpointError(f"{path} is not a minivar feature classifier (those are written by `eval`, "
                              "in runs/classifiers/)")
    clf = SmallCNN(blob["num_classes"], blob["width"], blob["feat_dim"])
    load_weights(clf, blob["state_dict"], path)
    return clf.eval().requires_grad_(False), blob["info"]


# ---------------------------------------------------------------------- the report
def round_robin(labels_N: torch.Tensor) -> torch.Tensor:
    """An order of 0..N-1 that cycles through the classes (first of each class, then the second, ...),
    so that any prefix of it keeps the classes balanced."""
    order = torch.argsort(labels_N, stable=True)
    counts = torch.bincount(labels_N)
    rank = torch.empty_like(labels_N)
    rank[order] = torch.arange(len(labels_N)) - (torch.cumsum(counts, 0) - counts)[labels_N[order]]
    return torch.argsort(rank * (int(labels_N.max()) + 1) + labels_N, stable=True)


def evaluate_samples(clf: SmallCNN, fake, fake_labels, real_test, real_train, kid_subset: int = 100) -> dict:
    """Every small-data metric of a set of generated images (N fake; the reals are cut to N).
    When there are more samples than reals, the kept samples are spread evenly over the classes."""
    n = min(len(fake), len(real_test), len(real_train))
    keep = round_robin(fake_labels)[:n]
    fake, fake_labels = fake[keep], fake_labels[keep]
    f_fake, pred = classify(clf, fake)
    f_test, _ = classify(clf, real_test[:n])
    f_train, _ = classify(clf, real_train[:n])
    kid_m, kid_s = kid(f_fake, f_test, subset_size=min(kid_subset, n))
    floor_kid, _ = kid(f_train, f_test, subset_size=min(kid_subset, n))
    kid_e3, floor_e3 = kid_readable(f_fake, f_test), kid_readable(f_train, f_test)
    p, r = precision_recall(f_test, f_fake)
    fp, fr = precision_recall(f_test, f_train)
    return {"N": n, "fd_cls": fd_features(f_fake, f_test), "kid": kid_m, "kid_std": kid_s,
            "kid_e3": kid_e3[0] if kid_e3 else None, "kid_e3_std": kid_e3[1] if kid_e3 else None,
            "precision": p, "recall": r, "cond_acc": (pred == fake_labels).double().mean().item(),
            "floor": {"fd_cls": fd_features(f_train, f_test), "kid": floor_kid,
                      "kid_e3": floor_e3[0] if floor_e3 else None, "kid_e3_std": floor_e3[1] if floor_e3 else None,
                      "precision": fp, "recall": fr},
            "memorisation_pixels": memorisation(fake, real_train, real_test[:n]),
            "memorisation_features": memorisation(f_fake, classify(clf, real_train)[0], f_test)}
