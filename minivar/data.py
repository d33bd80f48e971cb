"""Datasets that work offline. Every loader returns (images, labels): float (N, 3, S, S) in
[-1, 1] and LongTensor (N,), already at the size the model wants.

- ``synthetic``: our own deterministic shapes-and-colours generator (class = shape), for tests.
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (ships inside the package), upscaled.
- ``fashion``: Fashion-MNIST, 60k + 10k 28x28 grey, official split (Debian ``dataset-fashion-mnist``
  or the four IDX files in a folder you point to).
- ``emoji``: 1,794 EmojiOne 64x64 colour PNGs with 10 categories (Debian ``ruby-gemojione``).
- ``imagefolder``: ``root/<class>/*.png|jpg`` (ImageNet layout), VAR's preprocessing.

Nothing is downloaded: a missing dataset raises DatasetMissingError with the command that gets it.
"""
from __future__ import annotations

import glob
import gzip
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

SHAPES = ("disc", "square", "triangle", "cross", "ring", "bar")


class DatasetMissingError(RuntimeError):
    """A dataset whose files or package are not installed; the message says how to get it."""


class DatasetFormatError(ValueError):
    """Dataset files that exist but are not what they should be (truncated, wrong magic, mixed sizes)."""


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
                                  "pip install scikit-learn") from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 2 - 1).expand(-1, 3, -1, -1).contiguous()
    return x, torch.tensor(d.target, dtype=torch.long)


def _to_size(x_N1HW: torch.Tensor, size: int, pad_value: float = 0.0) -> torch.Tensor:
    """Grey images in [0, 1] at any side -> size x size (28 -> 32 pads by 2 px, else antialiased resize)."""
    side = x_N1HW.shape[-1]
    if size == side:
        return x_N1HW
    if size > side and (size - side) % 2 == 0 and size - side <= 8:
        p = (size - side) // 2
        return F.pad(x_N1HW, (p, p, p, p), value=pad_value)
    return F.interpolate(x_N1HW, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_HOWTO = ("install the Debian package: `sudo apt-get install dataset-fashion-mnist` (or `make data-fashion`), "
                 "or pass --data_path DIR with the four Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz], ...)")


def read_idx(path: str, ndim: int) -> torch.Tensor:
    """An IDX file (MNIST format, optionally .gz) -> uint8 tensor; checks magic number and size."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetFormatError(f"cannot read {path}: {e}") from None
    head = 4 + 4 * ndim
    if len(raw) < head or int.from_bytes(raw[:4], "big") != 0x0800 + ndim:
        raise DatasetFormatError(f"{path} is not an IDX file of {ndim} dims (bad magic number)")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - head != math.prod(dims):
        raise DatasetFormatError(f"{path} holds {len(raw) - head} bytes of data, its header says "
                                 f"{dims} = {math.prod(dims)}: the file is truncated or corrupt")
    return torch.frombuffer(bytearray(raw[head:]), dtype=torch.uint8).view(*dims)


def _find(folder: str, name: str) -> str | None:
    for cand in (name + ".gz", name):
        if os.path.exists(os.path.join(folder, cand)):
            return os.path.join(folder, cand)
    return None


def fashion_splits(size: int = 32, path: str | None = None):
    """Fashion-MNIST, official split -> ((train_x, train_y), (test_x, test_y)), grey as RGB in [-1, 1]."""
    folder = path or FASHION_DIR
    out = []
    for split_ in ("train", "test"):
        files = [_find(folder, n) for n in FASHION_FILES[split_]]
        if None in files:
            raise DatasetMissingError(f"Fashion-MNIST not found in {folder}: {FASHION_HOWTO}")
        x, y = read_idx(files[0], 3), read_idx(files[1], 1)
        if len(x) != len(y):
            raise DatasetFormatError(f"{files[0]} holds {len(x)} images but {files[1]} {len(y)} labels")
        x = _to_size(x[:, None].float() / 255, size)
        out.append(((x * 2 - 1).expand(-1, 3, -1, -1), y.long()))
    return tuple(out)


def fashion(size: int = 32, path: str | None = None):
    """Fashion-MNIST, train then test (70,000 images); ``splits`` keeps the official split."""
    (tx, ty), (vx, vy) = fashion_splits(size, path)
    return torch.cat([tx, vx]), torch.cat([ty, vy])


GEMOJIONE_GLOB = "/usr/share/rubygems-integration/all/gems/gemojione-*"
EMOJI_HOWTO = ("install the Debian package: `sudo apt-get install ruby-gemojione` (or `make data-emoji`), "
               "or pass --data_path DIR holding index.json and png/*.png from the gemojione gem")
EMOJI_CATEGORIES = ("people", "symbols", "flags", "objects", "nature", "activity", "travel", "food")


def emoji(size: int = 32, path: str | None = None):
    """EmojiOne 2.x art (ruby-gemojione): RGBA PNGs composited on white, label = category (8 classes)."""
    from PIL import Image
    if path is None:
        gems = sorted(glob.glob(GEMOJIONE_GLOB))
        path = gems[-1] if gems else None
    idx_json = next((p for p in (os.path.join(path or "", "config", "index.json"),
                                 os.path.join(path or "", "index.json")) if path and os.path.exists(p)), None)
    if idx_json is None:
        raise DatasetMissingError(f"emoji set not found{' in ' + path if path else ''}: {EMOJI_HOWTO}")
    png_dir = next((d for d in (os.path.join(path, "assets", "png"), os.path.join(path, "png"))
                    if os.path.isdir(d)), None)
    if png_dir is None:
        raise DatasetMissingError(f"no png/ folder next to {idx_json}: {EMOJI_HOWTO}")
    try:
        with open(idx_json) as f:
            index = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{idx_json} is not valid JSON: {e}") from None
    imgs, labels = [], []
    for entry in index.values():
        cat, code = entry.get("category"), entry.get("unicode")
        file = os.path.join(png_dir, f"{code}.png")
        if cat not in EMOJI_CATEGORIES or not os.path.exists(file):
            continue
        im = Image.open(file).convert("RGBA").resize((size, size), Image.LANCZOS)
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        imgs.append(torch.from_numpy(np.asarray(Image.alpha_composite(bg, im).convert("RGB")).copy()))
        labels.append(EMOJI_CATEGORIES.index(cat))
    if not imgs:
        raise DatasetFormatError(f"{idx_json} lists no emoji with a PNG in {png_dir}")
    x = torch.stack(imgs).view(-1, size, size, 3).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x.contiguous(), torch.tensor(labels)


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_folder_files(path: str | None, limit: int = 0) -> tuple[list[str], list[int]]:
    """``path/<class>/*`` -> (files, labels), class = index of the sorted folder name (as ImageFolder).

    Lists names only (cheap even for ImageNet's 1.28M files); ``limit`` > 0 keeps the first per class.
    """
    if not path or not os.path.isdir(path):
        raise DatasetMissingError(f"image folder {path!r} does not exist; pass --data_path DIR laid out as "
                                  "DIR/<class>/<image>.png|jpg (ImageNet: train/n01440764/*.JPEG)")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    files, labels = [], []
    for c, d in enumerate(classes):
        ims = [f for f in sorted(glob.glob(os.path.join(path, d, "*"))) if f.lower().endswith(IMAGE_EXTS)]
        files += ims[:limit or None]
        labels += [c] * len(ims[:limit or None])
    if not files:
        raise DatasetFormatError(f"no images ({', '.join(IMAGE_EXTS)}) in {path}/<class>/ "
                                 f"({len(classes)} class folders found)")
    return files, labels


def load_image(file: str, size: int, preprocess: str = "var") -> torch.Tensor:
    """One image file -> uint8 (3, size, size).

    "var": shorter side -> round(1.125 * size) (Lanczos), centre crop (VAR's val transform).
    "none": the image must already be size x size.
    """
    from PIL import Image, UnidentifiedImageError
    try:
        im = Image.open(file).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetFormatError(f"cannot read image {file}: {e}") from None
    if preprocess == "none":
        if im.size != (size, size):
            raise DatasetFormatError(f"mixed image sizes: {file} is {im.size[0]}x{im.size[1]}, expected "
                                     f"{size}x{size}; use preprocess='var' to resize and crop")
    else:
        mid = round(1.125 * size)
        w, h = im.size
        s = mid / min(w, h)
        im = im.resize((max(mid, round(w * s)), max(mid, round(h * s))), Image.LANCZOS)
        w, h = im.size
        left, top = int(round((w - size) / 2)), int(round((h - size) / 2))
        im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


class ImageFiles(torch.utils.data.Dataset):
    """(uint8 (3, size, size), label) per file, for a DataLoader over folders too big for memory."""

    def __init__(self, files, labels, size: int, preprocess: str = "var"):
        self.files, self.labels, self.size, self.preprocess = list(files), list(labels), size, preprocess

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return load_image(self.files[i], self.size, self.preprocess), self.labels[i]


def image_folder(size: int = 256, path: str | None = None, preprocess: str = "var", limit: int = 0):
    """``path/<class>/*`` -> images (N, 3, size, size) in [-1, 1], labels (see ``image_folder_files``).

    Loads into memory: meant for small folders (limit > 0 keeps the first ``limit`` per class).
    ImageNet-size folders go through ``ImageFiles`` (the trainer encodes them in a streaming pass).
    """
    files, labels = image_folder_files(path, limit)
    x = torch.stack([load_image(f, size, preprocess) for f in files]).float() / 127.5 - 1
    return x.contiguous(), torch.tensor(labels)


DATASETS = {"synthetic": synthetic, "digits": digits, "fashion": fashion, "emoji": emoji,
            "imagefolder": image_folder}
TAKES_PATH = {"fashion", "emoji", "imagefolder"}


def load(name: str, size: int, path: str | None = None, **kw):
    """images (N, 3, size, size) in [-1, 1], labels (N,) of a dataset in ``DATASETS``."""
    if name not in DATASETS:
        raise DatasetMissingError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    if path and name not in TAKES_PATH:
        raise DatasetFormatError(f"dataset {name!r} takes no path (--data-path), got {path!r}; leave it out")
    if name in TAKES_PATH:
        kw["path"] = path or None
    return DATASETS[name](size=size, **kw)


def splits(name: str, size: int, val_fraction: float = 0.1, seed: int = 0, path: str | None = None):
    """(train, held-out) pairs: the official split where one exists (Fashion-MNIST), else ``split``."""
    if name == "fashion":
        return fashion_splits(size, path or None)
    return split(*load(name, size, path), val_fraction, seed)


def split_indices(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train rows, held-out rows) of n items; at least one held out unless val_fraction is 0."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(n * val_fraction)) if val_fraction > 0 else 0
    return perm[n_val:], perm[:n_val]


def split(images, labels, val_fraction: float = 0.1, seed: int = 0):
    """Seeded random split -> (train_images, train_labels), (val_images, val_labels)."""
    tr, va = split_indices(len(images), val_fraction, seed)
    return (images[tr], labels[tr]), (images[va], labels[va])
