"""Dataset loaders on tiny generated files: Fashion-MNIST IDX, EmojiOne PNGs, ImageFolder; bad inputs."""
import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from minivar import data


def write_idx(path, arr: np.ndarray, gz=True, magic=None, truncate=0):
    head = (magic or (0x0800 + arr.ndim)).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    raw = raw[:len(raw) - truncate]
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.fixture
def fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 4)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n), gz=False)  # plain works too
    return tmp_path


def test_fashion_official_split_and_sizes(fashion_dir):
    (tx, ty), (vx, vy) = data.splits("fashion", 32, path=str(fashion_dir))
    assert tx.shape == (6, 3, 32, 32) and vx.shape == (4, 3, 32, 32) and ty.dtype == torch.long
    assert tx.min() >= -1 and tx.max() <= 1 and (tx[:, :, :2] == -1).all()  # 28 -> 32 pads with black
    x, y = data.load("fashion", 16, path=str(fashion_dir))
    assert x.shape == (10, 3, 16, 16) and len(y) == 10


def test_fashion_missing_prints_the_command(tmp_path):
    with pytest.raises(data.DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion", 32, path=str(tmp_path))


@pytest.mark.parametrize("kind", ["truncated", "magic", "count"])
def test_fashion_malformed_files(fashion_dir, kind):
    img = fashion_dir / "train-images-idx3-ubyte.gz"
    arr = np.zeros((6, 28, 28))
    if kind == "truncated":
        write_idx(img, arr, truncate=10)
    elif kind == "magic":
        write_idx(img, arr, magic=1234)
    else:
        write_idx(img, np.zeros((5, 28, 28)))
    with pytest.raises(data.DatasetFormatError, match={"truncated": "truncated", "magic": "magic",
                                                       "count": "5 images but"}[kind]):
        data.load("fashion", 28, path=str(fashion_dir))


def test_emoji_from_gemojione_layout(tmp_path):
    (tmp_path / "png").mkdir()
    index = {}
    for i, (code, cat) in enumerate([("1f600", "people"), ("1f34e", "food"), ("1f3c0", "activity"), ("x", "modifier")]):
        index[code] = {"unicode": code, "category": cat}
        Image.new("RGBA", (64, 64), (255, 0, 0, 128 * (i % 2))).save(tmp_path / "png" / f"{code}.png")
    (tmp_path / "index.json").write_text(json.dumps(index))
    x, y = data.load("emoji", 16, path=str(tmp_path))
    assert x.shape == (3, 3, 16, 16)  # the modifier category is left out
    assert y.tolist() == [data.EMOJI_CATEGORIES.index(c) for c in ("people", "food", "activity")]
    assert torch.allclose(x[0], torch.ones(3, 16, 16))  # transparent -> white background
    with pytest.raises(data.DatasetMissingError, match="ruby-gemojione"):
        data.load("emoji", 16, path=str(tmp_path / "nowhere"))
    (tmp_path / "index.json").write_text("{oops")
    with pytest.raises(data.DatasetFormatError, match="not valid JSON"):
        data.load("emoji", 16, path=str(tmp_path))


def test_image_folder_var_preprocessing_and_class_order(tmp_path):
    for cls, size in (("n02", (40, 30)), ("n01", (30, 50))):
        (tmp_path / cls).mkdir()
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        arr[:, size[0] // 2:] = 255  # right half white
        Image.fromarray(arr).save(tmp_path / cls / "a.png")
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    x, y = data.load("imagefolder", 16, path=str(tmp_path))
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 1]  # sorted folder names: n01 -> 0
    assert x[:, :, :, 0].max() < -0.9 and x[:, :, :, -1].min() > 0.9  # centre crop keeps both halves


def test_image_folder_bad_inputs(tmp_path):
    with pytest.raises(data.DatasetMissingError, match="does not exist"):
        data.load("imagefolder", 16, path=str(tmp_path / "none"))
    (tmp_path / "c").mkdir()
    with pytest.raises(data.DatasetFormatError, match="no images"):
        data.load("imagefolder", 16, path=str(tmp_path))
    Image.new("RGB", (16, 16)).save(tmp_path / "c" / "a.png")
    Image.new("RGB", (20, 16)).save(tmp_path / "c" / "b.png")
    with pytest.raises(data.DatasetFormatError, match="mixed image sizes"):
        data.image_folder(16, str(tmp_path), preprocess="none")
    (tmp_path / "c" / "c.png").write_bytes(b"broken")
    with pytest.raises(data.DatasetFormatError, match="cannot read image"):
        data.load("imagefolder", 16, path=str(tmp_path))


def test_unknown_dataset_and_path_misuse():
    with pytest.raises(data.DatasetMissingError, match="available"):
        data.load("cifar", 16)
    with pytest.raises(ValueError, match="takes no path"):
        data.load("digits", 16, path="/tmp")


def test_existing_loaders_unchanged():
    x, y = data.synthetic(8, size=16, seed=0)
    assert x.shape == (8, 3, 16, 16) and y.max() < 4
    (tx, _), (vx, _) = data.splits("synthetic", 16, 0.25, seed=0)
    (ax, _), (bx, _) = data.split(*data.synthetic(512, size=16), 0.25, seed=0)
    assert torch.equal(tx, ax) and torch.equal(vx, bx)
