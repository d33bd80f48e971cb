"""VAR's multi-scale residual VQ-VAE tokenizer: image <-> K token maps, coarse -> fine.

    vae = VQVAE(TOKENIZER_PRESETS["tiny16"])
    indices = vae.encode(x_B3HW)          # list of K LongTensors (B, pn^2), x in [-1, 1]
    x_rec   = vae.decode(indices)         # (B, 3, H, W) in [-1, 1]
    x_BLC   = vae.teacher_input(indices)  # (B, L-1, Cv): the transformer's teacher-forcing input

The conv nets live in ``autoencoder.py`` and the quantiser in ``quantizer.py``; this file holds the
config, the public API, the checks on what users pass in, and saving / loading our own files.
Official VAR checkpoints are read by ``minivar.official.load_vae``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.nn as nn

from .. import fast, scales
from .. import config
from ..config import setting
from ..checkpoints import CheckpointError, atomic_save, load_pretrained, load_weights, safe_load, save_pretrained
from .quantizer import MultiScaleQuantizer, QuantOutput
from .autoencoder import Decoder, Encoder


@dataclass
class TokenizerConfig:
    """The multi-scale residual VQ autoencoder (VAR Sec. 3.3). The defaults are the official VAR
    tokenizer (vae_ch160v4096z32.pth, 256 px); ``TOKENIZER_PRESETS`` holds the CPU-sized ones."""
    image_size: int = setting(256, "image side in pixels; a multiple of 2^(len(ch_mult) - 1)", at_least=1)
    ch: int = setting(160, "base channel count of the encoder and decoder", at_least=1)
    ch_mult: tuple[int, ...] = setting((1, 1, 2, 2, 4), "channel multiplier per resolution level; "
                                       "len(ch_mult) - 1 halvings of the image side", at_least=1)
    num_res_blocks: int = setting(2, "residual blocks per encoder level (the decoder has one more)", at_least=0)
    attn_lowest: bool = setting(True, "self-attention at the lowest resolution level")
    attn_mid: bool = setting(True, "self-attention in the middle block")
    norm_groups: int = setting(32, "groups of the group norms; must divide every channel count", at_least=1)
    dropout: float = setting(0.0, "dropout rate in the residual blocks", at_least=0, below=1)
    z_channels: int = setting(32, "codebook vector width Cv", at_least=1)
    vocab_size: int = setting(4096, "codebook size V", at_least=2)
    patch_nums: tuple[int, ...] = setting(doc="side of each scale's token map, coarse to fine; the last one is "
                                          "the latent side", factory=lambda: scales.PRESETS["256"], at_least=1)
    num_phi: int = setting(4, "residual convolutions phi_k: 4 partially shared (official), 1 shared, 0 one per scale",
                           at_least=0)
    phi_ratio: float = setting(0.5, "mix of phi_k(h) and h: (1 - ratio) h + ratio phi_k(h)", at_least=0, at_most=1)
    beta: float = setting(0.25, "commitment-loss weight", at_least=0)
    quant_conv_ks: int = setting(3, "kernel size of the convolutions around the quantiser", at_least=1)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_side(self) -> int:
        return self.image_size // self.downsample

    def __post_init__(self):
        self.ch_mult, self.patch_nums = tuple(self.ch_mult), tuple(self.patch_nums)
        config.check_ranges(self)
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the downsampling "
                             f"factor {self.downsample} (2^(len(ch_mult)-1))")
        scales.validate(self.patch_nums, self.latent_side)
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % self.norm_groups]
        if bad:
            raise ValueError(f"channel counts {bad} are not divisible by norm_groups={self.norm_groups}")


TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
    # The official VAR tokenizer (vae_ch160v4096z32.pth, ~109M parameters), 256 px.
    "official": TokenizerConfig(),
    # CPU presets: 4x downsampling, small codebooks. 16 px -> 4x4 latent, 32 px -> 8x8 latent.
    "tiny16": TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16,
                              vocab_size=256, patch_nums=scales.PRESETS["16px"]),
    "tiny32": TokenizerConfig(image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16,
                              vocab_size=512, patch_nums=scales.PRESETS["32px"]),
}


PRETRAINED_TYPE = "minivar-tokenizer"


class ImageInputError(ValueError):
    """Images that are not what the tokenizer expects (size, channels, dtype, value range)."""


def check_images(x: torch.Tensor, image_size: int) -> None:
    """Raise one clear ImageInputError when x is not float (B, 3, S, S) in [-1, 1]."""
    if not isinstance(x, torch.Tensor):
        raise ImageInputError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint8 or not x.is_floating_point():
        raise ImageInputError(f"images have dtype {x.dtype}; convert with x.float() / 127.5 - 1 "
                              "to get floats in [-1, 1]")
    if x.dim() == 3:
        raise ImageInputError(f"images have shape {tuple(x.shape)}; add the batch dim with x[None]")
    if x.dim() != 4 or x.shape[1] != 3:
        hint = " (channels last? use x.permute(0, 3, 1, 2))" if x.dim() == 4 and x.shape[-1] == 3 else \
            " (grey images? use x.expand(-1, 3, -1, -1))" if x.dim() == 4 and x.shape[1] == 1 else ""
        raise ImageInputError(f"images must be (B, 3, H, W), got {tuple(x.shape)}{hint}")
    if x.shape[-2:] != (image_size, image_size):
        raise ImageInputError(f"images are {x.shape[-2]}x{x.shape[-1]} but this tokenizer takes "
                              f"{image_size}x{image_size}; resize (and crop) them first")
    if not torch.isfinite(x).all():
        raise ImageInputError("images contain NaN or inf")
    lo, hi = x.min().item(), x.max().item()
    if hi > 1.0 + 1e-3 or lo < -1.0 - 1e-3:
        fix = "x / 127.5 - 1" if hi > 2 else "clamp them to [-1, 1]"
        raise ImageInputError(f"image values span [{lo:.3g}, {hi:.3g}], expected [-1, 1]; use {fix}")
    if lo >= 0.0:
        raise ImageInputError(f"image values span [{lo:.3g}, {hi:.3g}]: this looks like [0, 1] data; "
                              "map it with x * 2 - 1 (or pass check_range=False if it is really [-1, 1])")


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> multi-scale quantiser -> post_quant_conv -> decoder."""

    def __init__(self, config: TokenizerConfig | None = None):
        super().__init__()
        self.config = cfg = config or TokenizerConfig()
        nets = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                    z_channels=cfg.z_channels, attn_lowest=cfg.attn_lowest, attn_mid=cfg.attn_mid,
                    groups=cfg.norm_groups, dropout=cfg.dropout)
        self.encoder = Encoder(**nets)
        self.decoder = Decoder(**nets)
        self.quantize = MultiScaleQuantizer(cfg.vocab_size, cfg.z_channels, cfg.patch_nums,
                                            cfg.num_phi, cfg.phi_ratio, cfg.beta)
        ks, cz = cfg.quant_conv_ks, cfg.z_channels
        self.quant_conv = nn.Conv2d(cz, cz, ks, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(cz, cz, ks, padding=ks // 2)

    @property
    def patch_nums(self) -> tuple:
        return self.config.patch_nums

    # ------------------------------------------------------------------ checks
    def check_indices(self, indices) -> None:
        pns = self.patch_nums
        if not isinstance(indices, (list, tuple)) or len(indices) != len(pns):
            n = len(indices) if isinstance(indices, (list, tuple)) else type(indices).__name__
            raise ValueError(f"expected a list of {len(pns)} index tensors (one per scale {pns}), got {n}")
        B = indices[0].shape[0]
        for k, (pn, idx) in enumerate(zip(pns, indices)):
            if idx.dtype != torch.long or tuple(idx.shape) != (B, pn * pn):
                raise ValueError(f"scale {k} indices must be LongTensor (B={B}, {pn * pn}), "
                                 f"got {idx.dtype} {tuple(idx.shape)}")
            if idx.numel() and (idx.min() < 0 or idx.max() >= self.config.vocab_size):
                raise ValueError(f"scale {k} holds code ids outside [0, {self.config.vocab_size})")

    # ------------------------------------------------------------------ public API
    def img_to_f(self, x_B3HW, check_range: bool = True):
        if check_range:
            check_images(x_B3HW, self.config.image_size)
        return self.quant_conv(self.encoder(x_B3HW))

    @torch.no_grad()
    def encode(self, x_B3HW: torch.Tensor, check_range: bool = True) -> list[torch.Tensor]:
        """Images in [-1, 1] -> list of K LongTensors (B, pn^2), coarse -> fine."""
        return self.quantize.quantize(self.img_to_f(x_B3HW, check_range))

    # Opt-in approximate decode: set to torch.bfloat16 to run the decoder under autocast. On CPUs
    # with AMX / AVX512-BF16 the official 256 px decoder is ~2.5x faster; the pixels move by
    # ~1e-2 (benchmarks/vs_official.py prints the measured error). Encoding is never affected.
    decode_dtype: torch.dtype | None = None

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        if fast.enabled.nhwc_decode and f_hat_BChw.device.type == "cpu" and not torch.is_grad_enabled():
            # inference on CPU: NHWC activations (oneDNN's native conv layout) decode ~10% faster;
            # the same math, other summation order (pixels differ by ~1e-5 from NCHW)
            f_hat_BChw = f_hat_BChw.contiguous(memory_format=torch.channels_last)
        if self.decode_dtype in (None, torch.float32):
            img = self.decoder(self.post_quant_conv(f_hat_BChw))
        else:
            with torch.autocast(f_hat_BChw.device.type, dtype=self.decode_dtype):
                img = self.decoder(self.post_quant_conv(f_hat_BChw)).float()
        return img.contiguous().clamp_(-1, 1)

    @torch.no_grad()
    def decode(self, indices) -> torch.Tensor:
        """List of K index maps -> images (B, 3, H, W) in [-1, 1]."""
        self.check_indices(indices)
        return self.fhat_to_img(self.quantize.indices_to_fhat(indices))

    @torch.no_grad()
    def decode_per_scale(self, indices) -> list[torch.Tensor]:
        """Images decoded from scales 0..k, for k = 0..K-1 (what each scale adds, as pictures)."""
        self.check_indices(indices)
        return [self.fhat_to_img(f) for f in self.quantize.indices_to_fhat(indices, cumulative=True)]

    def teacher_input(self, indices) -> torch.Tensor:
        """(B, L-1, Cv) teacher-forcing input of the next-scale transformer, from the K index maps
        or from all L tokens in one (B, L) tensor (as a dataset encoded once stores them)."""
        if torch.is_tensor(indices):
            L = scales.num_tokens(self.patch_nums)
            if indices.dim() != 2 or indices.shape[1] != L:
                raise ValueError(f"token tensor must be (B, L={L}) for schedule {self.patch_nums}, "
                                 f"got {tuple(indices.shape)}")
            indices = list(indices.split(scales.token_counts(self.patch_nums), dim=1))
        self.check_indices(indices)
        return self.quantize.teacher_input(indices)

    def empty_fhat(self, batch_size: int, device=None) -> torch.Tensor:
        side = self.patch_nums[-1]
        return torch.zeros(batch_size, self.config.z_channels, side, side, device=device)

    def next_input(self, f_hat_BChw, k: int, codes):
        """Sampling step: add scale k's codes to f_hat; return (f_hat, (B, pn_{k+1}^2, Cv) or None)."""
        return self.quantize.next_input(f_hat_BChw, k, codes)

    def forward(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, QuantOutput]:
        """Training pass: (reconstruction, quantiser output with vq_loss and indices)."""
        q = self.quantize(self.img_to_f(x_B3HW))
        return self.decoder(self.post_quant_conv(q.f_hat)), q

    # ------------------------------------------------------------------ our own checkpoint files
    def save(self, path: str, **extra) -> None:
        """Write {kind, config, state_dict, extra} atomically (temp file + rename)."""
        blob = {"kind": "minivar-tokenizer", "config": dataclasses.asdict(self.config),
                "state_dict": self.state_dict(), **extra}
        atomic_save(blob, path)

    @classmethod
    def load(cls, path: str, map_location="cpu") -> "VQVAE":
        """A tokenizer written by ``save`` (for either kind of file: ``minivar.loading.load_tokenizer``)."""
        return cls.from_checkpoint(safe_load(path, map_location), path)

    # ------------------------------------------------------------------ save_pretrained folders
    def save_pretrained(self, folder: str) -> None:
        """``folder/config.json`` (the TokenizerConfig) and ``folder/model.safetensors``."""
        save_pretrained(folder, PRETRAINED_TYPE, config.to_dict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, folder: str) -> "VQVAE":
        """A tokenizer from a ``save_pretrained`` folder (weights cast to float32), in eval mode."""
        meta, state_dict = load_pretrained(folder, PRETRAINED_TYPE)
        try:
            vae = cls(config.from_dict(TokenizerConfig, meta))
        except config.ConfigError as e:
            raise CheckpointError(f"{os.path.join(folder, 'config.json')}: {e}") from None
        load_weights(vae, state_dict, folder)
        return vae.eval()

    @classmethod
    def from_checkpoint(cls, blob, source: str = "the checkpoint") -> "VQVAE":
        if not isinstance(blob, dict) or blob.get("kind") != "minivar-tokenizer":
            raise CheckpointError(f"{source} is not a minivar tokenizer file; for an official VAR "
                                  "tokenizer use minivar.official.load_vae(path)")
        vae = cls(TokenizerConfig(**blob["config"]))
        vae.load_state_dict(blob["state_dict"])
        return vae
