"""Multi-scale residual vector quantisation (VAR, Tian et al. 2024, Sec. 3.2, Algorithms 1-2).

A latent f (B, Cv, h, w) becomes K token maps r_1..r_K of growing side pn_k. At scale k the
*residual* not yet explained is area-downsampled to pn_k x pn_k, each vector is replaced by its
nearest codebook entry (plain L2), the codes are bicubic-upsampled back to h x w, passed through a
small conv "phi_k", added to the running reconstruction f_hat and subtracted from the residual:

    f_rest = f;  f_hat = 0
    for k, pn in enumerate(patch_nums):
        idx_k = argmin_v || down(f_rest, pn) - e_v ||^2
        h_k   = phi_k(up(e[idx_k], h))          # phi(x) = (1 - r) x + r conv3x3(x), r = 0.5
        f_hat += h_k;  f_rest -= h_k

phi: n convs shared over the K scales; scale k uses conv argmin_i |t_i - k/(K-1)| with ticks
t = linspace(1/(3n), 1 - 1/(3n), n) for n = 4, else linspace(1/(2n), 1 - 1/(2n), n). The ticks are
computed in float64 (numpy), as in the official code: scales 2 and 7 of the 256 px schedule are
exact ties and float32 would pick other convs.

Shapes: f_BChw latent, idx_Bl one scale's codes (l = pn^2, raster order), Cv codebook width.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def phi_table(num_scales: int, num_phi: int) -> list[int]:
    """Which phi conv each scale uses; (10 scales, 4 phis) -> [0,0,1,1,1,2,2,3,3,3]."""
    K, n = num_scales, num_phi
    if n == 1:
        return [0] * K
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    return [int(np.argmin(np.abs(ticks - k / (K - 1)))) for k in range(K)]


class Phi(nn.Conv2d):
    """phi(x) = (1 - r) x + r conv3x3(x): a light refinement of each upsampled scale."""

    def __init__(self, c: int, ratio: float = 0.5):
        super().__init__(c, c, 3, padding=1)
        self.ratio = abs(ratio)

    def forward(self, x):
        return x.mul(1 - self.ratio) + super().forward(x).mul_(self.ratio)


@dataclass
class QuantOutput:
    f_hat: torch.Tensor  # straight-through reconstruction: value f_hat, gradient to f
    vq_loss: torch.Tensor  # mean over scales of beta*||sg(f_hat)-f||^2 + ||f_hat - sg(f)||^2
    indices: list  # per scale, LongTensor (B, pn^2)
    z_NC: torch.Tensor  # the vectors that were quantised (all scales), for re-seeding dead codes


class MultiScaleQuantizer(nn.Module):
    def __init__(self, vocab_size: int, c: int, patch_nums: Sequence[int], num_phi: int = 4,
                 phi_ratio: float = 0.5, beta: float = 0.25):
        super().__init__()
        self.patch_nums = tuple(patch_nums)
        self.vocab_size, self.c, self.beta = vocab_size, c, beta
        n = num_phi if num_phi > 0 else len(self.patch_nums)  # 0 = one phi per scale
        self.embedding = nn.Embedding(vocab_size, c)
        self.phis = nn.ModuleList(Phi(c, phi_ratio) for _ in range(n))
        self.phi_of_scale = phi_table(len(self.patch_nums), n)

    # ----------------------------------------------------------------------- building blocks
    def phi(self, k: int, h_BChw):
        return self.phis[self.phi_of_scale[k]](h_BChw)

    def nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the closest codebook vector (squared L2 via |z|^2 + |e|^2 - 2 z.e)."""
        e_VC = self.embedding.weight.detach()
        d_NV = (z_NC.square().sum(1, keepdim=True) + e_VC.square().sum(1)).addmm_(z_NC, e_VC.T, alpha=-2)
        return d_NV.argmin(dim=1)

    def codes_to_map(self, codes, pn: int):
        """codes: LongTensor (B, pn^2) or embeddings (B, pn^2, Cv) -> (B, Cv, pn, pn)."""
        h_BlC = self.embedding(codes) if codes.dtype == torch.long else codes
        return h_BlC.transpose(1, 2).reshape(h_BlC.shape[0], self.c, pn, pn).contiguous()

    def upsample_phi(self, k: int, h_BCpp, side: int):
        """phi_k(bicubic_up(h)); the last scale is already at full size."""
        if k != len(self.patch_nums) - 1:
            h_BCpp = F.interpolate(h_BCpp, size=(side, side), mode="bicubic")
        return self.phi(k, h_BCpp)

    @staticmethod
    def area_down(f_BChw, pn: int):
        return f_BChw if f_BChw.shape[-1] == pn else F.interpolate(f_BChw, size=(pn, pn), mode="area")

    # ----------------------------------------------------------------------- tokenizer paths
    @torch.no_grad()
    def quantize(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Encode: latent -> list of K index maps (B, pn^2), coarse -> fine (Algorithm 1)."""
        B, C, side, _ = f_BChw.shape
        f_rest, indices = f_BChw.float().clone(), []
        for k, pn in enumerate(self.patch_nums):
            z_NC = self.area_down(f_rest, pn).permute(0, 2, 3, 1).reshape(-1, C)
            idx_Bl = self.nearest(z_NC).view(B, pn * pn)
            f_rest.sub_(self.upsample_phi(k, self.codes_to_map(idx_Bl, pn), side))
            indices.append(idx_Bl)
        return indices

    def indices_to_fhat(self, indices, cumulative: bool = False):
        """Decode side (Algorithm 2): f_hat = sum_k phi_k(up(e[idx_k])); or the list after each k."""
        side, out = self.patch_nums[-1], []
        f_hat = None
        for k, (pn, idx_Bl) in enumerate(zip(self.patch_nums, indices)):
            h = self.upsample_phi(k, self.codes_to_map(idx_Bl, pn), side)
            f_hat = h if f_hat is None else f_hat + h
            if cumulative:
                out.append(f_hat)
        return out if cumulative else f_hat

    @torch.no_grad()  # the tokenizer is frozen while the transformer trains
    def teacher_input(self, indices) -> torch.Tensor:
        """Teacher-forcing input (B, L-1, Cv): for k = 1..K-1, f_hat after scales < k, area-down to pn_k."""
        B, side = indices[0].shape[0], self.patch_nums[-1]
        f_hat = torch.zeros(B, self.c, side, side, device=indices[0].device)
        inputs = []
        for k in range(len(self.patch_nums) - 1):
            f_hat, x_BlC = self.next_input(f_hat, k, indices[k])
            inputs.append(x_BlC)
        return torch.cat(inputs, dim=1)

    @torch.no_grad()
    def next_input(self, f_hat_BChw, k: int, codes):
        """One sampling step: add scale k's codes to f_hat (in place); return (f_hat, input for k+1).

        ``codes`` are indices (B, pn^2) or already-embedded vectors (B, pn^2, Cv). After the last
        scale the second value is None.
        """
        pn, side = self.patch_nums[k], self.patch_nums[-1]
        f_hat_BChw.add_(self.upsample_phi(k, self.codes_to_map(codes, pn), side))
        if k == len(self.patch_nums) - 1:
            return f_hat_BChw, None
        pn_next = self.patch_nums[k + 1]
        x_BCpp = self.area_down(f_hat_BChw, pn_next).clone()  # never a view of f_hat (updated in place)
        return f_hat_BChw, x_BCpp.reshape(x_BCpp.shape[0], self.c, -1).transpose(1, 2)

    # ----------------------------------------------------------------------- training
    def forward(self, f_BChw: torch.Tensor) -> QuantOutput:
        """Training pass: quantise with the VQ losses on the cumulative f_hat (VAR's recipe)."""
        f = f_BChw.float()
        B, C, side, _ = f.shape
        f_sg = f.detach()
        f_rest = f_sg.clone()
        f_hat = torch.zeros_like(f_sg)
        loss, indices, zs = 0.0, [], []
        for k, pn in enumerate(self.patch_nums):
            z_NC = self.area_down(f_rest, pn).permute(0, 2, 3, 1).reshape(-1, C)
            idx_Bl = self.nearest(z_NC).view(B, pn * pn)
            h = self.upsample_phi(k, self.codes_to_map(idx_Bl, pn), side)  # carries codebook/phi grads
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_sg)
            indices.append(idx_Bl)
            zs.append(z_NC)
        f_st = f + (f_hat.detach() - f_sg)  # straight-through estimator
        return QuantOutput(f_st, loss / len(self.patch_nums), indices, torch.cat(zs))
