"""The transformer's training recipe: its config, data order, optimizer groups and schedules.

The recipe of the VAR paper (Tian et al. 2024, Sec. 4 and App.), scaled down for CPUs:

    AdamW(betas=(0.9, 0.95), weight_decay=0.05) -- no decay on biases, gains, 1-D tensors,
        position / level embeddings and the attention temperatures;
    lr = base_lr * batch / 256, linear warm-up (2% of steps) then linear decay (``lr_schedule``
        "var": VAR's lin0 -- warm-up from 0.5% of the peak, hold 5%, decay; ``final_weight_decay``:
        VAR's cosine weight-decay schedule);
    gradient clipping at 2.0; labels dropped to the null class (cond_drop, for CFG); drop-path;
    AMP on CUDA (bf16, or fp16 with a GradScaler); optional weight EMA and torch.compile.
    The ImageNet presets in configs/imagenet/ set these to the official numbers.

Large batches are slower per image on CPU, so every optimizer step accumulates gradients over
micro-batches of at most ``micro_batch`` images. ``fit`` runs the same recipe in memory (notebooks);
``trainer.py`` runs it in a run folder, with checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.transformer import ModelConfig, NextScaleTransformer
from ..tokenizer.vqvae import VQVAE


@dataclass
class TrainConfig:
    data: str = "digits"  # a name in minivar.data.DATASETS
    data_path: str = ""  # folder of fashion / emoji / imagefolder files ("" = the Debian package's)
    tokenizer: str = ""  # path of a tokenizer.pt written by `train-tokenizer`
    num_classes: int = 0  # 0: from the data (max label + 1)
    val_fraction: float = 0.1  # held out (seeded split, same as train-tokenizer's)
    split_seed: int = 0  # seed of that split: a property of the data, not of the run (``seed``)
    # model
    mixer: str = "mvar"  # "var" or "mvar"
    depth: int = 4
    width: int = 0  # 0: 64 * depth
    heads: int = 0  # 0: depth
    d_state: int = 16
    mamba_headdim: int = 32
    cond_drop: float = 0.1
    drop_path: float = -1.0  # <0: 0.1 * depth / 24
    attn_l2_norm: bool = True  # cosine attention (VAR: on; the released M-VAR d16/d20: off)
    init_adaln_gamma: float = 1e-5  # AdaLN gate init (VAR --alng: 1e-3 d16/d20, 1e-4 d24, 1e-5 d30)
    mvar_gamma3_init: str = "small"  # "official": M-VAR's FFN gate at 0.5 (see ModelConfig)
    # optimisation
    steps: int = 1000
    batch_size: int = 64  # global batch per optimizer step (all ranks together)
    micro_batch: int = 16  # gradient accumulation chunks (<= 16 on CPU, where larger ones are slower per image)
    base_lr: float = 1e-4  # lr = base_lr * batch_size / 256
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_frac: float = 0.02
    final_lr_frac: float = 0.01  # linear decay to this fraction of the peak (VAR --wpe)
    lr_schedule: str = "linear"  # "linear", or "var" (VAR's lin0: start at 0.5%, hold the peak 5%)
    final_weight_decay: float = -1.0  # <0: constant; else cosine from weight_decay to this (VAR --twde)
    grad_clip: float = 2.0
    ema: float = 0.0  # weight EMA decay, e.g. 0.999 (0: off); sampling then uses the EMA weights
    amp: str = "auto"  # auto (bf16 / fp16 on CUDA, off on CPU), none, bf16, fp16
    compile: bool = False  # torch.compile the training forward (CUDA)
    seed: int = 0
    # bookkeeping
    log_every: int = 10
    ckpt_every: int = 200
    keep_last: int = 2
    minutes: float = 0.0  # stop (with a checkpoint) after this long; 0: no limit
    sample_every: int = 0  # write a sample grid every this many steps (0: only at the end)

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left untouched."""


# ---------------------------------------------------------------------- data order
def batch_indices(step: int, batch_size: int, n: int, seed: int) -> torch.Tensor:
    """Dataset rows of global batch ``step``: consecutive slices of per-epoch seeded permutations."""
    start = step * batch_size
    rows, pos = [], start
    while pos < start + batch_size:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(n - off, start + batch_size - pos)
        rows.append(perm[off:off + take])
        pos += take
    return torch.cat(rows)


# ---------------------------------------------------------------------- optimiser and schedule
NO_DECAY = ("pos_start", "pos_1LC", "lvl_embed", "scale_mul", "A_log", "dt_bias", "class_emb")


def param_groups(model: torch.nn.Module, weight_decay: float):
    """AdamW groups: decay on weight matrices only (VAR: none on 1-D params, biases, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or name.endswith(".bias") or any(k in name for k in NO_DECAY)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: TrainConfig):
    """Multiplier of the peak lr at each step: "linear" (ours) or "var" (utils/lr_control.py, lin0)."""
    warm = max(1, round(cfg.warmup_frac * cfg.steps))
    end = cfg.final_lr_frac

    def linear(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
        return 1.0 + (end - 1.0) * t

    def var_lin0(step: int) -> float:
        if step < warm:
            return 0.005 + 0.995 * step / warm
        t = min(1.0, (step - warm) / max(1, cfg.steps - 1 - warm))
        return 1.0 if t < 0.05 else end + (1 - end) * (1 - t) / 0.95
    if cfg.lr_schedule not in ("linear", "var"):
        raise ValueError(f"lr_schedule must be 'linear' or 'var', got {cfg.lr_schedule!r}")
    return linear if cfg.lr_schedule == "linear" else var_lin0


def weight_decay_at(cfg: TrainConfig, step: int) -> float:
    """VAR's weight decay: cosine from weight_decay to final_weight_decay (constant when the latter < 0)."""
    if cfg.final_weight_decay < 0:
        return cfg.weight_decay
    t = step / max(1, cfg.steps - 1)
    return cfg.final_weight_decay + (cfg.weight_decay - cfg.final_weight_decay) * (0.5 + 0.5 * math.cos(math.pi * t))


def fit(model: NextScaleTransformer, labels_N, inputs_NLC, targets_NL, cfg: TrainConfig) -> list[float]:
    """A short in-memory run of the same recipe (for notebooks and quick experiments): no run
    folder, checkpoints, accumulation or AMP. Uses cfg.steps, batch_size, lr, betas, weight_decay,
    warm-up / decay, grad_clip and seed; label dropout comes from the model's own cond_drop.
    Returns the loss of every step; the model is left in eval mode."""
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    g = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses = []
    for _ in range(cfg.steps):
        rows = torch.randint(len(targets_NL), (cfg.batch_size,), generator=g)
        loss = model.loss(labels_N[rows], inputs_NLC[rows], targets_NL[rows])["loss"]
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss.item()} after {len(losses)} steps; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def resolve_amp(amp: str, device: torch.device):
    """-> (autocast dtype or None, use a GradScaler)."""
    if amp not in ("auto", "none", "bf16", "fp16"):
        raise ValueError(f"amp must be auto, none, bf16 or fp16, got {amp!r}")
    if device.type != "cuda" or amp == "none":
        return None, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16, False) if amp == "bf16" else (torch.float16, True)


def model_config_for(cfg: TrainConfig, vae: VQVAE, num_classes: int) -> ModelConfig:
    return ModelConfig(mixer=cfg.mixer, depth=cfg.depth, width=cfg.width, heads=cfg.heads,
                       num_classes=num_classes, vocab_size=vae.config.vocab_size,
                       z_channels=vae.config.z_channels, patch_nums=vae.patch_nums, d_state=cfg.d_state,
                       mamba_headdim=cfg.mamba_headdim, cond_drop=cfg.cond_drop, drop_path=cfg.drop_path,
                       attn_l2_norm=cfg.attn_l2_norm, init_adaln_gamma=cfg.init_adaln_gamma,
                       mvar_gamma3_init=cfg.mvar_gamma3_init)
