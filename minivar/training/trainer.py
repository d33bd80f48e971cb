"""Training the next-scale transformer (VAR or M-VAR) in a run folder, on pre-tokenized images.

The recipe (config, optimizer groups, schedules) is in ``recipe.py``. The tokenizer encoder costs
more than a training step on a CPU, so the dataset is encoded *once* and cached as token indices
(``tokens.pt`` in the run folder, ``tokens.py``).

Exact resume: the order of the data is a pure function of (seed, epoch), and the random numbers
of each micro-batch (label dropout, drop-path) come from a generator seeded with
(seed, step, micro-batch index). A run resumed from a checkpoint (model, optimizer, scheduler,
scaler, EMA, RNG states, step) therefore repeats the uninterrupted run bit for bit on CPU, and a
DDP run on W ranks sees the same micro-batches with the same random numbers as one process.

The loop (``train``) runs four named stages: ``build`` (data, model, optimizer),
``resume_from_checkpoint`` / ``save`` / ``export`` (the run folder), ``optimizer_step`` (one global
batch) and ``log_step``.
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..checkpoints import CheckpointError, DiskFullError, atomic_save, atomic_write, safe_load
from ..loading import load_tokenizer
from ..models.losses import loss_stats
from ..models.transformer import NextScaleTransformer
from ..tokenizer.vqvae import VQVAE
from .recipe import (TrainConfig, TrainingDiverged, batch_indices, lr_lambda, model_config_for, param_groups,
                     resolve_amp, weight_decay_at)
from .tokens import load_tokens


# ---------------------------------------------------------------------- checkpoints
def checkpoint_paths(run_dir: str) -> list[str]:
    """Checkpoints of a run folder, oldest first."""
    paths = glob.glob(os.path.join(run_dir, "ckpt", "step_*.pt"))
    return sorted(paths, key=lambda p: int(re.findall(r"step_(\d+)", p)[-1]))


def newest_checkpoint(run_dir: str, map_location="cpu") -> tuple[str, dict] | None:
    """(path, contents) of the newest checkpoint that loads; the ones it skips (empty, truncated,
    corrupt: a power loss or a full disk) are named with the reason. None when there is none."""
    for path in reversed(checkpoint_paths(run_dir)):
        try:
            return path, safe_load(path, map_location)
        except CheckpointError as e:
            print(f"skipping {path}: {e}", flush=True)
    return None


def trim_log(path: str, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (where a resumed run starts again). A
    line that is not a whole record (a crash in mid-write) is dropped with a note."""
    keep = []
    lines = open(path).read().splitlines() if os.path.exists(path) else []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            print(f"dropping line {i + 1} of {path}: not a whole record ({line[:60]!r})", flush=True)
            continue
        if rec.get("step", 0) <= step:
            keep.append(line)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("".join(r + "\n" for r in keep))
    atomic_write(path, write)


def save_checkpoint(run_dir: str, state: dict, keep_last: int) -> str:
    """``ckpt/step_N.pt``; then the older ones beyond ``keep_last`` go, and so do any of higher steps
    (left by a timeline that a resume from an earlier, readable checkpoint has replaced)."""
    path = os.path.join(run_dir, "ckpt", f"step_{state['step']:07d}.pt")
    atomic_save(state, path)
    paths = checkpoint_paths(run_dir)
    newer = paths[paths.index(path) + 1:]
    for old in paths[:paths.index(path) + 1][:-max(1, keep_last)] + newer:
        os.remove(old)
    return path


def append_line(path: str, record: dict) -> None:
    """One JSON record appended to a log; a full disk names the log."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path) from None
        raise


# ---------------------------------------------------------------------- the loop
def _accumulate(total: dict | None, part: dict, w: float) -> dict:
    """total + w * part, for floats and per-scale lists."""
    if total is None:
        return {k: [w * x for x in v] if isinstance(v, list) else w * v for k, v in part.items()}
    return {k: [s + w * x for s, x in zip(total[k], v)] if isinstance(v, list) else total[k] + w * v
            for k, v in part.items()}


def _hms(seconds: float) -> str:
    d, rest = divmod(int(seconds), 86400)
    return (f"{d}d " if d else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class Run:
    """Everything one training sitting holds: built by ``build``, advanced by ``optimizer_step``."""
    cfg: TrainConfig
    run_dir: str
    device: torch.device
    rank: int
    world: int
    vae: VQVAE
    tokens: torch.Tensor  # (N, L) token ids of the training images, encoded once
    labels: torch.Tensor  # (N,)
    model: NextScaleTransformer
    ddp: torch.nn.Module  # the model, DDP-wrapped on several ranks
    forward: Callable  # what the loop calls: ``ddp``, compiled when cfg.compile
    ema: NextScaleTransformer | None
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    step: int = 0

    @property
    def log_path(self) -> str:
        return os.path.join(self.run_dir, "metrics.jsonl")


# ---------------------------------------------------------------------- stage 1: build
def build(cfg: TrainConfig, run_dir: str) -> Run:
    """Tokenizer, encoded dataset, model (seeded: the same weights on every rank), EMA copy,
    optimizer, schedule and scaler, on this process's device."""
    rank, world = _dist_info()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if cfg.batch_size % world or (cfg.batch_size // world) < 1:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {world} ranks")
    if not cfg.tokenizer:
        raise ValueError("no tokenizer: pass --tokenizer runs/tok/tokenizer.pt "
                         "(train one with `python -m minivar train-tokenizer`)")
    vae = load_tokenizer(cfg.tokenizer).to(device).requires_grad_(False).eval()
    tokens, labels, _, _ = load_tokens(cfg, vae, os.path.join(run_dir, "tokens.pt"), rank, world)
    mcfg = model_config_for(cfg, vae, data_classes=int(labels.max()) + 1)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = NextScaleTransformer(mcfg).to(device)
    ema = NextScaleTransformer(model.config).to(device).requires_grad_(False) if cfg.ema > 0 else None
    if ema is not None:
        ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    amp_dtype, use_scaler = resolve_amp(cfg.amp, device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    forward = torch.compile(ddp) if cfg.compile else ddp  # weights stay in `model` (no _orig_mod. prefix)
    return Run(cfg, run_dir, device, rank, world, vae, tokens, labels, model, ddp, forward, ema, opt, sched,
               torch.amp.GradScaler("cuda", enabled=use_scaler), amp_dtype)


# ---------------------------------------------------------------------- stage 2: resume / save
def resume_from_checkpoint(run: Run) -> None:
    """Continue from the newest checkpoint that loads: weights, optimizer, schedule, scaler, EMA,
    RNG, step. A changed ``base_lr`` takes effect from here on."""
    found = newest_checkpoint(run.run_dir, run.device)
    if found is None:
        if checkpoint_paths(run.run_dir):
            raise CheckpointError(f"no checkpoint in {os.path.join(run.run_dir, 'ckpt')} can be read; start the run "
                                  "again with --overwrite")
        if run.rank == 0:
            print("no checkpoint yet: starting from step 0")
        return
    path, st = found
    run.model.load_state_dict(st["model"])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    run.sched.base_lrs = [run.cfg.lr] * len(run.opt.param_groups)  # the stored ones are the old run's
    for group in run.opt.param_groups:
        group["initial_lr"] = run.cfg.lr
        group["lr"] = run.cfg.lr * lr_lambda(run.cfg)(run.sched.last_epoch)  # as LambdaLR computes it
    run.scaler.load_state_dict(st["scaler"])
    if run.ema is not None and st.get("ema") is not None:
        run.ema.load_state_dict(st["ema"])
    torch.set_rng_state(st["rng"]["torch"])
    if torch.cuda.is_available() and st["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(st["rng"]["cuda"].cpu())
    run.step = st["step"]
    if run.rank == 0:
        print(f"resumed from {path} (step {run.step})")


def save(run: Run) -> str:
    """A training checkpoint of the current step: everything ``resume`` needs (rank 0)."""
    cfg, pos = run.cfg, run.step * run.cfg.batch_size
    return save_checkpoint(run.run_dir, {
        "kind": "minivar-train", "step": run.step, "config": cfg.to_dict(),
        "model_config": dataclasses.asdict(run.model.config), "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None, "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None},
        "data_position": {"epoch": pos // len(run.tokens), "index": pos % len(run.tokens)}}, cfg.keep_last)


def export(run: Run) -> None:
    """``model.pt``: the weights to sample from (EMA when kept), its config and the tokenizer path
    relative to the run folder (rank 0)."""
    final = run.ema if run.ema is not None else run.model
    atomic_save({"kind": "minivar-model", "model_config": dataclasses.asdict(run.model.config),
                 "model": final.state_dict(), "step": run.step,
                 "tokenizer": os.path.relpath(os.path.abspath(run.cfg.tokenizer), os.path.abspath(run.run_dir))},
                os.path.join(run.run_dir, "model.pt"))


def weights_finite(run: Run) -> bool:
    models = [run.model] + ([run.ema] if run.ema is not None else [])
    return all(bool(torch.isfinite(p).all()) for m in models for p in m.parameters())


def diverged(run: Run, what: str) -> TrainingDiverged:
    """The error that stops a diverging run, with a command that continues it at a lower lr (no
    checkpoint with non-finite weights is ever written, so --resume starts from a good one)."""
    last = checkpoint_paths(run.run_dir)
    where = (f"the newest checkpoint, {last[-1]}, holds finite weights; continue from it with a lower learning "
             f"rate: minivar train --out {run.run_dir} --resume --base-lr {run.cfg.base_lr / 2:g}") if last else \
        f"no checkpoint was written yet; start again with a lower learning rate (--base-lr {run.cfg.base_lr / 2:g})"
    return TrainingDiverged(f"{what}; training stopped. {where}")


# ---------------------------------------------------------------------- stage 3: one optimizer step
def optimizer_step(run: Run) -> tuple[dict, float]:
    """One global batch (all ranks) in micro-batches, gradient clipping, AdamW, schedule, EMA.
    Returns (loss / accuracy stats of the whole batch, gradient norm). Raises ``TrainingDiverged``
    before touching the weights when the loss is not finite."""
    cfg, step, device = run.cfg, run.step, run.device
    n_local = cfg.batch_size // run.world
    micro = [(i, min(i + cfg.micro_batch, n_local)) for i in range(0, n_local, cfg.micro_batch)]
    rows = batch_indices(step, cfg.batch_size, len(run.tokens), cfg.seed)[run.rank * n_local:(run.rank + 1) * n_local]
    run.opt.zero_grad(set_to_none=True)
    stats = None
    for j, (a, b) in enumerate(micro):
        idx_BL, y_B = run.tokens[rows[a:b]].to(device).long(), run.labels[rows[a:b]].to(device)
        x_in = run.vae.teacher_input(idx_BL)
        last = j == len(micro) - 1 or run.world == 1
        sync = nullcontext() if last else run.ddp.no_sync()
        with sync, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            # label dropout / drop-path draws: a function of (seed, step, micro-batch) only
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 4096 + run.rank * len(micro) + j)
            with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
                out = loss_stats(*run.forward(y_B, x_in, idx_BL), run.model.config.patch_nums)  # fused head + loss
            w = (b - a) / n_local
            run.scaler.scale(out["loss"] * w).backward()
        stats = _accumulate(stats, {**out, "loss": out["loss"].item()}, w)
    if run.world > 1:  # the logged loss / accuracy of the whole global batch
        t = torch.tensor([stats["loss"], stats["acc"], *stats["scale_loss"], *stats["scale_acc"]],
                         dtype=torch.float64, device=device)
        dist.all_reduce(t)
        t = (t / run.world).tolist()
        K = len(run.model.config.patch_nums)
        stats = {"loss": t[0], "acc": t[1], "scale_loss": t[2:2 + K], "scale_acc": t[2 + K:]}
    if not math.isfinite(stats["loss"]):
        raise diverged(run, f"the loss became {stats['loss']} at step {step + 1}")
    run.scaler.unscale_(run.opt)
    gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip).item()
    run.opt.param_groups[0]["weight_decay"] = weight_decay_at(cfg, step)  # group 0: the decayed weights
    run.scaler.step(run.opt)
    run.scaler.update()
    run.sched.step()
    if run.ema is not None:
        with torch.no_grad():
            for pe, p in zip(run.ema.parameters(), run.model.parameters()):
                pe.lerp_(p, 1 - cfg.ema)
    run.step += 1
    return stats, gnorm


# ---------------------------------------------------------------------- stage 4: log
def log_step(run: Run, stats: dict, gnorm: float, images_per_s: float, eta_s: float, lines: bool) -> dict:
    """Append the step's record to metrics.jsonl (and print it as a plain line for batch logs)."""
    rec = {"step": run.step, **stats, "lr": run.sched.get_last_lr()[0], "grad_norm": gnorm, "img_per_s": images_per_s,
           "epoch": run.step * run.cfg.batch_size / len(run.tokens), "eta_s": eta_s}
    append_line(run.log_path, rec)
    if lines:
        print(f"step {run.step}/{run.cfg.steps} ep {rec['epoch']:.2f} | loss {stats['loss']:.3f} acc "
              f"{stats['acc']:.3f} | lr {rec['lr']:.2e} | {images_per_s:.0f} img/s | ETA {_hms(eta_s)}", flush=True)
    return rec


# ---------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, run_dir: str, resume: bool = False, progress: bool = True,
          on_sample=None, stop_at: int = 0) -> dict:
    """Train in ``run_dir`` (config.json written by the caller); returns the last log record.

    ``stop_at`` > 0 ends the sitting after that step, with a checkpoint, as the ``minutes`` limit
    does: the learning-rate schedule still spans ``cfg.steps`` and ``resume`` continues the run.

    Runs on every rank of a torch.distributed group when one is initialised (only rank 0 writes).
    ``on_sample(model, step)`` is called on rank 0 every ``sample_every`` steps and at the end.
    """
    run = build(cfg, run_dir)
    if resume:
        resume_from_checkpoint(run)
    if run.rank == 0:
        trim_log(run.log_path, run.step)
        n_par = sum(p.numel() for p in run.model.parameters())
        mcfg, n_micro = run.model.config, -(-(cfg.batch_size // run.world) // cfg.micro_batch)
        print(f"{mcfg.mixer} depth {mcfg.depth} width {mcfg.width}: {n_par / 1e6:.2f}M parameters; "
              f"{len(run.tokens)} training images of {cfg.data}, {mcfg.num_classes} classes, L={run.model.L}; "
              f"batch {cfg.batch_size} = {run.world} rank(s) x {n_micro} micro-batch(es), lr {cfg.lr:.2e}")
    run.model.train()
    t0, first, rec = time.time(), run.step, {}
    lines = progress and run.rank == 0 and not sys.stderr.isatty()  # logs of batch jobs: plain lines, no bar
    bar = tqdm(total=cfg.steps, initial=run.step, disable=not progress or run.rank > 0 or lines, desc=cfg.model.mixer,
               dynamic_ncols=True)
    try:
        while run.step < cfg.steps:
            stats, gnorm = optimizer_step(run)
            bar.update(1)
            elapsed = max(time.time() - t0, 1e-9)
            ips, eta = (run.step - first) * cfg.batch_size / elapsed, (cfg.steps - run.step) * elapsed / (run.step - first)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.3f}", img_s=f"{ips:.0f}")
            out_of_time = (cfg.minutes > 0 and time.time() - t0 > cfg.minutes * 60) or run.step == stop_at
            done = run.step == cfg.steps or out_of_time
            if run.rank == 0 and (run.step % cfg.log_every == 0 or done):
                rec = log_step(run, stats, gnorm, ips, eta, lines)
            if run.rank == 0 and (run.step % cfg.ckpt_every == 0 or done):
                if not weights_finite(run):
                    raise diverged(run, f"the weights are no longer finite after step {run.step} (not saved)")
                save(run)
            if run.rank == 0 and on_sample is not None and ((cfg.sample_every and run.step % cfg.sample_every == 0) or done):
                on_sample(run.ema if run.ema is not None else run.model, run.step)
            if out_of_time:
                if run.rank == 0:
                    print(f"\nstopping at step {run.step}: " + (f"stop_at={stop_at}" if run.step == stop_at else
                                                                  f"the {cfg.minutes} min limit is reached"))
                break
    finally:
        bar.close()
    if run.rank == 0:
        export(run)
    return {**rec, "step": run.step, "seconds": time.time() - t0}
