"""Sampling speed on this machine: M-VAR with our Mamba state cache vs the official re-scan, and
VAR vs M-VAR at equal depth. Random weights, fp32, cfg 1.5, top-k 900, top-p 0.96.

    python benchmarks/sampling.py            # tiny (16 px) at B1/B16, d16 shapes (256 px) at B1
    python benchmarks/sampling.py --full     # also d16 shapes at B16 (minutes)

The tokenizer used with the d16-shaped models has the official quantiser (V 4096, Cv 32, 256 px
schedule) but a slim decoder (width 32), so the table measures the transformer and its caches;
the official-size decoder's cost is in benchmarks/tokenizer.py. Times are medians of interleaved
runs (A B A B ...), so the ratios are fair even on a busy machine.
"""
import argparse
import statistics
import time

import torch

from minivar import scales
from minivar.environment import describe
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.sample import generate
from minivar.tokenizer import VQVAE, TokenizerConfig


def build(shape: str, mixer: str):
    if shape == "tiny":
        vcfg = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=16,
                               vocab_size=256, patch_nums=(1, 2, 3, 4))
        mcfg = ModelConfig(mixer=mixer, depth=4, width=128, heads=4, num_classes=10, vocab_size=256,
                           z_channels=16, patch_nums=(1, 2, 3, 4), mamba_headdim=32, d_state=16)
    else:  # d16 shapes: width 1024, 16 heads, 680 tokens, V 4096
        vcfg = TokenizerConfig(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)
        mcfg = ModelConfig(mixer=mixer, depth=16, num_classes=1000)
    return NextScaleTransformer(mcfg).eval(), VQVAE(vcfg).eval()


def interleaved(fns: dict, reps: int) -> dict:
    times = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{describe()}, fp32, cfg 1.5, top-k 900, top-p 0.96")
    cases = [("tiny", 1), ("tiny", 16), ("d16", 1)] + ([("d16", 16)] if args.full else [])
    print(f"{'shape':<5} {'B':>3} {'VAR s':>8} {'M-VAR cached s':>15} {'M-VAR rescan s':>15} "
          f"{'rescan/cached':>14} {'M-VAR/VAR':>10} {'Mamba steps/img cached|rescan':>30}")
    built = {}
    for shape, B in cases:
        if shape not in built:
            built[shape] = {m: build(shape, m) for m in ("var", "mvar")}
        (var, vae), (mvar, vae2) = built[shape]["var"], built[shape]["mvar"]
        labels = torch.arange(B) % var.num_classes
        kw = dict(cfg=1.5, top_k=900, top_p=0.96, seed=0)
        steps = {}

        def run_mvar(rescan):
            generate(mvar, vae2, labels, rescan_mamba=rescan, **kw)
            steps[rescan] = mvar.blocks[0].mamba.tokens_scanned

        t = interleaved({"var": lambda: generate(var, vae, labels, **kw),
                         "cached": lambda: run_mvar(False), "rescan": lambda: run_mvar(True)},
                        args.reps if shape == "tiny" else max(1, args.reps - 1))
        L = scales.num_tokens(var.config.patch_nums)
        print(f"{shape:<5} {B:>3} {t['var']:>8.3f} {t['cached']:>15.3f} {t['rescan']:>15.3f} "
              f"{t['rescan'] / t['cached']:>13.2f}x {t['cached'] / t['var']:>9.2f}x "
              f"{steps[False]:>14} | {steps[True]:<6} (L={L})")


if __name__ == "__main__":
    main()
