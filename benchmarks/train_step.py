"""CPU training throughput (images/s) of a tiny VAR vs a tiny M-VAR at equal depth, in one run.

    python benchmarks/train_step.py                 # depth 4, width 128, 16 px schedule (1,2,3,4), B16
    python benchmarks/train_step.py --schedule 32px --width 256 --reps 5

One "step" = forward + backward + AdamW on one micro-batch of pre-tokenized images (the tokenizer
is not run, as in minivar.training.trainer). The two models alternate rep by rep so that machine noise hits
both alike; the table reports the median. Compare ratios within one run, not across machines.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from minivar import scales
from minivar.environment import describe
from minivar.models import ModelConfig, NextScaleTransformer


def build(mixer: str, a) -> tuple[NextScaleTransformer, torch.optim.Optimizer]:
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=a.depth, width=a.width, heads=a.heads or a.depth, num_classes=10,
                      vocab_size=a.vocab, z_channels=16, patch_nums=scales.get_schedule(a.schedule),
                      d_state=a.d_state, mamba_headdim=32, drop_path=0.0)
    model = NextScaleTransformer(cfg).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def step(model, opt, batch) -> float:
    y, x_in, tgt = batch
    t = time.perf_counter()
    out = model.loss(y, x_in, tgt)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=0)
    p.add_argument("--schedule", default="16px")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    models = {m: build(m, a) for m in ("var", "mvar")}
    L = scales.num_tokens(scales.get_schedule(a.schedule))
    g = torch.Generator().manual_seed(0)
    first = scales.get_schedule(a.schedule)[0] ** 2
    batch = (torch.randint(10, (a.batch,), generator=g), torch.randn(a.batch, L - first, 16, generator=g),
             torch.randint(a.vocab, (a.batch, L), generator=g))
    times = {m: [] for m in models}
    for m in models:  # warm-up
        step(*models[m], batch)
    for _ in range(a.reps):
        for m in models:
            times[m].append(step(*models[m], batch))
    print(f"{describe()}\ntraining step on CPU ({torch.get_num_threads()} threads), depth {a.depth}, width {a.width}, "
          f"schedule {a.schedule} (L={L}), V={a.vocab}, micro-batch {a.batch}, median of {a.reps} reps\n")
    print(f"| model | parameters | ms / step | images / s | vs VAR |")
    print(f"|---|---|---|---|---|")
    base = statistics.median(times["var"])
    for m, (model, _) in models.items():
        t = statistics.median(times[m])
        n = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {'VAR' if m == 'var' else 'M-VAR'} d{a.depth} | {n:.2f}M | {t * 1e3:.1f} | "
              f"{a.batch / t:.1f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
