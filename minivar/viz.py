"""Pictures: the image convention, its one uint8 converter, and grids for notebooks and run folders.

The convention: inside minivar an image batch is float (B, 3, H, W) in [-1, 1], the tokenizer's
range (``vae.encode`` takes it, ``vae.decode`` returns it; metrics, grids and files start from it).
Only the user-facing ``model.generate`` / ``model.edit`` return [0, 1] (multiply by 2, subtract 1 to
come back). Files hold uint8 (H, W, 3), written through ``to_uint8``.
"""
from __future__ import annotations

import numpy as np
import torch


def to_uint8(x_B3HW: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] -> uint8 array (B, H, W, 3), rounded to the nearest level (as PNG writers do)."""
    x = ((x_B3HW.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(columns: list[torch.Tensor], pad: int = 1, upscale: int = 1) -> np.ndarray:
    """Lay out columns of image batches (each (B, 3, H, W) in [-1, 1]) as one uint8 picture."""
    cols = [to_uint8(c) for c in columns]
    B, H, W, _ = cols[0].shape
    out = np.full((B * (H + pad) + pad, len(cols) * (W + pad) + pad, 3), 255, np.uint8)
    for j, c in enumerate(cols):
        for i in range(B):
            y, x = pad + i * (H + pad), pad + j * (W + pad)
            out[y:y + H, x:x + W] = c[i]
    return out.repeat(upscale, 0).repeat(upscale, 1) if upscale > 1 else out


def save_grid(path: str, columns: list[torch.Tensor], titles: list[str] | None = None, upscale: int = 4):
    """Write a PNG of the columns, with a title above each column when given."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = grid(columns, upscale=upscale)
    h, w = img.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100 + (0.3 if titles else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, h / (h + (30 if titles else 0))))
    ax.imshow(img, interpolation="nearest")
    ax.axis("off")
    if titles:
        W = img.shape[1] / len(columns)
        for j, t in enumerate(titles):
            ax.text((j + 0.5) * W, -4, t, ha="center", va="bottom", fontsize=8)
    fig.savefig(path)
    plt.close(fig)


def show(columns: list[torch.Tensor], title: str, upscale: int = 2, height: float = 4):
    """Notebooks: columns of image batches in [0, 1] as one inline picture."""
    import matplotlib.pyplot as plt

    plt.figure(figsize=(0.5 * len(columns) + 0.5, height))
    plt.imshow(grid([c * 2 - 1 for c in columns], upscale=upscale))
    plt.axis("off")
    plt.title(title, fontsize=9)
    plt.show()
