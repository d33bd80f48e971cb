"""Command line: ``python -m minivar <command>``.

    python -m minivar demo                      # train a tiny tokenizer on digits, write pictures
    python -m minivar train-tokenizer --data digits --preset tiny16 --out runs/tok
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

from . import data, viz
from .tokenizer import TOKENIZER_PRESETS, VQVAE
from .train_tokenizer import TokenizerTrainConfig, evaluate_tokenizer, train_tokenizer


def prepare_run_dir(out: str, kind: str, overwrite: bool) -> None:
    """Create ``out``; refuse to reuse a folder holding another run unless ``overwrite``."""
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path) and not overwrite:
        with open(cfg_path) as f:
            prev = json.load(f).get("kind")
        if prev != kind or kind != "demo":
            sys.exit(f"error: {out} already holds a run ({prev}); pass --overwrite to replace it "
                     "or choose another --out")
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


def run_tokenizer_training(args, kind: str) -> None:
    torch.manual_seed(args.seed)
    prepare_run_dir(args.out, kind, getattr(args, "overwrite", False))
    cfg = TOKENIZER_PRESETS[args.preset]
    x, y = data.load(args.data, size=cfg.image_size)
    (tx, _), (vx, _) = data.split(x, y, 0.1, seed=args.seed)
    tcfg = TokenizerTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                time_limit_s=args.minutes * 60 if args.minutes else None)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"kind": kind, "data": args.data, "preset": args.preset,
                   "tokenizer": dataclasses.asdict(cfg), "train": dataclasses.asdict(tcfg)}, f, indent=1)
    vae = VQVAE(cfg)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"tokenizer '{args.preset}': {n_params / 1e6:.2f}M parameters, {cfg.image_size} px images, "
          f"scales {cfg.patch_nums}, V={cfg.vocab_size}; data '{args.data}': {len(tx)} train / {len(vx)} val")
    log_path = os.path.join(args.out, "metrics.jsonl")
    open(log_path, "w").close()

    def log(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    t0 = time.time()
    hist = train_tokenizer(vae, tx, tcfg, progress=not args.quiet, log=log)
    secs = time.time() - t0
    print(f"trained {hist[-1]['step']} steps in {secs:.0f} s ({hist[-1]['img_per_s']:.0f} images/s)")
    report_tokenizer(vae, vx, args.out, secs)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def tok_args(sp, steps, minutes):
        sp.add_argument("--data", default="digits", choices=sorted(data.DATASETS))
        sp.add_argument("--preset", default="tiny16", choices=sorted(TOKENIZER_PRESETS))
        sp.add_argument("--steps", type=int, default=steps)
        sp.add_argument("--batch-size", type=int, default=32)
        sp.add_argument("--lr", type=float, default=3e-4)
        sp.add_argument("--minutes", type=float, default=minutes, help="stop after this long (0: no limit)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("demo", help="the main job on the embedded digits dataset (a few minutes on 2 cores)")
    d.add_argument("--out", default="runs/demo")
    tok_args(d, steps=1500, minutes=3)
    t = sub.add_parser("train-tokenizer", help="train a multi-scale VQ tokenizer")
    t.add_argument("--out", required=True)
    t.add_argument("--overwrite", action="store_true")
    tok_args(t, steps=3000, minutes=0)
    args = p.parse_args(argv)
    if args.command == "demo":
        print("minivar demo: training a multi-scale residual VQ tokenizer on scikit-learn digits "
              "(upscaled to 16 px). The transformer stage joins this demo in a later release.")
        run_tokenizer_training(args, "demo")
    elif args.command == "train-tokenizer":
        run_tokenizer_training(args, "train-tokenizer")


if __name__ == "__main__":
    main()
