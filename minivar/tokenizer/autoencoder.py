"""The convolutional encoder and decoder of VAR's tokenizer (an LDM / VQGAN-style autoencoder).

VAR (Tian et al. 2024, Sec. 3.3) reuses the latent-diffusion "vq-f16" architecture: ResNet blocks
with GroupNorm + SiLU, single-head self-attention at the lowest resolution and in the middle, a
stride-2 conv per downsampling level and nearest-upsample + conv on the way back. Module names
follow the LDM convention (``down.0.block.1.norm1`` ...) so official checkpoints map one to one.

Shapes: images x_B3HW in [-1, 1]; latents f_BChw with C = z_channels (Cv), h = w = H / 2^(levels-1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))), with a 1x1 conv shortcut when widths differ."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        inplace = not torch.is_grad_enabled()  # inference: SiLU overwrites the fresh norm output
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=inplace)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions (1x1 convs for q, k, v and the output)."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = group_norm(c, groups)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x_BChw):
        B, C, h, w = x_BChw.shape
        q, k, v = self.qkv(self.norm(x_BChw)).reshape(B, 3, C, h * w).unbind(1)  # each B,C,N
        attn_BNN = torch.bmm(q.transpose(1, 2).contiguous(), k) * C ** -0.5  # [b, query, key]
        attn_BNN = attn_BNN.softmax(dim=2)
        out_BCN = torch.bmm(v, attn_BNN.transpose(1, 2).contiguous())  # out[:, :, query]
        return x_BChw + self.proj_out(out_BCN.reshape(B, C, h, w))


class Downsample(nn.Module):
    """Halve the resolution: pad one pixel right/bottom, then a stride-2 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: a list of ResNet blocks, optional attention after each, a resampler."""

    def __init__(self, c_in, c_out, n_blocks, attn: bool, groups, dropout, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(c_in if i == 0 else c_out, c_out, groups, dropout) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out, groups) for _ in range(n_blocks if attn else 0))
        if resample is not None:
            # stored under the LDM names "downsample" / "upsample" so checkpoints keep their keys
            setattr(self, "downsample" if isinstance(resample, Downsample) else "upsample", resample)

    def forward(self, x):
        for i, blk in enumerate(self.block):
            x = blk(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class Mid(nn.Module):
    """ResNet block, (optional) attention, ResNet block at the lowest resolution."""

    def __init__(self, c, attn: bool, groups, dropout):
        super().__init__()
        self.block_1 = ResnetBlock(c, c, groups, dropout)
        self.attn_1 = AttnBlock(c, groups) if attn else nn.Identity()
        self.block_2 = ResnetBlock(c, c, groups, dropout)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """image (B, 3, H, W) -> latent (B, z_channels, H/f, W/f) with f = 2^(len(ch_mult)-1)."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, z_channels, in_channels=3,
                 attn_lowest=True, attn_mid=True, groups=32, dropout=0.0):
        super().__init__()
        n = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        c_in = ch
        for i, mult in enumerate(ch_mult):
            last = i == n - 1
            c_out = ch * mult
            self.down.append(Level(c_in, c_out, num_res_blocks, attn_lowest and last, groups, dropout,
                                   None if last else Downsample(c_out)))
            c_in = c_out
        self.mid = Mid(c_in, attn_mid, groups, dropout)
        self.norm_out = group_norm(c_in, groups)
        self.conv_out = nn.Conv2d(c_in, z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """latent (B, z_channels, h, w) -> image (B, 3, h*f, w*f); one more ResNet block per level."""

    def __init__(self, *, ch, ch_mult, num_res_blocks, z_channels, in_channels=3,
                 attn_lowest=True, attn_mid=True, groups=32, dropout=0.0):
        super().__init__()
        n = len(ch_mult)
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = Mid(c, attn_mid, groups, dropout)
        levels = []
        for i in reversed(range(n)):  # built coarse -> fine, stored fine -> coarse (LDM key order)
            c_out = ch * ch_mult[i]
            levels.append(Level(c, c_out, num_res_blocks + 1, attn_lowest and i == n - 1, groups,
                                dropout, Upsample(c_out) if i != 0 else None))
            c = c_out
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = group_norm(c, groups)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))
