"""Training the multi-scale residual tokenizer from scratch (the official VAR repo ships no code for it).

Loss (VAR Sec. 3.3, recipe of the VAR authors' follow-up tokenizer code, minus LPIPS / GAN which
need pretrained networks we cannot download here):

    L = 0.2 * |x - x_rec|_1 + 1.0 * |x - x_rec|_2^2 + vq_loss
    vq_loss = mean_k  beta * ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2   (f_hat_k cumulative)

with the straight-through estimator for the decoder's gradient. Multi-scale tokenizers tend to
leave most codes unused at the small scales ("codebook collapse"), so we log per-scale usage and
perplexity and re-seed dead codes with vectors the quantiser has just seen.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import config
from ..config import setting
from ..tokenizer.vqvae import VQVAE, check_images


@dataclass
class TokenizerTrainConfig:
    """The tokenizer's training recipe: AdamW with a linear warm-up and a cosine decay to 10%."""
    steps: int = setting(3000, "optimizer steps", at_least=1)
    batch_size: int = setting(32, "images per step", at_least=1)
    lr: float = setting(3e-4, "peak learning rate", above=0)
    betas: tuple[float, float] = setting((0.5, 0.9), "AdamW betas (beta1 beta2)", at_least=0, below=1)
    weight_decay: float = setting(0.005, "AdamW weight decay of the weight matrices", at_least=0)
    warmup_steps: int = setting(50, "steps of linear learning-rate warm-up", at_least=0)
    l1_weight: float = setting(0.2, "weight of the L1 reconstruction loss", at_least=0)
    l2_weight: float = setting(1.0, "weight of the squared-error reconstruction loss", at_least=0)
    vq_weight: float = setting(1.0, "weight of the quantisation (codebook + commitment) loss", at_least=0)
    grad_clip: float = setting(10.0, "gradient-norm clipping threshold", above=0)
    reseed_every: int = setting(100, "re-seed unused codes every this many steps (0: never)", at_least=0)
    reseed_below: float = setting(0.03, "a code is unused when its hit rate is below this fraction of the "
                                  "uniform rate 1 / V", at_least=0)
    ema: float = setting(0.0, "decay of an exponential moving average of the weights, e.g. 0.999 (0: off); the "
                         "trained model then holds the averaged weights", at_least=0, below=1)
    seed: int = setting(0, "seed of the image order (train-tokenizer also seeds the initial weights with it)",
                        at_least=0)
    log_every: int = setting(50, "log every this many steps", at_least=1)
    ckpt_every: int = setting(500, "write a checkpoint every this many steps, and when a time limit stops the run "
                              "(0: only then; needs a run folder)", at_least=0)
    time_limit_s: float | None = setting(None, "stop early after this many seconds (none: no limit)", above=0)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        config.check_ranges(self)


def psnr(x, y) -> float:
    """PSNR in dB of images in [-1, 1] (computed on the [0, 1] scale)."""
    mse = F.mse_loss((x.clamp(-1, 1) + 1) / 2, (y.clamp(-1, 1) + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def code_stats(indices, vocab_size: int) -> tuple[list[float], list[float]]:
    """Per scale: fraction of the codebook used, and perplexity exp(H) of the code histogram."""
    usage, ppl = [], []
    for idx in indices:
        p = torch.bincount(idx.flatten(), minlength=vocab_size).float()
        p = p / p.sum()
        usage.append((p > 0).float().mean().item())
        ppl.append(math.exp(-(p[p > 0] * p[p > 0].log()).sum().item()))
    return usage, ppl


@torch.no_grad()
def evaluate_tokenizer(vae: VQVAE, images: torch.Tensor, batch_size: int = 64) -> dict:
    """Reconstruction PSNR and per-scale codebook usage / perplexity over a set of images."""
    was_training = vae.training
    vae.eval()
    recs, per_scale = [], None
    for i in range(0, len(images), batch_size):
        idx = vae.encode(images[i:i + batch_size])
        recs.append(vae.decode(idx))
        per_scale = idx if per_scale is None else [torch.cat([a, b]) for a, b in zip(per_scale, idx)]
    vae.train(was_training)
    usage, ppl = code_stats(per_scale, vae.config.vocab_size)
    return {"psnr": psnr(torch.cat(recs), images), "usage": usage, "perplexity": ppl}


def _lr_at(step: int, cfg: TokenizerTrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train_tokenizer(vae: VQVAE, images: torch.Tensor, cfg: TokenizerTrainConfig | None = None,
                    progress: bool = True, log=None, stop_at: int = 0, on_checkpoint=None,
                    resume: dict | None = None) -> list[dict]:
    """Train ``vae`` in place on ``images`` (N, 3, S, S) in [-1, 1]. Returns the logged history.

    ``stop_at`` > 0 stops after that many steps (the schedule still spans ``cfg.steps``), as
    ``time_limit_s`` does.

    ``log(record)`` is called every ``log_every`` steps with a dict (step, loss parts, psnr,
    per-scale usage, re-seeded codes, images/s). ``on_checkpoint(state)`` is called every
    ``ckpt_every`` steps and when the run stops early, with everything a later call needs to go on
    exactly as if it had not stopped: pass that ``state`` back as ``resume``.
    """
    cfg = cfg or TokenizerTrainConfig()
    check_images(images[:cfg.batch_size], vae.config.image_size)
    g = torch.Generator().manual_seed(cfg.seed)
    decay, no_decay = [], []
    for name, p in vae.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    ema = copy.deepcopy(vae).requires_grad_(False) if cfg.ema > 0 else None
    V = vae.config.vocab_size
    hits_V = torch.zeros(V)  # code hits since the last re-seed, all scales together
    window = None  # per-scale indices since the last log
    history, t0, seen, first = [], time.time(), 0, 0
    if resume is not None:
        first, window, hits_V = resume["step"], resume["window"], resume["hits"]
        vae.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        g.set_state(resume["generator"])
        torch.set_rng_state(resume["rng"])  # dropout draws, when the config has dropout
        if ema is not None:
            ema.load_state_dict(resume["ema"])

    def state(step: int, window) -> dict:
        return {"kind": "minivar-tokenizer-train", "step": step, "model": vae.state_dict(),
                "optimizer": opt.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "generator": g.get_state(), "hits": hits_V.clone(), "window": window, "rng": torch.get_rng_state()}
    vae.train()
    bar = tqdm(range(first, cfg.steps), disable=not progress, desc="tokenizer", dynamic_ncols=True,
               initial=first, total=cfg.steps)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        x = images[torch.randint(len(images), (cfg.batch_size,), generator=g)]
        rec, q = vae(x)
        l1, l2 = F.l1_loss(rec, x), F.mse_loss(rec, x)
        loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.vq_weight * q.vq_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the tokenizer loss became {loss.item()} at step {step + 1} (lr {cfg.lr}); "
                                     "the weights before this step are intact")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.grad_clip)
        opt.step()
        seen += len(x)
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), vae.parameters()):
                    pe.lerp_(p, 1 - cfg.ema)
        with torch.no_grad():
            for idx in q.indices:
                hits_V += torch.bincount(idx.flatten(), minlength=V).float()
            window = q.indices if window is None else [torch.cat([a, b]) for a, b in zip(window, q.indices)]
            reseeded = 0
            if cfg.reseed_every and (step + 1) % cfg.reseed_every == 0:
                dead = (hits_V < cfg.reseed_below * hits_V.sum() / V).nonzero().flatten()
                if len(dead):  # replace dead codes by residual vectors the quantiser just saw
                    pick = torch.randint(len(q.z_NC), (len(dead),), generator=g)
                    vae.quantize.embedding.weight[dead] = q.z_NC[pick].to(vae.quantize.embedding.weight)
                reseeded = len(dead)
                hits_V.zero_()
        last = step == cfg.steps - 1
        out_of_time = (cfg.time_limit_s is not None and time.time() - t0 > cfg.time_limit_s) or step + 1 == stop_at
        due = cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0
        regular_log = (step + 1) % cfg.log_every == 0 or last
        # a stop's extra log record must not reset the usage window a resumed run goes on with
        checkpoint = state(step + 1, None if regular_log else window) \
            if on_checkpoint is not None and not last and (out_of_time or due) else None
        if regular_log or out_of_time:
            usage, ppl = code_stats(window, V)
            rec_ = {"step": step + 1, "loss": loss.item(), "l1": l1.item(), "l2": l2.item(),
                    "vq": q.vq_loss.item(), "psnr": psnr(rec.detach(), x), "usage": usage,
                    "perplexity": ppl, "reseeded": reseeded, "img_per_s": seen / (time.time() - t0)}
            history.append(rec_)
            window = None
            bar.set_postfix(loss=f"{rec_['loss']:.4f}", psnr=f"{rec_['psnr']:.1f}",
                            use0=f"{usage[0]:.2f}", uselast=f"{usage[-1]:.2f}")
            if log is not None:
                log(rec_)
        if checkpoint is not None:  # written after the log record of its step
            if not all(bool(torch.isfinite(p).all()) for p in vae.parameters()):
                raise FloatingPointError(f"the tokenizer weights are no longer finite after step {step + 1} "
                                         "(not saved)")
            on_checkpoint(checkpoint)
        if out_of_time:
            break
    bar.close()
    if ema is not None:
        vae.load_state_dict(ema.state_dict())
    vae.eval()
    return history
