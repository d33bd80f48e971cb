"""Stage 2, tokens -> logits: the next-scale transformers, VAR and M-VAR.

    attention.py    attention inside / across scales, one function with several exact backends
    mamba2.py       Mamba2 in plain PyTorch (chunked SSD, sequential reference, recurrent cache)
    caches.py       what a block keeps between sampling steps: KVCache, BlockState, SamplingState
    blocks.py       the AdaLN scaffold, VARBlock and MVARBlock
    losses.py       the per-scale next-token loss and accuracy
    transformer.py  ``ModelConfig`` and ``NextScaleTransformer`` (embeddings, the blocks, the head;
                    teacher-forced forward, start / step for sampling)
"""
from .losses import loss_stats, next_scale_loss
from .transformer import ModelConfig, NextScaleTransformer

__all__ = ["ModelConfig", "NextScaleTransformer", "next_scale_loss", "loss_stats"]
