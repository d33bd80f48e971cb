"""The `train-tokenizer` verb: a tokenizer trained in a run folder, with its report.

The folder gets config.json (the data, the preset, the ``TokenizerConfig`` and the
``TokenizerTrainConfig``), metrics.jsonl, ckpt/step_*.pt (every ``ckpt_every`` steps and when a
time limit stops the run; ``--resume`` continues exactly), tokenizer.pt, metrics.json (held-out
PSNR and codebook use per scale) and reconstructions.png.
"""
from __future__ import annotations

import json
import os
import time

import torch

from .. import config, data, viz
from ..checkpoints import atomic_json
from ..tokenizer.vqvae import TokenizerConfig, VQVAE
from ..training.tokenizer_trainer import TokenizerTrainConfig, evaluate_tokenizer, train_tokenizer
from ..training.trainer import append_line, checkpoint_paths, newest_checkpoint, save_checkpoint, trim_log
from .folders import prepare_run_dir, run_record
from .sources import RunError

def report_tokenizer(vae: VQVAE, val_x: torch.Tensor, out: str, seconds: float) -> dict:
    ev = evaluate_tokenizer(vae, val_x)
    pns = vae.patch_nums
    print(f"\nreconstruction PSNR on {len(val_x)} held-out images: {ev['psnr']:.2f} dB")
    print("codebook use per scale (fraction of the V codes used / perplexity):")
    for pn, u, p in zip(pns, ev["usage"], ev["perplexity"]):
        print(f"  scale {pn:>2}x{pn:<2}  {u * 100:5.1f}% of {vae.config.vocab_size}   perplexity {p:7.1f}")
    x = val_x[:8]
    per_scale = vae.decode_per_scale(vae.encode(x))
    png = os.path.join(out, "reconstructions.png")
    viz.save_grid(png, per_scale + [x], [f"{p}x{p}" for p in pns] + ["input"])
    vae.save(os.path.join(out, "tokenizer.pt"))
    ev["train_seconds"] = seconds
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(ev, f, indent=1)
    print(f"wrote {png} (columns: decoded from scales up to k, then the input) and "
          f"{os.path.join(out, 'tokenizer.pt')}")
    return ev


def train_tokenizer_in_folder(out: str, data_name: str, data_path: str | None, preset: str, cfg: TokenizerConfig,
                              tcfg: TokenizerTrainConfig, quiet: bool = False, overwrite: bool = False,
                              resume: bool = False) -> list[dict]:
    """Train ``VQVAE(cfg)`` on the training split of ``data_name`` (the split `train` uses too) in
    ``out``, with checkpoints in ``out/ckpt``; ``resume`` continues from the newest one that loads,
    exactly. Returns the log records of this sitting."""
    torch.manual_seed(tcfg.seed)
    (tx, _), (vx, _) = data.splits(data_name, cfg.image_size, 0.1, 0, data_path)
    prepare_run_dir(out, "train-tokenizer", overwrite, resume)
    found = newest_checkpoint(out) if resume else None
    if resume and found is None:
        if checkpoint_paths(out):
            raise RunError(f"no checkpoint in {os.path.join(out, 'ckpt')} can be read; start again with --overwrite")
        print("no checkpoint yet: starting from step 0")
    atomic_json(run_record("train-tokenizer", data=data_name, data_path=data_path, preset=preset,
                           tokenizer=config.to_dict(cfg), train=config.to_dict(tcfg)), os.path.join(out, "config.json"))
    vae = VQVAE(cfg)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"tokenizer '{preset}': {n_params / 1e6:.2f}M parameters, {cfg.image_size} px images, "
          f"scales {cfg.patch_nums}, V={cfg.vocab_size}; data '{data_name}': {len(tx)} train / {len(vx)} val")
    log_path = os.path.join(out, "metrics.jsonl")
    if found is None:
        open(log_path, "w").close()
    else:
        trim_log(log_path, found[1]["step"])
        print(f"resumed from {found[0]} (step {found[1]['step']})")

    t0 = time.time()
    try:
        hist = train_tokenizer(vae, tx, tcfg, progress=not quiet, log=lambda rec: append_line(log_path, rec),
                               resume=found[1] if found else None,
                               on_checkpoint=lambda state: save_checkpoint(out, state, keep_last=2))
    except FloatingPointError as e:
        again = (f"continue from the newest checkpoint with a lower learning rate: minivar train-tokenizer --out {out} "
                 f"--resume --lr {tcfg.lr / 2:g}") if checkpoint_paths(out) else \
            f"start again with a lower learning rate: minivar train-tokenizer --out {out} --overwrite --lr {tcfg.lr / 2:g}"
        raise RunError(f"{e}; training stopped. {again}") from None
    secs = time.time() - t0
    step = hist[-1]["step"] if hist else (found[1]["step"] if found else 0)
    print(f"trained to step {step} of {tcfg.steps} in {secs:.0f} s"
          + (f" ({hist[-1]['img_per_s']:.0f} images/s)" if hist else ""))
    if step < tcfg.steps:
        print(f"stopped early with a checkpoint; `minivar train-tokenizer --out {out} --resume` continues")
    report_tokenizer(vae, vx, out, secs)
    return hist
