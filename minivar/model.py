"""The next-scale transformer, as VAR and as M-VAR.

VAR (Tian et al. 2024, Sec. 3.2): a GPT-2-like decoder with AdaLN conditioning that predicts
every token of scale k at once from the class token and the coarser scales (block-causal
attention). M-VAR (Ren et al. 2024, Sec. 3.2-3.3) splits each block into intra-scale attention
(a token sees only its own scale), a causal Mamba2 over the whole sequence (coarse -> fine,
raster order) that carries information across scales, and the FFN:

    VAR block:    x += g1 * Attn_causal(mod(x; s1, b1));                   x += g2 * FFN(mod(x; s2, b2))
    M-VAR block:  x += g1 * Attn_intra(mod(x; s1, b1)); x += g2 * Mamba2(mod(x; s2, b2)); x += g3 * FFN(...)
    mod(x; s, b) = LayerNorm(x) * (1 + s) + b,  (g, s, b) = Linear(SiLU(class embedding))   (AdaLN)

Module and parameter names follow the official code, so official state dicts load with a strict
check (``minivar.official``). Sampling with KV / Mamba-state caches lives in ``sample.py``.

Dims: B batch, L tokens (all scales), l tokens of one scale, C width, H heads, c head dim,
Cv tokenizer latent channels, V vocabulary, K scales, D condition dim (= C).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import scales
from .attention import scale_attention, scaled_l2_normalize
from .losses import linear_cross_entropy, loss_stats, next_scale_loss  # noqa: F401  (re-exported)
from .mamba2 import Mamba2


@dataclass
class ModelConfig:
    mixer: str = "var"  # "var" (block-causal attention) or "mvar" (intra-scale attention + Mamba2)
    depth: int = 16
    width: int = 0  # 0: 64 * depth (the papers' size rule)
    heads: int = 0  # 0: depth
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # class id num_classes is the unconditional ("null") class
    vocab_size: int = 4096
    z_channels: int = 32  # Cv of the tokenizer
    patch_nums: tuple = field(default_factory=lambda: scales.PRESETS["256"])
    attn_l2_norm: bool = True  # cosine attention with a learned per-head temperature
    cond_drop: float = 0.1  # label -> null class with this probability while training (for CFG)
    drop_path: float = -1.0  # <0: 0.1 * depth / 24, linearly increasing over blocks
    norm_eps: float = 1e-6
    attn_backend: str = "auto"  # see attention.py
    # Mamba2 (M-VAR): the official block uses these values
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    mamba_headdim: int = 64
    mamba_chunk: int = 256
    # initialisation (official builder: gamma 1e-5; training recipes: 1e-3 for d16/d20)
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    init_head: float = 0.02
    # M-VAR's official init multiplies only the first 2C rows of ada_lin (gamma1, gamma2) by the
    # small gamma and leaves gamma3 (the FFN gate) at init_adaln = 0.5, likely by accident. We
    # default to "small" (all three gates small, as in VAR); "official" reproduces their init.
    mvar_gamma3_init: str = "small"

    def __post_init__(self):
        self.patch_nums = scales.validate(self.patch_nums)
        self.width = self.width or 64 * self.depth
        self.heads = self.heads or self.depth
        if self.drop_path < 0:
            self.drop_path = 0.1 * self.depth / 24
        if self.mixer not in ("var", "mvar"):
            raise ValueError(f"mixer must be 'var' or 'mvar', got {self.mixer!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.mvar_gamma3_init not in ("small", "official"):
            raise ValueError("mvar_gamma3_init must be 'small' or 'official'")

    @property
    def n_gates(self) -> int:  # AdaLN vectors per block: 6 (VAR) or 9 (M-VAR)
        return 6 if self.mixer == "var" else 9


class SelfAttention(nn.Module):
    """Multi-head attention with VAR's q/v biases and optional L2-normalised q, k (cosine attention)."""

    def __init__(self, cfg: ModelConfig):
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
            q = scaled_l2_normalize(q, self.scale_mul_1H11.clamp_max(math.log(100)).exp())
            k = scaled_l2_normalize(k)
        return q, k, v  # each B, H, L, c

    def forward(self, x_BLC, cache: dict | None = None):
        """Whole sequence (cache None), or one scale's tokens while sampling (cache: this block's)."""
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC)
        if cache is None:
            o = scale_attention(q, k, v, self.patch_nums, self.mode, self.scale, self.backend)
        else:
            if self.mode == "causal":  # VAR: keys/values of all earlier scales are cached
                if "kv" not in cache:  # one buffer for the whole sequence, filled scale by scale
                    total = sum(p * p for p in self.patch_nums)
                    cache["kv"] = k.new_empty(2, B, self.H, total, self.c)
                n = cache["k"].shape[2] if "k" in cache else 0  # tokens cached so far
                kv = cache["kv"][:, :, :, :n + L]
                kv[0, :, :, n:], kv[1, :, :, n:] = k, v
                k, v = cache["k"], cache["v"] = kv[0], kv[1]  # views of the filled part
            o = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # M-VAR: own scale only
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


class Block(nn.Module):
    """AdaLN block: VAR (attention, FFN) or M-VAR (intra-scale attention, Mamba2, FFN)."""

    def __init__(self, cfg: ModelConfig, drop_p: float):
        super().__init__()
        C, self.mvar, self.drop_p = cfg.width, cfg.mixer == "mvar", drop_p
        self.eps = cfg.norm_eps
        self.attn = SelfAttention(cfg)
        if self.mvar:
            self.mamba = Mamba2(C, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                                headdim=cfg.mamba_headdim, chunk_size=cfg.mamba_chunk)
        self.ffn = FFN(C, round(C * cfg.mlp_ratio))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, cfg.n_gates * C))

    def modulate(self, x, scale, shift):
        return F.layer_norm(x, x.shape[-1:], eps=self.eps).mul(scale + 1).add_(shift)

    def forward(self, x_BLC, cond_BD, cache: dict | None = None):
        n, C = 9 if self.mvar else 6, x_BLC.shape[-1]
        if cache is not None and "ada" in cache:  # sampling: the condition is the same at every scale
            mods = cache["ada"]
        else:
            mods = self.ada_lin(cond_BD).view(-1, 1, n, C).unbind(2)
            if cache is not None:
                cache["ada"] = mods
        k = n // 3  # gammas, scales, shifts: k of each
        gam, sca, shi = mods[:k], mods[k:2 * k], mods[2 * k:]
        gate = lambda g: drop_path(g, self.drop_p, self.training)  # noqa: E731
        x_BLC = torch.addcmul(x_BLC, self.attn(self.modulate(x_BLC, sca[0], shi[0]), cache), gate(gam[0]))
        if self.mvar:
            u = self.modulate(x_BLC, sca[1], shi[1])
            x_BLC = torch.addcmul(x_BLC, self.mamba_forward(u, cache), gate(gam[1]))
        x_BLC = torch.addcmul(x_BLC, self.ffn(self.modulate(x_BLC, sca[-1], shi[-1])), gate(gam[-1]))
        return x_BLC

    def mamba_forward(self, u_BLC, cache: dict | None):
        if cache is None:
            return self.mamba(u_BLC)
        if cache.get("rescan"):  # the official M-VAR sampler: re-run Mamba over the whole prefix
            cache["prefix"] = u_BLC if "prefix" not in cache else torch.cat((cache["prefix"], u_BLC), 1)
            return self.mamba(cache["prefix"])[:, -u_BLC.shape[1]:]
        if "mamba" not in cache:  # ours: a recurrent state, exact, L token-steps in all
            cache["mamba"] = self.mamba.allocate_cache(u_BLC.shape[0], dtype=u_BLC.dtype, device=u_BLC.device)
        return self.mamba(u_BLC, cache=cache["mamba"])


class NextScaleTransformer(nn.Module):
    """``model(labels_B, x_BLCv)`` -> logits (B, L, V); ``model.generate(labels_B, ...)`` -> images."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        C, K, pns = cfg.width, len(cfg.patch_nums), cfg.patch_nums
        self.L, self.first_l = scales.num_tokens(pns), pns[0] ** 2
        self.num_classes = cfg.num_classes
        self.word_embed = nn.Linear(cfg.z_channels, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
        self.lvl_embed = nn.Embedding(K, C)
        self.register_buffer("lvl_L", scales.scale_ids(pns), persistent=False)
        dpr = [cfg.drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]  # linear rule
        self.blocks = nn.ModuleList(Block(cfg, p) for p in dpr)
        self.head_nm = nn.Module()  # AdaLN before the head (official name: head_nm.ada_lin)
        self.head_nm.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.head = nn.Linear(C, cfg.vocab_size)
        self._tokenizer = ()  # the VQVAE used by generate(); not a submodule (not in the state dict)
        self.init_weights()

    # ------------------------------------------------------------------ init (VAR's recipe)
    @torch.no_grad()
    def init_weights(self):
        cfg, C = self.config, self.config.width
        std = math.sqrt(1 / C / 3)
        mamba_modules = {id(m) for b in self.blocks if b.mvar for m in b.mamba.modules()}
        for m in self.modules():
            if id(m) in mamba_modules:  # Mamba2 keeps its own (mamba-ssm) initialisation
                continue
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(cfg.init_head)
        self.head_nm.ada_lin[1].weight.mul_(cfg.init_adaln)
        for b in self.blocks:
            b.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))
            b.ffn.fc2.weight.div_(math.sqrt(2 * cfg.depth))
            w = b.ada_lin[1].weight  # rows: [gammas | scales | shifts], C rows each
            n_gamma = 2 if (b.mvar and cfg.mvar_gamma3_init == "official") else cfg.n_gates // 3
            w[n_gamma * C:].mul_(cfg.init_adaln)
            w[:n_gamma * C].mul_(cfg.init_adaln_gamma)

    # ------------------------------------------------------------------ pieces shared with sample.py
    def check_labels(self, labels_B: torch.Tensor) -> None:
        if not torch.is_tensor(labels_B) or labels_B.dim() != 1 or labels_B.dtype != torch.long:
            raise ValueError("labels must be a 1-D LongTensor of class ids (B,)")
        if labels_B.numel() and (labels_B.min() < 0 or labels_B.max() > self.num_classes):
            raise ValueError(f"class ids must be in [0, {self.num_classes}] ({self.num_classes} = "
                             f"unconditional); got min {int(labels_B.min())}, max {int(labels_B.max())}")

    def lvl_pos(self):
        """(1, L, C): level embedding + learned position of every token."""
        return self.lvl_embed(self.lvl_L)[None] + self.pos_1LC

    def sos(self, cond_BD):
        """Input of scale 0: class embedding + pos_start (+ level/position, added by the caller)."""
        return cond_BD[:, None].expand(-1, self.first_l, -1) + self.pos_start

    def head_modulation(self, cond_BD):
        """(scale, shift) of the last AdaLN (head_nm), each (B, 1, C)."""
        return self.head_nm.ada_lin(cond_BD).view(-1, 1, 2, cond_BD.shape[-1]).unbind(2)

    def head_input(self, x_BLC, cond_BD, modulation=None):
        """What the linear head reads, (B, L, C) in fp32. ``modulation``: a precomputed
        ``head_modulation(cond_BD)`` (the sampler computes it once, not at every scale)."""
        scale, shift = modulation if modulation is not None else self.head_modulation(cond_BD)
        h = F.layer_norm(x_BLC.float(), x_BLC.shape[-1:], eps=self.config.norm_eps)
        return h.mul(scale + 1).add_(shift)

    def logits(self, x_BLC, cond_BD, modulation=None):
        return self.head(self.head_input(x_BLC, cond_BD, modulation)).float()

    # ------------------------------------------------------------------ teacher-forced forward
    def trunk(self, labels_B: torch.Tensor, x_BLCv: torch.Tensor):
        """Everything before the head: (x_BLC after the last block, cond_BD)."""
        self.check_labels(labels_B)
        B, want = labels_B.shape[0], (self.L - self.first_l, self.config.z_channels)
        if x_BLCv.dim() != 3 or tuple(x_BLCv.shape[1:]) != want or x_BLCv.shape[0] != B:
            raise ValueError(f"teacher input must be (B={B}, {want[0]}, {want[1]}) for schedule "
                             f"{self.config.patch_nums}, got {tuple(x_BLCv.shape)}; build it with "
                             "vae.teacher_input(indices) from a tokenizer with the same schedule")
        if self.training and self.config.cond_drop > 0:
            drop = torch.rand(B, device=labels_B.device) < self.config.cond_drop
            labels_B = torch.where(drop, torch.full_like(labels_B, self.num_classes), labels_B)
        cond_BD = self.class_emb(labels_B)
        x_BLC = torch.cat((self.sos(cond_BD), self.word_embed(x_BLCv.float())), dim=1) + self.lvl_pos()
        for b in self.blocks:
            x_BLC = b(x_BLC, cond_BD)
        return x_BLC, cond_BD

    def forward(self, labels_B: torch.Tensor, x_BLCv: torch.Tensor, targets_BL: torch.Tensor | None = None):
        """labels (B,), teacher input (B, L - first_l, Cv) from ``vae.teacher_input`` -> logits (B, L, V).

        With ``targets_BL`` (B, L) it returns (ce_BL, hit_BL) instead: each token's cross-entropy
        and whether its argmax hit, with the head and the loss fused in chunks so that the (B, L, V)
        logits never exist (``losses.py``; same numbers as from the logits up to float rounding).
        ``loss_stats(ce_BL, hit_BL, patch_nums)`` turns them into ``next_scale_loss``'s dict.

        In training mode labels are dropped to the null class with probability ``cond_drop``;
        in eval mode never (the official forward drops them in eval mode too; we do not).
        """
        x_BLC, cond_BD = self.trunk(labels_B, x_BLCv)
        if targets_BL is None:
            return self.logits(x_BLC, cond_BD)
        h_BLC = self.head_input(x_BLC, cond_BD)
        B, L, C = h_BLC.shape
        if tuple(targets_BL.shape) != (B, L):
            raise ValueError(f"targets must be (B={B}, L={L}), got {tuple(targets_BL.shape)}")
        V = self.config.vocab_size
        if targets_BL.numel() and (targets_BL.min() < 0 or targets_BL.max() >= V):
            raise ValueError(f"target token ids must be in [0, {V}), got [{int(targets_BL.min())}, "
                             f"{int(targets_BL.max())}]: encode the images with a tokenizer of vocabulary {V}")
        ce_N, hit_N = linear_cross_entropy(h_BLC.reshape(B * L, C), self.head.weight, self.head.bias,
                                           targets_BL.reshape(B * L))
        return ce_N.view(B, L), hit_N.view(B, L)

    def loss(self, labels_B: torch.Tensor, x_BLCv: torch.Tensor, targets_BL: torch.Tensor) -> dict:
        """``next_scale_loss(self(labels_B, x_BLCv), targets_BL, patch_nums)``, computed fused."""
        return loss_stats(*self(labels_B, x_BLCv, targets_BL), self.config.patch_nums)

    # ------------------------------------------------------------------ sampling (see sample.py)
    def attach_tokenizer(self, vae) -> "NextScaleTransformer":
        if tuple(vae.patch_nums) != tuple(self.config.patch_nums):
            raise ValueError(f"tokenizer schedule {vae.patch_nums} != model schedule {self.config.patch_nums}")
        if (vae.config.vocab_size, vae.config.z_channels) != (self.config.vocab_size, self.config.z_channels):
            raise ValueError("tokenizer vocabulary / latent width do not match the model's")
        self._tokenizer = (vae,)
        return self

    def generate(self, labels_B, cfg=1.5, top_k=900, top_p=0.96, seed=None, return_indices=False,
                 more_smooth=False, vae=None):
        """Class-conditional images (B, 3, H, W) in [0, 1]; see ``minivar.sample.generate``."""
        from .sample import generate
        vae = vae or (self._tokenizer[0] if self._tokenizer else None)
        if vae is None:
            raise ValueError("no tokenizer: pass vae=... or call model.attach_tokenizer(vae) first")
        return generate(self, vae, labels_B, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                        return_indices=return_indices, more_smooth=more_smooth)

    def edit(self, images, mask, labels_B, **kw):
        """Zero-shot in/out-painting and class editing; see ``minivar.sample.edit``."""
        from .sample import edit
        vae = kw.pop("vae", None) or (self._tokenizer[0] if self._tokenizer else None)
        if vae is None:
            raise ValueError("no tokenizer: pass vae=... or call model.attach_tokenizer(vae) first")
        return edit(self, vae, images, mask, labels_B, **kw)

