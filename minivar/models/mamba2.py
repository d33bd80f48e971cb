"""Mamba2 in plain PyTorch: one layer, three exact ways to compute it.

Mamba-2 (Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through
Structured State Space Duality", ICML 2024) replaces attention by a selective state space model
whose transition is a scalar per head ("SSD"). Per head, with state h (P x N):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t (outer) B_t        A < 0 scalar, dt_t > 0
    y_t = h_t C_t + D * x_t

The layer (what M-VAR puts over the whole token sequence inside each block):

    u --in_proj--> [z | xBC | dt];  xBC --causal depthwise conv1d + SiLU--> [x | B | C]
    dt = softplus(dt + dt_bias);  A = -exp(A_log);  y = SSD(x, dt, A, B, C) + D * x
    out = out_proj(RMSNorm(y * silu(z)))                    (gated norm, norm_before_gate=False)

Parameter names and shapes equal mamba_ssm.Mamba2's defaults (rmsnorm=True, D_has_hdim=False),
so state dicts load both ways. Ways to compute the scan, all exact equivalents:
  * ``ssd_chunked``    -- the paper's chunked SSD: quadratic attention-like form inside chunks
                          of ``chunk_size`` tokens, a short recurrence across chunks. The fast path.
  * ``ssd_sequential`` -- the recurrence above, one token at a time. Readable reference.
  * ``Mamba2.step`` / ``forward(..., cache=...)`` -- recurrent sampling: the cache holds the SSM
                          state and the last d_conv-1 conv inputs; feeding a sequence in pieces
                          gives the same outputs as feeding it whole.
On CUDA the chunked scan can dispatch to mamba_ssm's fused Triton kernel (``_fused_scan``), when it
is importable and ``minivar.fast.enabled.mamba_fused_scan`` (or ``Mamba2.use_fused``) says so: off
by default, because no GPU run has checked it yet.

Dimension glossary (shape suffixes on names, e.g. x_BLHP):
    B batch   L sequence length   D d_model   E d_inner = expand*D = H*P   H heads   P headdim
    N d_state   G groups (B and C are shared by the H/G heads of a group)   R = H/G heads per group
    K conv channels = E + 2*G*N   W d_conv (conv width)   C number of chunks   Q chunk length
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import fast
from ..fast.causal_conv import causal_depthwise_conv as fast_causal_conv


def _expand_groups(t_BLGN: Tensor, nheads: int) -> Tensor:
    """(..., G, N) -> (..., H, N): head h uses group h // (H/G)."""
    *lead, G, N = t_BLGN.shape
    return t_BLGN.unsqueeze(-2).expand(*lead, G, nheads // G, N).reshape(*lead, nheads, N)


def causal_depthwise_conv(x_BTK: Tensor, w_KW: Tensor, b_K: Tensor | None) -> Tensor:
    """Depthwise conv1d over time, input already left-padded: T = L + W - 1 in, L out, (B, T, K)
    layout. ``minivar.fast.causal_conv`` computes the same as W shifted multiply-adds with a
    hand-written backward when ``minivar.fast.enabled.causal_conv`` is on."""
    if fast.enabled.causal_conv:
        return fast_causal_conv(x_BTK, w_KW, b_K)
    return F.conv1d(x_BTK.transpose(1, 2), w_KW[:, None], b_K, groups=w_KW.shape[0]).transpose(1, 2)


def ssd_sequential(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN, h_BHPN=None):
    """Reference scan, one step per token. dt is already softplus'ed. Returns (y_BLHP, h_BHPN).

    Loops over ``unbind`` views: indexing x[:, t] in a loop makes backward ~60x slower."""
    Bsz, L, H, P = x_BLHP.shape
    if h_BHPN is None:
        h_BHPN = x_BLHP.new_zeros(Bsz, H, P, B_BLGN.shape[-1])
    Bh_BLHN, Ch_BLHN = _expand_groups(B_BLGN, H), _expand_groups(C_BLGN, H)
    decay_BLH = torch.exp(dt_BLH * A_H)
    ys = []
    steps = zip(*(t.unbind(1) for t in (x_BLHP, dt_BLH, decay_BLH, Bh_BLHN, Ch_BLHN)))
    for x_BHP, dt_BH, a_BH, B_BHN, C_BHN in steps:
        dBx_BHPN = (dt_BH[..., None] * x_BHP)[..., None] * B_BHN[:, :, None, :]
        h_BHPN = a_BH[..., None, None] * h_BHPN + dBx_BHPN
        ys.append((h_BHPN @ C_BHN[..., None]).squeeze(-1))
    return torch.stack(ys, dim=1), h_BHPN


def ssd_chunked(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN, chunk_size, h_BHPN=None):
    """Chunked SSD (Mamba-2 paper, Listing 1, restated). Same contract as ``ssd_sequential``.

    L is padded up to a multiple of Q = min(chunk_size, L) with dt = 0: a padded step neither
    decays the state nor writes into it, so the final state stays exact."""
    Bsz, L, H, P = x_BLHP.shape
    G, N = B_BLGN.shape[-2:]
    R = H // G
    Q = min(chunk_size, L)
    nC = -(-L // Q)
    pad = nC * Q - L
    if pad:
        x_BLHP, dt_BLH, B_BLGN, C_BLGN = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
                                          for t in (x_BLHP, dt_BLH, B_BLGN, C_BLGN))
    # chunked views; heads split as (group g, head-in-group r) so B and C broadcast over r
    u_BCQGRP = (x_BLHP * dt_BLH[..., None]).reshape(Bsz, nC, Q, G, R, P)   # dt_s * x_s
    B_BCQGN = B_BLGN.reshape(Bsz, nC, Q, G, N)
    C_BCQGN = C_BLGN.reshape(Bsz, nC, Q, G, N)
    a_BCGRQ = (dt_BLH * A_H).reshape(Bsz, nC, Q, G, R).permute(0, 1, 3, 4, 2)  # log-decay per step
    acs_BCGRQ = torch.cumsum(a_BCGRQ, dim=-1)                            # within each chunk

    # 1. inside each chunk: y_l = sum_{s<=l} (C_l . B_s) exp(acs_l - acs_s) dt_s x_s
    seg_BCGRQQ = acs_BCGRQ[..., :, None] - acs_BCGRQ[..., None, :]
    causal_QQ = torch.ones(Q, Q, dtype=torch.bool, device=x_BLHP.device).tril()
    decay_BCGRQQ = torch.exp(seg_BCGRQQ.masked_fill(~causal_QQ, -math.inf))
    CB_BCGQQ = torch.einsum("bclgn,bcsgn->bcgls", C_BCQGN, B_BCQGN)
    scores_BCGRQQ = CB_BCGQQ[:, :, :, None] * decay_BCGRQQ
    y_BCQGRP = torch.einsum("bcgrls,bcsgrp->bclgrp", scores_BCGRQQ, u_BCQGRP)

    # 2. state each chunk adds by its end: sum_s exp(acs_end - acs_s) dt_s x_s (outer) B_s
    to_end_BCQGR = torch.exp(acs_BCGRQ[..., -1:] - acs_BCGRQ).permute(0, 1, 4, 2, 3)
    dh_BCGRPN = torch.einsum("bcsgrp,bcsgn->bcgrpn", u_BCQGRP * to_end_BCQGR[..., None], B_BCQGN)

    # 3. recurrence across chunks: h_c = exp(sum of a over chunk c) * h_{c-1} + dh_c
    h_BGRPN = (x_BLHP.new_zeros(Bsz, G, R, P, N) if h_BHPN is None
               else h_BHPN.reshape(Bsz, G, R, P, N))
    h_before = []
    for dec_BGR, dh_BGRPN in zip(torch.exp(acs_BCGRQ[..., -1]).unbind(1), dh_BCGRPN.unbind(1)):
        h_before.append(h_BGRPN)
        h_BGRPN = dec_BGR[..., None, None] * h_BGRPN + dh_BGRPN
    h0_BCGRPN = torch.stack(h_before, dim=1)

    # 4. contribution of the state entering each chunk: exp(acs_l) * (h_{c-1} C_l)
    y_off_BCQGRP = torch.einsum("bclgn,bcgrpn->bclgrp", C_BCQGN, h0_BCGRPN)
    y_BCQGRP = y_BCQGRP + y_off_BCQGRP * torch.exp(acs_BCGRQ).permute(0, 1, 4, 2, 3)[..., None]
    return y_BCQGRP.reshape(Bsz, nC * Q, H, P)[:, :L], h_BGRPN.reshape(Bsz, H, P, N)


_FUSED = {}


def _fused_scan():
    """mamba_ssm's fused Triton chunk scan, or None. Untested: meant for CUDA tensors, never run on a GPU yet."""
    if "fn" not in _FUSED:
        try:
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
            _FUSED["fn"] = mamba_chunk_scan_combined
        except Exception:  # not installed, or no CUDA build: fall back to pure PyTorch
            _FUSED["fn"] = None
    return _FUSED["fn"]


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) over groups of ``group_size`` channels (mamba_ssm's RMSNormGated with
    norm_before_gate=False). Computed in at least fp32."""

    def __init__(self, d, eps=1e-5, group_size=None, device=None, dtype=None):
        super().__init__()
        self.eps, self.group_size = eps, group_size or d
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, y, z):
        f = torch.promote_types(y.dtype, torch.float32)
        g = (y.to(f) * F.silu(z.to(f))).unflatten(-1, (-1, self.group_size))
        g = g * torch.rsqrt(g.square().mean(-1, keepdim=True) + self.eps)
        return (g.flatten(-2) * self.weight.to(f)).to(y.dtype)


@dataclass
class Mamba2Cache:
    """Recurrent state of one Mamba2 layer for one batch of sequences (zeros = sequence start).

    conv_state (B, K, W-1): the last W-1 pre-conv xBC inputs, oldest first.
        (mamba_ssm keeps (B, K, W) instead; we keep only what the next token needs.)
    ssm_state  (B, H, P, N): h after the last token fed.
    seqlen_offset: number of tokens fed so far.
    ``Mamba2.forward`` replaces the tensors (no in-place writes, so autograd through a chain of
    cached calls works), i.e. the cache object itself is what is updated."""
    conv_state: Tensor
    ssm_state: Tensor
    seqlen_offset: int = 0


class Mamba2(nn.Module):
    """Mamba2 mixer: (B, L, D) -> (B, L, D), causal in L.

    ``tokens_scanned`` counts token positions scanned: +L per forward call (per sequence, not
    multiplied by B). Reset it to 0 yourself. With a cache, a call costs its own L only."""

    def __init__(self, d_model, d_state=64, d_conv=4, expand=2, headdim=64, ngroups=1,
                 chunk_size=256, dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, bias=False,
                 conv_bias=True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        assert self.d_inner % headdim == 0, "d_inner = expand*d_model must be a multiple of headdim"
        self.headdim, self.nheads, self.ngroups = headdim, self.d_inner // headdim, ngroups
        assert self.nheads % ngroups == 0, "nheads must be a multiple of ngroups"
        self.chunk_size = chunk_size   # the fused kernel's chunk (mamba_ssm's default 256)
        # The PyTorch SSD path's chunk. Any length gives the same result (to float rounding); the
        # intra-chunk work grows with it (L * Q per head) and the cross-chunk loop with L / Q. On CPU,
        # at L = 680, 64 is ~2.5x faster fwd+bwd than 256 (benchmarks/mamba_chunk.py).
        self.torch_chunk_size = min(chunk_size, 64)
        self.use_fused = None  # CUDA: mamba_ssm's fused scan (None: as minivar.fast.enabled.mamba_fused_scan)
        self.tokens_scanned = 0
        conv_dim = self.d_inner + 2 * ngroups * d_state                       # K

        # Created in mamba_ssm.Mamba2's order, so one seed gives both the same initial weights.
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads       # [z, xBC, dt]
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias, **fk)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1,
                                bias=conv_bias, **fk)   # (forward pads itself, from the cache)
        # dt_bias = softplus^-1(dt), dt ~ log-uniform[dt_min, dt_max], floored at dt_init_floor
        log_span = math.log(dt_max) - math.log(dt_min)
        log_dt = torch.rand(self.nheads, **fk) * log_span + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(1, 16)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))                 # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(self.nheads, **fk))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = GatedRMSNorm(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **fk)

    def allocate_cache(self, batch_size, dtype=None, device=None) -> Mamba2Cache:
        w = self.in_proj.weight
        fk = {"dtype": dtype or w.dtype, "device": device or w.device}
        K = self.conv1d.weight.shape[0]
        return Mamba2Cache(torch.zeros(batch_size, K, self.d_conv - 1, **fk),
                           torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, **fk))

    def forward(self, x_BLD: Tensor, cache: Mamba2Cache | None = None, path: str = "chunked"):
        """path: "chunked" (parallel SSD) or "sequential" (per-token loop); same result.
        With ``cache``, continue from its state and update it; any L >= 1 works."""
        assert path in ("chunked", "sequential"), path
        Bsz, L, _ = x_BLD.shape
        E, G, N, H, P = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        self.tokens_scanned += L
        z_BLE, xBC_BLK, dt_BLH = self.in_proj(x_BLD).split([E, E + 2 * G * N, H], dim=-1)

        # causal depthwise conv: left context = cached inputs (zeros at sequence start)
        W = self.d_conv
        if cache is None:
            xBC_BTK = F.pad(xBC_BLK, (0, 0, W - 1, 0))                      # T = L + W - 1
        else:
            xBC_BTK = torch.cat([cache.conv_state.transpose(1, 2).to(xBC_BLK.dtype), xBC_BLK], dim=1)
            cache.conv_state = xBC_BTK[:, xBC_BTK.shape[1] - (W - 1):].transpose(1, 2).contiguous()
        xBC_BLK = F.silu(causal_depthwise_conv(xBC_BTK, self.conv1d.weight[:, 0], self.conv1d.bias))
        x_BLE, B_BLGN, C_BLGN = xBC_BLK.split([E, G * N, G * N], dim=-1)
        x_BLHP = x_BLE.unflatten(-1, (H, P))
        B_BLGN, C_BLGN = B_BLGN.unflatten(-1, (G, N)), C_BLGN.unflatten(-1, (G, N))
        f = torch.promote_types(x_BLD.dtype, torch.float32)         # the scan runs in >= fp32
        A_H = -torch.exp(self.A_log.to(f))
        h_BHPN = None if cache is None else cache.ssm_state

        want_fused = fast.enabled.mamba_fused_scan if self.use_fused is None else self.use_fused
        fused = _fused_scan() if (x_BLD.is_cuda and want_fused and path == "chunked") else None
        if fused is not None:  # mamba_ssm's Triton kernel, D included (opt-in until checked on a GPU)
            out = fused(x_BLHP, dt_BLH, A_H, B_BLGN, C_BLGN, self.chunk_size, D=self.D,
                        dt_bias=self.dt_bias, dt_softplus=True, initial_states=h_BHPN,
                        return_final_states=cache is not None)
            y_BLHP, h_BHPN = out if cache is not None else (out, None)
        else:
            dt_BLH = F.softplus(dt_BLH.to(f) + self.dt_bias.to(f))
            args = (x_BLHP.to(f), dt_BLH, A_H, B_BLGN.to(f), C_BLGN.to(f))
            h0 = None if h_BHPN is None else h_BHPN.to(f)
            if path == "sequential" or L == 1:
                y_BLHP, h_BHPN = ssd_sequential(*args, h_BHPN=h0)
            else:
                y_BLHP, h_BHPN = ssd_chunked(*args, self.torch_chunk_size, h_BHPN=h0)
            y_BLHP = torch.addcmul(y_BLHP, self.D.to(f)[:, None], x_BLHP.to(f))  # + D * x, one pass
        if cache is not None:
            cache.ssm_state = h_BHPN.to(cache.ssm_state.dtype)
            cache.seqlen_offset += L
        y_BLE = self.norm(y_BLHP.flatten(-2).to(x_BLD.dtype), z_BLE)
        return self.out_proj(y_BLE)

    def step(self, x_BD: Tensor, cache: Mamba2Cache) -> Tensor:
        """One token of recurrent sampling: (B, D) -> (B, D); updates ``cache``."""
        return self.forward(x_BD[:, None], cache=cache, path="sequential")[:, 0]
