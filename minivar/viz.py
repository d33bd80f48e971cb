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


# ---------------------------------------------------------------------- what depends on what
def influence(model, labels_B, x_BlC) -> torch.Tensor:
    """(L, L-1): how strongly each output position's logits depend on each teacher-input position.

    Entry [i, j] is the norm of d(logits_i . r_i) / d(x_j), averaged over the batch, for a fixed
    random direction r_i per output (one backward pass per output position). Zero means output i
    cannot see input j at all -- the mask and the Mamba scan decide which entries can be non-zero."""
    model.eval()
    x = x_BlC.detach().clone().requires_grad_(True)
    logits = model(labels_B, x)
    g = torch.Generator().manual_seed(0)
    r_LV = torch.randn(logits.shape[1:], generator=g, dtype=logits.dtype)
    rows = []
    for i in range(logits.shape[1]):
        (grad,) = torch.autograd.grad((logits[:, i] * r_LV[i]).sum(), x, retain_graph=i + 1 < logits.shape[1])
        rows.append(grad.norm(dim=-1).mean(0))
    return torch.stack(rows).detach()


def show_influence(maps: dict, patch_nums, title: str = "") -> None:
    """Notebooks: influence maps side by side (log scale), scale boundaries drawn as lines. Input
    position j is the teacher input of token j + 1 (built from the scales before that token's)."""
    import matplotlib.pyplot as plt

    offs = np.cumsum([0] + [p * p for p in patch_nums])
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.2))
    axes = np.atleast_1d(axes)
    for ax, (name, m) in zip(axes, maps.items()):
        m = m.numpy()
        shown = np.log10(m + m.max() * 1e-6)
        ax.imshow(np.where(m > m.max() * 1e-7, shown, np.nan), cmap="viridis", interpolation="nearest")
        for o in offs[1:-1]:
            ax.axhline(o - 0.5, color="w", lw=0.6)
            ax.axvline(o - 1.5, color="w", lw=0.6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("teacher-input position j (blank: no influence)", fontsize=8)
        ax.set_ylabel("output position i", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    plt.tight_layout()
    plt.show()


# ---------------------------------------------------------------------- generation, step by step
def generation_steps(model, vae, labels_B, cfg: float = 1.5, seed: int = 0, **sampling) -> list[dict]:
    """One dict per sampling step k: the token map of scale k (B, pn, pn), the image decoded from
    scales 0..k (B, 3, H, W in [0, 1]) and the guidance weight t_k = cfg * k / (K - 1) used at k."""
    with torch.no_grad():
        _, idx = model.generate(labels_B, cfg=cfg, seed=seed, vae=vae, return_indices=True, **sampling)
        images = vae.decode_per_scale(idx)
    K, pns = len(idx), vae.patch_nums
    return [{"k": k, "tokens": idx[k].view(-1, pns[k], pns[k]), "image": (images[k] + 1) / 2,
             "t": cfg * k / (K - 1)} for k in range(K)]


def animate_generation(steps: list[dict], vocab_size: int, interval_ms: int = 900):
    """Notebooks: a matplotlib animation of ``generation_steps`` (one frame per scale): each
    sample's token map, the picture so far, and the CFG weight. Returns the HTML to display."""
    import matplotlib.pyplot as plt
    from matplotlib import animation

    n = steps[0]["image"].shape[0]
    side = steps[-1]["tokens"].shape[-1]
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6))
    axes = np.asarray(axes).reshape(2, n)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    tok_art = [axes[0, b].imshow(np.zeros((side, side)), cmap="tab20", vmin=0, vmax=vocab_size - 1) for b in range(n)]
    img_art = [axes[1, b].imshow(np.zeros((2, 2, 3))) for b in range(n)]
    axes[0, 0].set_ylabel("token map", fontsize=8)
    axes[1, 0].set_ylabel("decoded", fontsize=8)
    head = fig.suptitle("", fontsize=9)

    def frame(s):
        for b in range(n):
            tok_art[b].set_data(s["tokens"][b].numpy())
            tok_art[b].set_extent((-0.5, s["tokens"].shape[-1] - 0.5, s["tokens"].shape[-1] - 0.5, -0.5))
            img_art[b].set_data(s["image"][b].permute(1, 2, 0).clamp(0, 1).numpy())
        pn = s["tokens"].shape[-1]
        head.set_text(f"step {s['k'] + 1} of {len(steps)}: scale {pn}x{pn}, guidance t = {s['t']:.2f}")
        return tok_art + img_art + [head]

    anim = animation.FuncAnimation(fig, frame, frames=steps, interval=interval_ms, blit=False)
    html = anim.to_jshtml(default_mode="loop")
    plt.close(fig)
    return html
