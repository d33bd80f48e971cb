"""Open any weights file minivar accepts, the kind read off the file.

* a tokenizer: minivar's ``tokenizer.pt`` (written by ``VQVAE.save``) or the official VAR
  tokenizer ``vae_ch160v4096z32.pth`` (``minivar.official.load_vae``);
* a transformer: minivar's ``model.pt`` or a training checkpoint ``ckpt/step_*.pt`` (EMA weights
  when the run kept them); official VAR / M-VAR files go through ``minivar.official``.

Every command that takes a file path calls these, so each accepts both kinds wherever both make
sense. Everything is read with ``weights_only=True`` (``minivar.checkpoints.safe_load``).
"""
from __future__ import annotations

from . import official
from .checkpoints import CheckpointError, safe_load
from .models.transformer import ModelConfig, NextScaleTransformer
from .tokenizer.vqvae import VQVAE

MODEL_KINDS = ("minivar-model", "minivar-train")


def load_tokenizer(path: str) -> VQVAE:
    """A tokenizer from either kind of file, read once, in eval mode."""
    blob = safe_load(path)
    if isinstance(blob, dict) and blob.get("kind") == "minivar-tokenizer":
        return VQVAE.from_checkpoint(blob, path).eval()
    if isinstance(blob, dict) and blob.get("kind") in MODEL_KINDS:
        raise CheckpointError(f"{path} is a minivar transformer file, not a tokenizer; pass the tokenizer.pt "
                              "written by `train-tokenizer` (or the official vae_ch160v4096z32.pth)")
    return official.load_vae(blob)


def load_model(path: str, map_location="cpu") -> NextScaleTransformer:
    """A transformer from ``model.pt`` or from a training checkpoint (EMA weights when present), in eval mode."""
    blob = safe_load(path, map_location)
    if not isinstance(blob, dict) or blob.get("kind") not in MODEL_KINDS:
        raise CheckpointError(f"{path} is not a minivar model or training checkpoint")
    model = NextScaleTransformer(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob.get("ema") or blob["model"])
    return model.eval()
