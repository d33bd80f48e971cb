"""The transformer blocks: VAR's and M-VAR's, on one AdaLN scaffold.

Both condition every sub-layer on the class through adaptive LayerNorm (VAR Sec. 3.2, after DiT):
the class embedding gives, per sub-layer, a gate g, a scale s and a shift b, and

    mod(x; s, b) = LayerNorm(x) * (1 + s) + b          x <- x + g * SubLayer(mod(x; s, b))

    VAR block   (Tian et al. 2024, Fig. 4):    block-causal attention, then FFN         -> 6 vectors
    M-VAR block (Ren et al. 2024, Fig. 2):     intra-scale attention, then a causal Mamba2 over the
                                               whole sequence (coarse -> fine), then FFN -> 9 vectors

The M-VAR block decouples the two jobs of VAR's attention: attention mixes tokens inside a scale,
Mamba2 carries information across scales at linear cost. Module names equal the official ones
(``attn``, ``mamba``, ``ffn``, ``ada_lin``), so official state dicts load with a strict check.

Every block takes the whole sequence (training, teacher forcing) or, while sampling, one scale's
tokens plus its ``BlockState`` (``caches.py``).

Dims: B batch, L tokens (all scales), l tokens of one scale, C width, H heads, c head dim, D
condition dim (= C).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import l2_normalize, scale_attention
from .caches import BlockState, KVCache
from .mamba2 import Mamba2


class SelfAttention(nn.Module):
    """Multi-head attention with VAR's q/v biases and optional L2-normalised q, k (cosine attention)."""

    def __init__(self, cfg):
        super().__init__()
        C, H = cfg.width, cfg.heads
        self.H, self.c, self.l2 = H, C // H, cfg.attn_l2_norm
        self.mode = "causal" if cfg.mixer == "var" else "intra"
        self.patch_nums, self.backend = cfg.patch_nums, cfg.attn_backend
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        if self.l2:  # per-head temperature, exp(min(s, log 100)), initialised at 4; softmax scale 1
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
            self.scale = 1.0
        else:
            self.scale = 0.25 / math.sqrt(self.c)
        self.proj = nn.Linear(C, C)

    def qkv(self, x_BLC):
        B, L, C = x_BLC.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        q, k, v = F.linear(x_BLC, self.mat_qkv.weight, bias).view(B, L, 3, self.H, self.c).permute(2, 0, 3, 1, 4)
        if self.l2:  # cosine attention: unit q, k; q carries the temperature
            q = l2_normalize(q, self.scale_mul_1H11.clamp_max(math.log(100)).exp())
            k = l2_normalize(k)
        return q, k, v  # each B, H, L, c

    def forward(self, x_BLC, kv: KVCache | None = None, sampling: bool = False):
        """The whole sequence, or (``sampling``) one scale's tokens: VAR's queries then also see the
        cached keys of the earlier scales (``kv``); M-VAR's see their own scale only."""
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC)
        if not sampling:
            o = scale_attention(q, k, v, self.patch_nums, self.mode, self.scale, self.backend)
        else:
            if kv is not None:
                k, v = kv.append(k, v)
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(o.transpose(1, 2).reshape(B, L, C))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(C, hidden), nn.Linear(hidden, C)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def drop_path(gamma_B1C, p: float, training: bool):
    """Stochastic depth folded into the branch's AdaLN gate: the whole residual branch of a sample
    is dropped with probability p (and kept ones scaled by 1/(1-p)). Returns the gate to multiply
    the branch by, so that ``x + branch * gate`` is one pass over (B, L, C)."""
    if p == 0.0 or not training:
        return gamma_B1C
    keep = gamma_B1C.new_empty(gamma_B1C.shape[0], 1, 1).bernoulli_(1 - p)
    return gamma_B1C * keep.div_(1 - p)


class AdaLNBlock(nn.Module):
    """The scaffold both blocks share: ``ada_lin`` turns the condition into ``n_sublayers`` x
    (gate, scale, shift) vectors, laid out as [gates | scales | shifts] like the official code."""

    n_sublayers: int

    def __init__(self, cfg, drop_p: float):
        super().__init__()
        C = cfg.width
        self.eps, self.drop_p = cfg.norm_eps, drop_p
        # creation order = the official one (attn, [mamba], ffn, ada_lin): one seed, same weights
        self.attn = SelfAttention(cfg)
        self.build_mixer(cfg)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 3 * self.n_sublayers * C))

    def build_mixer(self, cfg) -> None:
        """Sub-layers between attention and the FFN (M-VAR: Mamba2)."""

    def modulations(self, cond_BD, state: BlockState | None = None):
        """[(gate, scale, shift)] per sub-layer, each (B, 1, C); computed once per image when sampling."""
        if state is not None and state.modulations is not None:
            return state.modulations
        n, C = self.n_sublayers, cond_BD.shape[-1]
        vecs = self.ada_lin(cond_BD).view(-1, 1, 3 * n, C).unbind(2)
        mods = [(vecs[i], vecs[n + i], vecs[2 * n + i]) for i in range(n)]
        if state is not None:
            state.modulations = mods
        return mods

    def sublayer(self, x_BLC, fn, mod):
        """x + gate * fn(LayerNorm(x) * (1 + scale) + shift), as one fused multiply-add."""
        gate, scale, shift = mod
        h = F.layer_norm(x_BLC, x_BLC.shape[-1:], eps=self.eps).mul(scale + 1).add_(shift)
        return torch.addcmul(x_BLC, fn(h), drop_path(gate, self.drop_p, self.training))

    def new_state(self, rescan_mamba: bool = False) -> BlockState:
        raise NotImplementedError


class VARBlock(AdaLNBlock):
    """x <- x + g1 * Attn_causal(mod1(x));  x <- x + g2 * FFN(mod2(x))."""

    n_sublayers = 2

    def forward(self, x_BLC, cond_BD, state: BlockState | None = None):
        attn_mod, ffn_mod = self.modulations(cond_BD, state)
        kv = state.kv if state is not None else None
        x_BLC = self.sublayer(x_BLC, lambda h: self.attn(h, kv, sampling=state is not None), attn_mod)
        return self.sublayer(x_BLC, self.ffn, ffn_mod)

    def new_state(self, rescan_mamba: bool = False) -> BlockState:
        return BlockState(kv=KVCache(capacity=sum(p * p for p in self.attn.patch_nums)))


class MVARBlock(AdaLNBlock):
    """x <- x + g1 * Attn_intra(mod1(x));  x <- x + g2 * Mamba2(mod2(x));  x <- x + g3 * FFN(mod3(x))."""

    n_sublayers = 3

    def build_mixer(self, cfg) -> None:
        self.mamba = Mamba2(cfg.width, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                            headdim=cfg.mamba_headdim, chunk_size=cfg.mamba_chunk)

    def forward(self, x_BLC, cond_BD, state: BlockState | None = None):
        attn_mod, mamba_mod, ffn_mod = self.modulations(cond_BD, state)
        x_BLC = self.sublayer(x_BLC, lambda h: self.attn(h, sampling=state is not None), attn_mod)
        x_BLC = self.sublayer(x_BLC, lambda h: self.scan(h, state), mamba_mod)
        return self.sublayer(x_BLC, self.ffn, ffn_mod)

    def scan(self, u_BLC, state: BlockState | None):
        """Mamba2 over the sequence; while sampling, over one scale continuing from the state."""
        if state is None:
            return self.mamba(u_BLC)
        if state.rescan:  # the official M-VAR sampler: run Mamba over the whole prefix again
            state.prefix = u_BLC if state.prefix is None else torch.cat((state.prefix, u_BLC), 1)
            return self.mamba(state.prefix)[:, -u_BLC.shape[1]:]
        if state.mamba is None:  # ours: the recurrent state, exact, L token-steps in all
            state.mamba = self.mamba.allocate_cache(u_BLC.shape[0], dtype=u_BLC.dtype, device=u_BLC.device)
        return self.mamba(u_BLC, cache=state.mamba)

    def new_state(self, rescan_mamba: bool = False) -> BlockState:
        return BlockState(rescan=rescan_mamba)
