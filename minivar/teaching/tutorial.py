"""The set-up that several notebooks share: 16 px digits, the notebook-02 tokenizer, the
notebook-03 models and recipe. Notebooks 02 and 03 build these step by step; later notebooks
call these functions instead of repeating those cells. Every function seeds itself, so a
notebook gets the same numbers whichever cells ran before."""
from __future__ import annotations

import os

import torch

from .. import data
from ..models.transformer import ModelConfig, NextScaleTransformer
from ..tokenizer.vqvae import TOKENIZER_PRESETS, VQVAE
from ..training.recipe import TrainConfig, fit
from ..training.tokens import encode_dataset
from ..training.tokenizer_trainer import TokenizerTrainConfig, train_tokenizer


def digits_split(size: int = 16):
    """((train_x, train_y), (val_x, val_y)): scikit-learn's digits in [-1, 1], 10% held out (seed 0)."""
    return data.splits("digits", size)


def demo_models():
    """(vae, var, mvar): the committed demo weights (``weights/digits16``, found from any folder by
    ``minivar.teaching.resources``), in eval mode: a tiny16 tokenizer trained 1500 steps, a VAR of
    depth 6 and an M-VAR of depth 4 (width 96) trained 1000 steps on the same 90/10 digits split
    as ``digits_split``. Notebooks whose lesson is not training start from these."""
    from ..loading import load_model
    from . import resources
    w = resources.path("weights/digits16")
    vae = VQVAE.load(os.path.join(w, "tokenizer.pt")).eval()
    var, mvar = (load_model(os.path.join(w, f"{name}.pt")).eval() for name in ("var", "mvar"))
    for m in (var, mvar):
        m.attach_tokenizer(vae)  # generate / edit without passing vae= each time
    return vae, var, mvar


def digits_tokenizer(train_x: torch.Tensor, steps: int = 200) -> VQVAE:
    """The tiny16 tokenizer of notebook 02, trained ``steps`` steps, in eval mode."""
    torch.manual_seed(0)
    vae = VQVAE(TOKENIZER_PRESETS["tiny16"])
    train_tokenizer(vae, train_x, TokenizerTrainConfig(steps=steps, batch_size=32, lr=1e-3, warmup_steps=20,
                                                       reseed_every=50), progress=False)
    return vae.eval()


def teacher_data(vae: VQVAE, x: torch.Tensor):
    """(targets (N, L), teacher inputs (N, L - 1, Cv)): images encoded once, as minivar.training.trainer does."""
    targets = encode_dataset(vae, x)
    return targets, vae.teacher_input(targets)


def digits_model(patch_nums, mixer: str = "var", **overrides) -> NextScaleTransformer:
    """Notebook 03's depth-4, width-128 model for the 10 digit classes (M-VAR: d_state 16,
    headdim 32, chunk 32), freshly initialised from seed 0."""
    cfg = dict(mixer=mixer, depth=4, width=128, heads=4, num_classes=10, vocab_size=256, z_channels=16,
               patch_nums=patch_nums, drop_path=0.0, attn_backend="blocks")
    if mixer == "mvar":
        cfg.update(d_state=16, mamba_headdim=32, mamba_chunk=32)
    torch.manual_seed(0)
    return NextScaleTransformer(ModelConfig(**{**cfg, **overrides}))


def fit_digits(model, train_y, inputs, targets, steps: int) -> list[float]:
    """Notebook 03's recipe (``minivar.training.fit``): batch 32, lr 2e-3, 7.5% warm-up. Returns the losses."""
    return fit(model, train_y, inputs, targets,
               TrainConfig(steps=steps, batch_size=32, base_lr=0.016, warmup_frac=0.075))  # lr 2e-3
