"""Learning the weights: the tokenizer trainer, the encoded-token cache and the transformer trainer.

    tokenizer_trainer.py  reconstruction + VQ losses, dead-code re-seeding
    tokens.py             a dataset encoded once by the frozen tokenizer (``tokens.pt``)
    recipe.py             the transformer recipe: its config, AdamW groups, schedules; ``fit`` in memory
    trainer.py            the same recipe in a run folder: stages, checkpoints, exact resume
"""
from .tokenizer_trainer import TokenizerTrainConfig, train_tokenizer
from .recipe import TrainConfig, fit
from .trainer import train

__all__ = ["TokenizerTrainConfig", "train_tokenizer", "TrainConfig", "train", "fit"]
