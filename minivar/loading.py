"""Open any weights file minivar accepts, the kind read off the file.

* a tokenizer: a ``save_pretrained`` folder (config.json + model.safetensors), minivar's
  ``tokenizer.pt`` (written by ``VQVAE.save``) or the official VAR tokenizer
  ``vae_ch160v4096z32.pth`` (``minivar.official.load_vae``);
* a transformer: a ``save_pretrained`` folder, minivar's ``model.pt`` or a training checkpoint
  ``ckpt/step_*.pt`` (EMA weights when the run kept them); official VAR / M-VAR files go through
  ``minivar.official``.

Every command that takes a file path calls these, so each accepts both kinds wherever both make
sense. Everything is read with ``weights_only=True`` (``minivar.checkpoints.safe_load``).
"""
from __future__ import annotations

import json
import os

from . import official
from .checkpoints import CONFIG_FILE, CheckpointError, is_pretrained, safe_load
from .models.transformer import ModelConfig, NextScaleTransformer
from .tokenizer.vqvae import VQVAE

MODEL_KINDS = ("minivar-model", "minivar-train")


def load_tokenizer(path: str) -> VQVAE:
    """A tokenizer from any of those, read once, in eval mode."""
    if is_pretrained(path):
        return VQVAE.from_pretrained(path)
    blob = safe_load(path)
    if isinstance(blob, dict) and blob.get("kind") == "minivar-tokenizer":
        return VQVAE.from_checkpoint(blob, path).eval()
    if isinstance(blob, dict) and blob.get("kind") in MODEL_KINDS:
        raise CheckpointError(f"{path} is a minivar transformer file, not a tokenizer; pass the tokenizer.pt "
                              "written by `train-tokenizer` (or the official vae_ch160v4096z32.pth)")
    return official.load_vae(blob)


def load_model(path: str, map_location="cpu") -> NextScaleTransformer:
    """A transformer from a save_pretrained folder, ``model.pt`` or a training checkpoint (EMA weights
    when present), in eval mode."""
    if is_pretrained(path):
        return NextScaleTransformer.from_pretrained(path)
    blob = safe_load(path, map_location)
    if not isinstance(blob, dict) or blob.get("kind") not in MODEL_KINDS:
        raise CheckpointError(f"{path} is not a minivar model or training checkpoint")
    model = NextScaleTransformer(ModelConfig(**blob["model_config"]))
    model.load_state_dict(blob.get("ema") or blob["model"])
    return model.eval()


def tokenizer_of(model_path: str) -> str | None:
    """The tokenizer that a model file or save_pretrained folder names, as a path from here (None
    when it names none)."""
    if is_pretrained(model_path):
        with open(os.path.join(model_path, CONFIG_FILE)) as f:
            rel = json.load(f).get("tokenizer")
        folder = model_path
    else:
        rel, folder = safe_load(model_path).get("tokenizer"), os.path.dirname(model_path)
    return os.path.normpath(os.path.join(folder, rel)) if rel else None
