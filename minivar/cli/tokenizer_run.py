"""The `train-tokenizer` verb: a tokenizer trained in a run folder, with its report.

The folder gets config.json (the data, the preset, the ``TokenizerConfig`` and the
``TokenizerTrainConfig``), metrics.jsonl, tokenizer.pt, metrics.json (held-out PSNR and codebook
use per scale) and reconstructions.png.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time

import torch

from .. import config, data, viz
from ..tokenizer.vqvae import TokenizerConfig, VQVAE
from ..training.tokenizer_trainer import TokenizerTrainConfig, evaluate_tokenizer, train_tokenizer

RUN_FILES = ("config.json", "metrics.jsonl", "model.pt", "tokens.pt", "ckpt", "samples", "eval.json")


def prepare_run_dir(out: str, kind: str, overwrite: bool, resume: bool = False) -> None:
    """Create ``out``; refuse a folder that already holds a run unless --resume / --overwrite."""
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path) and not (overwrite or resume):
        with open(cfg_path) as f:
            prev = json.load(f).get("kind")
        if prev != kind or kind != "demo":
            sys.exit(f"error: {out} already holds a run ({prev}); pass --resume to continue it, "
                     "--overwrite to replace it, or choose another --out")
    if overwrite and not resume:
        for name in RUN_FILES:
            p = os.path.join(out, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)


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
                              kind: str = "train-tokenizer") -> list[dict]:
    """Train ``VQVAE(cfg)`` on the training split of ``data_name`` (the split `train` uses too) in
    ``out``; returns the log records."""
    torch.manual_seed(tcfg.seed)
    (tx, _), (vx, _) = data.splits(data_name, cfg.image_size, 0.1, 0, data_path)
    prepare_run_dir(out, kind, overwrite)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"kind": kind, "data": data_name, "data_path": data_path, "preset": preset,
                   "tokenizer": config.to_dict(cfg), "train": config.to_dict(tcfg)}, f, indent=1)
    vae = VQVAE(cfg)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"tokenizer '{preset}': {n_params / 1e6:.2f}M parameters, {cfg.image_size} px images, "
          f"scales {cfg.patch_nums}, V={cfg.vocab_size}; data '{data_name}': {len(tx)} train / {len(vx)} val")
    log_path = os.path.join(out, "metrics.jsonl")
    open(log_path, "w").close()

    def log(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    t0 = time.time()
    hist = train_tokenizer(vae, tx, tcfg, progress=not quiet, log=log)
    secs = time.time() - t0
    print(f"trained {hist[-1]['step']} steps in {secs:.0f} s ({hist[-1]['img_per_s']:.0f} images/s)")
    report_tokenizer(vae, vx, out, secs)
    return hist
