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

import dataclasses
import math
from dataclasses import dataclass

import torch

from .. import config
from ..config import setting
from ..models.transformer import ModelConfig, NextScaleTransformer
from ..tokenizer.vqvae import VQVAE


# The model `train` builds unless told otherwise: a small M-VAR for 2 CPU cores (the ModelConfig
# defaults are VAR-d16 for ImageNet). num_classes 0: from the data.
TRAIN_MODEL = {"mixer": "mvar", "depth": 4, "num_classes": 0, "d_state": 16, "mamba_headdim": 32}


@dataclass
class TrainConfig:
    """One training run of the transformer: the data, the model (a ``ModelConfig``), the recipe and
    the run folder's bookkeeping. ``from_dict`` also reads the flat configs of earlier versions.

    ``TrainConfig.from_dict({"depth": 6, "steps": 500})`` starts from the training defaults (a small
    M-VAR, classes from the data) as the command line does; ``TrainConfig(model=ModelConfig(...))``
    takes the given ModelConfig as it is (whose own defaults are VAR-d16 for ImageNet)."""
    data: str = setting("digits", "dataset name (see minivar.data.DATASETS)", group="data")
    data_path: str = setting("", "folder of the fashion / emoji / imagefolder files ('': the default place)",
                             group="data")
    tokenizer: str = setting("", "tokenizer to encode the images with: a tokenizer.pt written by `train-tokenizer`, "
                             "a folder written by save_pretrained, or the official vae_ch160v4096z32.pth",
                             group="data")
    val_fraction: float = setting(0.1, "fraction of the images held out for evaluation, in [0, 1) (train-tokenizer "
                                  "holds out the same 0.1 with split seed 0)", group="data", at_least=0, below=1)
    split_seed: int = setting(0, "seed of the held-out split: a property of the data, not of the run", group="data",
                              at_least=0)
    model: ModelConfig = setting(doc="the transformer; vocab_size, z_channels and patch_nums come from the "
                                 "tokenizer", factory=lambda: ModelConfig(**TRAIN_MODEL), raw=TRAIN_MODEL)
    steps: int = setting(1000, "optimizer steps", group="optimisation", at_least=1)
    batch_size: int = setting(64, "images per optimizer step, all ranks together", group="optimisation", at_least=1)
    micro_batch: int = setting(16, "images per forward / backward pass; gradients are accumulated over "
                               "batch_size / micro_batch passes (on a CPU larger ones are slower per image)",
                               group="optimisation", at_least=1)
    base_lr: float = setting(1e-4, "learning rate per 256 images: lr = base_lr x batch_size / 256",
                             group="optimisation", above=0)
    betas: tuple[float, float] = setting((0.9, 0.95), "AdamW betas (beta1 beta2)", group="optimisation", at_least=0,
                                         below=1)
    weight_decay: float = setting(0.05, "AdamW weight decay of the weight matrices", group="optimisation", at_least=0)
    warmup_frac: float = setting(0.02, "fraction of the steps with a linear learning-rate warm-up",
                                 group="optimisation", at_least=0, below=1)
    final_lr_frac: float = setting(0.01, "learning rate at the last step, as a fraction of the peak (VAR --wpe)",
                                   group="optimisation", at_least=0, at_most=1)
    lr_schedule: str = setting("linear", "'linear': warm-up, then linear decay; 'var': VAR's lin0 (warm-up from "
                               "0.5% of the peak, hold the peak for 5% of the decay, then decay)",
                               choices=("linear", "var"), group="optimisation")
    final_weight_decay: float = setting(-1.0, "weight decay at the last step, reached on a cosine (VAR --twde; "
                                        "-1: constant weight_decay)", group="optimisation", at_least=-1)
    grad_clip: float = setting(2.0, "gradient-norm clipping threshold", group="optimisation", above=0)
    ema: float = setting(0.0, "decay of an exponential moving average of the weights, e.g. 0.999 (0: off); "
                         "sampling then uses the averaged weights", group="optimisation", at_least=0, below=1)
    amp: str = setting("auto", "mixed precision: 'auto' (bf16, or fp16 with loss scaling, on CUDA; off on "
                       "CPU), 'none', 'bf16' or 'fp16'", choices=("auto", "none", "bf16", "fp16"),
                       group="optimisation")
    compile: bool = setting(False, "torch.compile the training forward pass (CUDA)", group="optimisation")
    seed: int = setting(0, "seed of the initial weights, the data order and the label / path dropout",
                        group="optimisation", at_least=0)
    log_every: int = setting(10, "append a record to metrics.jsonl every this many steps", group="run folder",
                             at_least=1)
    ckpt_every: int = setting(200, "write a checkpoint every this many steps (and at the end)", group="run folder",
                              at_least=1)
    keep_last: int = setting(2, "checkpoints kept in ckpt/ (older ones are deleted)", group="run folder", at_least=1)
    minutes: float = setting(0.0, "stop with a checkpoint after this many minutes of training; --resume "
                             "continues (0: no limit)", group="run folder", at_least=0)
    sample_every: int = setting(0, "write a sample grid to samples/ every this many steps (0: only at the end)",
                                group="run folder", at_least=0)

    def __post_init__(self):
        config.check_ranges(self)
        if self.lr_schedule not in ("linear", "var"):
            raise ValueError(f"lr_schedule must be 'linear' or 'var', got {self.lr_schedule!r}")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, none, bf16 or fp16, got {self.amp!r}")

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256

    @classmethod
    def from_dict(cls, values: dict, base: "TrainConfig | None" = None) -> "TrainConfig":
        """A config from a JSON object, on top of ``base``. Model fields may also stand at the top
        level, as in the flat configs of earlier versions and as the command line gives them."""
        values = dict(values)
        for k in BOUND_FIELDS:
            if k in values:
                raise config.ConfigError(f"{k} is set by the tokenizer; remove it from the config")
        flat = {k: values.pop(k) for k in list(values) if k in MODEL_FIELDS}
        if flat:
            nested = values.get("model", {})
            values["model"] = {**nested, **flat} if isinstance(nested, dict) else nested
        return config.from_dict(cls, values, base)

    def to_dict(self) -> dict:
        """The config as JSON. Model fields that follow the size rules of their depth are written
        as 0 / -1 (derived), so a file read with another ``--depth`` derives them again."""
        d = config.to_dict(self)
        for k, v in ModelConfig.size_rules(self.model.depth).items():
            if d["model"][k] == v:
                d["model"][k] = -1.0 if k == "drop_path" else 0
        return d


# the ModelConfig fields a training config sets (the rest come from the tokenizer)
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if not f.metadata.get("bound"))
BOUND_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("bound"))


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


def model_config_for(cfg: TrainConfig, vae: VQVAE, data_classes: int) -> ModelConfig:
    """The run's ModelConfig with what the tokenizer and the data decide: the codebook size,
    vector width and scales of ``vae``, and the class count (``cfg.model.num_classes`` or, when
    0, the data's ``data_classes``)."""
    n = cfg.model.num_classes or data_classes
    if n < data_classes:
        raise ValueError(f"num_classes={n} is out of range: the data '{cfg.data}' has labels 0..{data_classes - 1}; "
                         f"use num_classes >= {data_classes}, or 0 to take it from the data")
    return dataclasses.replace(cfg.model, num_classes=n, vocab_size=vae.config.vocab_size,
                               z_channels=vae.config.z_channels, patch_nums=vae.patch_nums)
