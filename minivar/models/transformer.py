"""The next-scale transformer, as VAR and as M-VAR.

VAR (Tian et al. 2024, Sec. 3.2): a GPT-2-like decoder with AdaLN conditioning that predicts
every token of scale k at once from the class token and the coarser scales (block-causal
attention). M-VAR (Ren et al. 2024, Sec. 3.2-3.3) splits each block into intra-scale attention
(a token sees only its own scale), a causal Mamba2 over the whole sequence (coarse -> fine,
raster order) that carries information across scales, and the FFN:

    VAR block:    x += g1 * Attn_causal(mod(x; s1, b1));                   x += g2 * FFN(mod(x; s2, b2))
    M-VAR block:  x += g1 * Attn_intra(mod(x; s1, b1)); x += g2 * Mamba2(mod(x; s2, b2)); x += g3 * FFN(...)
    mod(x; s, b) = LayerNorm(x) * (1 + s) + b,  (g, s, b) = Linear(SiLU(class embedding))   (AdaLN)

The blocks are in ``blocks.py``. Module and parameter names follow the official code, so official
state dicts load with a strict check (``minivar.official``). ``start`` / ``step`` run the model one
scale at a time with typed caches (``caches.py``); ``minivar.sample`` drives them.

Dims: B batch, L tokens (all scales), l tokens of one scale, C width, H heads, c head dim,
Cv tokenizer latent channels, V vocabulary, K scales, D condition dim (= C).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import config, fast, scales
from ..checkpoints import CheckpointError, is_pretrained, load_pretrained, load_weights, save_pretrained
from ..config import setting
from ..fast.head_loss import linear_cross_entropy
from .attention import BACKENDS
from .blocks import MVARBlock, VARBlock
from .caches import SamplingState
from .losses import loss_stats


@dataclass
class ModelConfig:
    """The transformer's architecture (VAR: Tian et al. 2024, Sec. 3-4; M-VAR: Ren et al. 2024, Sec. 3).
    The defaults are VAR-d16 for ImageNet 256 px; ``width``, ``heads`` and ``drop_path`` follow
    ``depth`` unless given."""
    mixer: str = setting("var", "token mixer: 'var' (block-causal attention over all scales) or 'mvar' "
                         "(attention inside each scale + a Mamba2 across scales)", choices=("var", "mvar"))
    depth: int = setting(16, "number of transformer blocks", at_least=1)
    width: int = setting(0, "embedding width C (0: 64 x depth, the papers' size rule)", at_least=0)
    heads: int = setting(0, "attention heads; must divide width (0: depth)", at_least=0)
    mlp_ratio: float = setting(4.0, "hidden width of the feed-forward layer, as a multiple of width", above=0)
    num_classes: int = setting(1000, "number of classes; class id num_classes is the null class used for "
                               "guidance (in a training config: 0 = from the data)", at_least=0)
    vocab_size: int = setting(4096, "codebook size V of the tokenizer", bound="tokenizer", at_least=2)
    z_channels: int = setting(32, "codebook vector width Cv of the tokenizer", bound="tokenizer", at_least=1)
    patch_nums: tuple[int, ...] = setting(doc="side of each scale's token map, coarse to fine", bound="tokenizer",
                                          factory=lambda: scales.PRESETS["256"], at_least=1)
    attn_l2_norm: bool = setting(True, "cosine attention with a learned per-head temperature (VAR: on; the "
                                 "released M-VAR d16 / d20: off)")
    cond_drop: float = setting(0.1, "probability, in training, of replacing the label by the null class "
                               "(what classifier-free guidance needs), in [0, 1)", at_least=0, below=1)
    drop_path: float = setting(-1.0, "stochastic-depth rate of the last block, rising linearly from 0 over the "
                               "blocks (-1: 0.1 x depth / 24)", at_least=-1, below=1)
    norm_eps: float = setting(1e-6, "epsilon of the layer norms", above=0)
    attn_backend: str = setting("auto", "attention implementation: 'auto' picks the fastest one tested equal "
                                "to 'blocks' (see minivar/models/attention.py)",
                                choices=BACKENDS)
    d_state: int = setting(64, "M-VAR: Mamba2 state size N per head", at_least=1)
    d_conv: int = setting(4, "M-VAR: Mamba2 causal-convolution width", at_least=1)
    expand: int = setting(2, "M-VAR: Mamba2 inner width, as a multiple of width", at_least=1)
    mamba_headdim: int = setting(64, "M-VAR: Mamba2 head dimension P; must divide expand x width", at_least=1)
    mamba_chunk: int = setting(256, "M-VAR: chunk length of the Mamba2 scan (the same result for any value)",
                               at_least=1)
    init_adaln: float = setting(0.5, "initial scale of the AdaLN modulation weights", at_least=0)
    init_adaln_gamma: float = setting(1e-5, "initial scale of the AdaLN gates (VAR --alng: 1e-3 for d16 / d20, "
                                      "1e-4 for d24, 1e-5 for d30)", at_least=0)
    init_head: float = setting(0.02, "initial scale of the output head", at_least=0)
    # M-VAR's official init multiplies only the first 2C rows of ada_lin (gamma1, gamma2) by the
    # small gamma and leaves gamma3 (the FFN gate) at init_adaln = 0.5, likely by accident.
    mvar_gamma3_init: str = setting("small", "M-VAR's feed-forward gate at init: 'small' (like the other gates, "
                                    "as in VAR) or 'official' (M-VAR's released init: left at init_adaln)",
                                    choices=("small", "official"))

    @staticmethod
    def size_rules(depth: int) -> dict:
        """What width, heads and drop_path become when left at 0 / -1 (the papers' rules)."""
        return {"width": 64 * depth, "heads": depth, "drop_path": 0.1 * depth / 24}

    def __post_init__(self):
        config.check_ranges(self)
        self.patch_nums = scales.validate(self.patch_nums)
        rules = self.size_rules(self.depth)
        self.width = self.width or rules["width"]
        self.heads = self.heads or rules["heads"]
        if self.drop_path < 0:
            self.drop_path = rules["drop_path"]
        if self.mixer not in ("var", "mvar"):
            raise ValueError(f"mixer must be 'var' or 'mvar', got {self.mixer!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.mixer == "mvar" and (self.expand * self.width) % self.mamba_headdim:
            raise ValueError(f"mamba_headdim {self.mamba_headdim} must divide expand x width = "
                             f"{self.expand * self.width}")
        if self.mvar_gamma3_init not in ("small", "official"):
            raise ValueError("mvar_gamma3_init must be 'small' or 'official'")


PRETRAINED_TYPE = "minivar-transformer"
PRETRAINED_EXTRAS = ("tokenizer", "training")  # keys of config.json beside the ModelConfig fields


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
        block = VARBlock if cfg.mixer == "var" else MVARBlock
        self.blocks = nn.ModuleList(block(cfg, p) for p in dpr)
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
        mamba_modules = {id(m) for b in self.blocks if isinstance(b, MVARBlock) for m in b.mamba.modules()}
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
            n_gamma = 2 if (isinstance(b, MVARBlock) and cfg.mvar_gamma3_init == "official") else b.n_sublayers
            w[n_gamma * C:].mul_(cfg.init_adaln)
            w[:n_gamma * C].mul_(cfg.init_adaln_gamma)

    # ------------------------------------------------------------------ pieces of the input and the head
    # ------------------------------------------------------------------ save_pretrained folders
    def save_pretrained(self, folder: str, tokenizer: str | None = None, training: dict | None = None) -> None:
        """``folder/config.json`` (the ModelConfig) and ``folder/model.safetensors``. ``tokenizer``: the
        path of the tokenizer's folder, stored relative to ``folder``; ``training``: facts about the
        data (name, split) that evaluation needs."""
        extra = {}
        if tokenizer:
            extra["tokenizer"] = os.path.relpath(os.path.abspath(tokenizer), os.path.abspath(folder))
        if training:
            extra["training"] = training
        if tokenizer and not is_pretrained(tokenizer):
            raise ValueError(f"tokenizer {tokenizer} is not a save_pretrained folder; save it first "
                             "(vae.save_pretrained(path))")
        # the attention backend is a property of the machine that runs the model, not of the model
        fields = {**config.to_dict(self.config), "attn_backend": "auto"}
        save_pretrained(folder, PRETRAINED_TYPE, fields, self.state_dict(), extra)

    @classmethod
    def from_pretrained(cls, folder: str, **overrides) -> "NextScaleTransformer":
        """A model from a ``save_pretrained`` folder (weights cast to float32), in eval mode.
        ``overrides`` replace config fields that do not change the weights, e.g. ``attn_backend="sdpa"``."""
        meta, state_dict = load_pretrained(folder, PRETRAINED_TYPE)
        fields = {k: v for k, v in meta.items() if k not in PRETRAINED_EXTRAS}
        try:
            model = cls(config.from_dict(ModelConfig, {**fields, **overrides}))
        except config.ConfigError as e:
            raise CheckpointError(f"{os.path.join(folder, 'config.json')}: {e}") from None
        load_weights(model, state_dict, folder)
        return model.eval()

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
        logits never exist (``minivar.fast.head_loss``; same numbers up to float rounding).
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
        if not fast.enabled.head_loss:  # the plain way: all (B, L, V) logits, then the loss
            logits_BLV = self.head(h_BLC).float()
            ce_BL = F.cross_entropy(logits_BLV.reshape(B * L, V), targets_BL.reshape(B * L), reduction="none")
            return ce_BL.view(B, L), (logits_BLV.argmax(-1) == targets_BL)
        ce_N, hit_N = linear_cross_entropy(h_BLC.reshape(B * L, C), self.head.weight, self.head.bias,
                                           targets_BL.reshape(B * L))
        return ce_N.view(B, L), hit_N.view(B, L)

    def loss(self, labels_B: torch.Tensor, x_BLCv: torch.Tensor, targets_BL: torch.Tensor) -> dict:
        """``next_scale_loss(self(labels_B, x_BLCv), targets_BL, patch_nums)``, computed fused."""
        return loss_stats(*self(labels_B, x_BLCv, targets_BL), self.config.patch_nums)

    # ------------------------------------------------------------------ one scale at a time (sampling)
    def start(self, labels_B: torch.Tensor, rescan_mamba: bool = False) -> tuple[SamplingState, torch.Tensor]:
        """Begin generating for class ids ``labels_B``: the sampling state and scale 0's input (B, l0, C).

        ``rescan_mamba``: M-VAR blocks re-run Mamba over the whole prefix at every scale, as the
        official sampler does, instead of continuing from their recurrent state (same result)."""
        self.check_labels(labels_B)
        cond_BD = self.class_emb(labels_B)
        state = SamplingState(cond_BD, self.head_modulation(cond_BD),
                              [b.new_state(rescan_mamba) for b in self.blocks])
        for b in self.blocks:  # count Mamba's token-steps per image from here on
            if isinstance(b, MVARBlock):
                b.mamba.tokens_scanned = 0
        return state, self.sos(cond_BD) + self.lvl_pos()[:, :self.first_l]

    def step(self, state: SamplingState, x_BlC: torch.Tensor) -> torch.Tensor:
        """Feed scale ``state.k``'s tokens (B, l, C); return their logits (B, l, V), fp32. Each block
        attends to what its state holds of the earlier scales and keeps what the next scale needs."""
        for block, block_state in zip(self.blocks, state.blocks):
            x_BlC = block(x_BlC, state.cond_BD, block_state)
        state.k += 1
        return self.logits(x_BlC, state.cond_BD, state.head_modulation)

    def scale_input(self, state: SamplingState, nxt_BlCv: torch.Tensor) -> torch.Tensor:
        """The transformer input of scale ``state.k`` from the tokenizer's ``next_input`` (B, l, Cv)."""
        offs = scales.offsets(self.config.patch_nums)
        lvl_pos = self.lvl_pos()[:, offs[state.k]:offs[state.k + 1]]
        return self.word_embed(nxt_BlCv) + lvl_pos

    # ------------------------------------------------------------------ sampling (see minivar/sample.py)
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
        # minivar.sample sits above the models in the import layers (ARCHITECTURE.md): this is the
        # package's one upward import, so it waits until the call
        from ..sample import generate
        vae = vae or (self._tokenizer[0] if self._tokenizer else None)
        if vae is None:
            raise ValueError("no tokenizer: pass vae=... or call model.attach_tokenizer(vae) first")
        return generate(self, vae, labels_B, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                        return_indices=return_indices, more_smooth=more_smooth)

    def edit(self, images, mask, labels_B, **kw):
        """Zero-shot in/out-painting and class editing; see ``minivar.sample.edit``."""
        from ..sample import edit  # deferred, as in generate
        vae = kw.pop("vae", None) or (self._tokenizer[0] if self._tokenizer else None)
        if vae is None:
            raise ValueError("no tokenizer: pass vae=... or call model.attach_tokenizer(vae) first")
        return edit(self, vae, images, mask, labels_B, **kw)

