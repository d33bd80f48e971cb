"""The FID Inception-v3, in plain PyTorch (no torchvision), loading pytorch-fid's weights file.

FID, Inception Score and the ImageNet precision/recall all use one network: the Inception-v3 of
TensorFlow's 2015-12-05 graph, which pytorch-fid ported to PyTorch as
``pt_inception-2015-12-05-6726825d.pth`` (you supply the file; nothing is downloaded). Its layout is
torchvision's ``Inception3`` without the auxiliary head and with a 1008-way classifier, patched
where the TF graph differs from the paper (pytorch-fid's FIDInceptionA / C / E_1 / E_2):

    * the average-pool branches of the A, C and E blocks ignore the zero padding
      (``count_include_pad=False``, as TF's average pool does);
    * the last block (Mixed_7c) pools its 4th branch with a 3x3 *max* pool instead of an average.

Module names equal torchvision's (Conv2d_1a_3x3, Mixed_5b.branch1x1.conv, ..., fc) so the file's
state dict loads strictly. Preprocessing follows pytorch-fid: images in [0, 1] are resized to
299 x 299 (bilinear, ``align_corners=False``) and mapped to [-1, 1].

Outputs: the 2048-d ``pool3`` features (FID, precision/recall) and the 1008 logits
``pool3 @ fc.weight.T`` *without* the bias, which is what OpenAI's guided-diffusion evaluator
feeds its softmax for the Inception Score. Dims: B batch, H/W image side.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoints import CheckpointError, safe_load, sha256_file

INCEPTION_SHA256_PREFIX = "6726825d"  # pt_inception-2015-12-05-6726825d.pth (torch.hub naming)

INPUT_SIDE = 299
NUM_LOGITS = 1008  # the TF graph's classifier: 1000 ImageNet classes + 8 unused


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; names ``conv`` and ``bn`` as in torchvision."""

    def __init__(self, c_in: int, c_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x):
    """3x3 average pool, stride 1, that averages only the real pixels at the border (TF's behaviour)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/c/d: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1 (64+64+96+pool_features)."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid 35 -> 17): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool/2 (384+96+c_in)."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """Mixed_6b..e: factorised 7x7 convolutions (1x7 then 7x1), 4 x 192 channels out."""

    def __init__(self, c_in: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            d = conv(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_tf(x))], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid 17 -> 8): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool/2 (320+192+c_in)."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b/c: split 1x3 / 3x1 branches (320 + 768 + 768 + 192 = 2048 channels out).

    ``pool="avg"`` (Mixed_7b, TF average pool) or ``"max"`` (Mixed_7c: the FID graph max-pools here).
    """

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x):
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = _avg_pool_tf(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """``net(images_B3HW in [0, 1])`` -> (pool3 features (B, 2048), unbiased logits (B, 1008)).

    Always use it in eval mode (BatchNorm with the stored running statistics); ``load_inception``
    returns it so.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)      # 299 -> 149
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)               # -> 147
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)    # -> 147, then max-pool -> 73
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)              # -> 71, then max-pool -> 35
        self.Mixed_5b = InceptionA(192, pool_features=32)         # 35 x 35 x 256
        self.Mixed_5c = InceptionA(256, pool_features=64)         # x 288
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)                           # 17 x 17 x 768
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)                           # 8 x 8 x 1280
        self.Mixed_7b = InceptionE(1280, pool="avg")              # 8 x 8 x 2048
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, NUM_LOGITS)

    @staticmethod
    def preprocess(x_B3HW: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any side -> 299 x 299 in [-1, 1] (pytorch-fid's resize and scaling)."""
        if x_B3HW.dim() != 4 or x_B3HW.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(x_B3HW.shape)}")
        x = F.interpolate(x_B3HW.float(), size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def pool3(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x_B3HW)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x_B3HW: torch.Tensor):
        f = self.pool3(x_B3HW)
        return f, f @ self.fc.weight.T


def load_inception(path: str, device="cpu", sha256_prefix: str | None = INCEPTION_SHA256_PREFIX):
    """pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` -> FIDInceptionV3 in eval mode.

    The file's SHA-256 must start with ``sha256_prefix`` (None skips the check: only for other
    ports of the same graph, and for tests). Keys and shapes are checked strictly; every mismatch is
    reported at once. Returns (net, full sha256 or None).
    """
    digest = None
    if sha256_prefix is not None:
        try:
            digest = check_weights_hash(path, sha256_prefix)
        except (FileNotFoundError, ValueError) as e:
            raise CheckpointError(str(e)) from None
    sd = safe_load(path)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} holds a {type(sd).__name__}, not a state dict of the FID Inception")
    net = FIDInceptionV3()
    own = net.state_dict()
    sd = dict(sd)
    for k in own:  # files saved before BatchNorm counted its batches lack this (unused in eval) buffer
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f"{k} file {tuple(sd[k].shape)} vs net {tuple(own[k].shape)}"
                 for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or misshaped:
        few = lambda xs: ", ".join(xs[:6]) + (f", ... ({len(xs)} in all)" if len(xs) > 6 else "")  # noqa: E731
        lines = [f"{path} does not fit the FID Inception-v3 (pytorch-fid layout):"]
        lines += [f"  {what}: {few(xs)}" for what, xs in
                  (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped)) if xs]
        raise CheckpointError("\n".join(lines))
    net.load_state_dict(sd, strict=True)
    return net.to(device).eval().requires_grad_(False), digest


def check_weights_hash(path: str, prefix: str = INCEPTION_SHA256_PREFIX) -> str:
    """Verify user-supplied FID Inception weights; returns the full SHA-256."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Inception weights {path} not found; supply "
                                "pt_inception-2015-12-05-6726825d.pth (nothing is downloaded)")
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise ValueError(f"{path} has SHA-256 {digest[:16]}..., expected one starting with {prefix}: "
                         "these are not the FID Inception weights")
    return digest
