"""Learning the weights: the tokenizer trainer, the encoded-token cache and the transformer trainer.

    tokenizer_trainer.py  reconstruction + VQ losses, dead-code re-seeding
    tokens.py             a dataset encoded once by the frozen tokenizer (``tokens.pt``)
    trainer.py            the transformer recipe: AdamW groups, schedules, accumulation, checkpoints
"""
from .tokenizer_trainer import TokenizerTrainConfig, train_tokenizer
from .trainer import TrainConfig, fit, train

__all__ = ["TokenizerTrainConfig", "train_tokenizer", "TrainConfig", "train", "fit"]
