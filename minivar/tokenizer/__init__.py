"""Stage 1, image -> tokens: VAR's multi-scale residual VQ-VAE (Tian et al. 2024, Sec. 3.3).

    quantizer.py    the multi-scale residual quantiser: area-down, nearest code, bicubic up, phi
    autoencoder.py  the conv encoder and decoder around it
    vqvae.py        ``VQVAE``: encode / decode / teacher_input, its config and presets, input checks
"""
from .vqvae import TOKENIZER_PRESETS, VQVAE, ImageInputError, TokenizerConfig, check_images

__all__ = ["VQVAE", "TokenizerConfig", "TOKENIZER_PRESETS", "ImageInputError", "check_images"]
