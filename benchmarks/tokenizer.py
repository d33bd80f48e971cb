"""Tokenizer encode / decode throughput on this machine (random weights, fp32, no grad).

    python benchmarks/tokenizer.py [--threads N] [--reps 5]

Prints images/s for the CPU presets at batch 16 and for the official 256 px preset (the released
VAR tokenizer's architecture, ~109M parameters) at batch 1 and 4. Medians of --reps runs.
"""
import argparse
import statistics
import time

import torch

from minivar.environment import describe
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE


def median_time(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{describe()}, fp32")
    print(f"{'preset':<9} {'size':>5} {'batch':>5} {'encode img/s':>13} {'decode img/s':>13} {'encode s/batch':>15}")
    for name, batches in [("tiny16", [16]), ("tiny32", [16]), ("official", [1, 4])]:
        cfg = TOKENIZER_PRESETS[name]
        vae = VQVAE(cfg).eval()
        for B in batches:
            x = torch.rand(B, 3, cfg.image_size, cfg.image_size) * 2 - 1
            x[:, :, 0, 0] = -1  # make sure the range check sees negative values
            reps = args.reps if name != "official" else max(2, args.reps // 2)
            t_enc = median_time(lambda: vae.encode(x), reps)
            idx = vae.encode(x)
            t_dec = median_time(lambda: vae.decode(idx), reps)
            print(f"{name:<9} {cfg.image_size:>5} {B:>5} {B / t_enc:>13.1f} {B / t_dec:>13.1f} {t_enc:>15.3f}")


if __name__ == "__main__":
    main()
