"""Stage 2, tokens -> logits: the next-scale transformers, VAR and M-VAR.

    attention.py    attention inside / across scales, one function with several exact backends
    mamba2.py       Mamba2 in plain PyTorch (chunked SSD, sequential reference, recurrent cache)
    losses.py       the per-scale next-token loss and accuracy
    transformer.py  ``ModelConfig`` and ``NextScaleTransformer`` (blocks, AdaLN, head)
"""
from .losses import loss_stats, next_scale_loss
from .transformer import ModelConfig, NextScaleTransformer

__all__ = ["ModelConfig", "NextScaleTransformer", "next_scale_loss", "loss_stats"]
