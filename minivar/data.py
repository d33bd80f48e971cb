"""Datasets that work offline. Every loader returns (images, labels): float (N, 3, S, S) in
[-1, 1] and LongTensor (N,), already at the size the model wants.

- ``synthetic``: our own deterministic shapes-and-colours generator (class = shape), for tests.
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (ships inside the package), upscaled.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")


class DatasetMissingError(RuntimeError):
    """A dataset whose files or package are not installed; the message says how to get it."""


def _shape_mask(kind: str, size: int, cx, cy, r, angle) -> torch.Tensor:
    """Boolean (size, size) mask of one shape centred at (cx, cy) with radius r."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy = xs - cx, ys - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy  # rotated coordinates
    if kind == "disc":
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == "square":
        return (u.abs() <= r * 0.8) & (v.abs() <= r * 0.8)
    if kind == "triangle":
        return (v <= r * 0.6) & (v >= -r + 2 * u.abs() * 0.9)
    if kind == "cross":
        w = max(r * 0.3, 0.75)
        return ((u.abs() <= w) & (v.abs() <= r)) | ((v.abs() <= w) & (u.abs() <= r))
    if kind == "ring":
        d2 = dx ** 2 + dy ** 2
        return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)
    if kind == "bar":
        return (u.abs() <= r) & (v.abs() <= max(r * 0.3, 0.75))
    raise ValueError(kind)


def synthetic(n: int = 512, size: int = 16, num_classes: int = 4, seed: int = 0):
    """n images of one coloured shape on a dark background; label = shape index (< num_classes)."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g)
    imgs = torch.empty(n, 3, size, size)
    for i in range(n):
        u = torch.rand(6, generator=g).tolist()
        r = size * (0.22 + 0.15 * u[0])
        cx, cy = size * (0.35 + 0.3 * u[1]), size * (0.35 + 0.3 * u[2])
        m = _shape_mask(SHAPES[labels[i]], size, cx, cy, r, u[3] * math.pi).float()
        colour = torch.rand(3, generator=g) * 0.6 + 0.4  # bright foreground
        bg = torch.rand(3, generator=g) * 0.25  # dark background
        imgs[i] = bg[:, None, None] * (1 - m) + colour[:, None, None] * m
    return imgs * 2 - 1, labels


def digits(size: int = 16):
    """scikit-learn's 8x8 digits (values 0..16), bilinearly upscaled to size x size, grey as RGB."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetMissingError("the digits dataset comes with scikit-learn: "
                                  "pip install 'minivar[data]' (or pip install scikit-learn)") from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()
    return x, torch.tensor(d.target, dtype=torch.long)


DATASETS = {"synthetic": synthetic, "digits": digits}


def load(name: str, size: int, **kw):
    if name not in DATASETS:
        raise DatasetMissingError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    return DATASETS[name](size=size, **kw)


def split(images, labels, val_fraction: float = 0.1, seed: int = 0):
    """Seeded random split -> (train_images, train_labels), (val_images, val_labels)."""
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(images) * val_fraction))
    va, tr = perm[:n_val], perm[n_val:]
    return (images[tr], labels[tr]), (images[va], labels[va])
