"""Forward + backward time of minivar's PyTorch Mamba2 (SSD, chunked) against the chunk length.

    python benchmarks/mamba_chunk.py            # L = 680 (the 256 px schedule), B 2, width 256

The result does not depend on the chunk (checked: max |diff| printed against chunk 256); the time
does: the intra-chunk part is quadratic in the chunk length, the loop across chunks linear in
L / chunk. Mamba2.torch_chunk_size (64) was picked from this table on a 2-core CPU.
"""
import argparse
import statistics
import time

import torch

from minivar.environment import describe
from minivar.models.mamba2 import Mamba2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=680)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"{describe()}; B {a.batch}, L {a.L}, width {a.width}")
    print("| headdim | d_state | chunk | fwd+bwd ms | max abs diff vs chunk 256 |")
    print("|---|---|---|---|---|")
    for hd, ds in ((32, 16), (64, 64)):
        m = Mamba2(a.width, d_state=ds, headdim=hd)
        x = torch.randn(a.batch, a.L, a.width, requires_grad=True)
        ref = None
        for chunk in (256, 128, 64, 32):
            m.torch_chunk_size = chunk
            times = []
            for _ in range(a.reps + 1):
                t = time.perf_counter()
                m(x).square().mean().backward()
                times.append(time.perf_counter() - t)
            with torch.no_grad():
                y = m(x)
            ref = y if ref is None else ref
            print(f"| {hd} | {ds} | {chunk} | {statistics.median(times[1:]) * 1000:.0f} | "
                  f"{(y - ref).abs().max().item():.1e} |")


if __name__ == "__main__":
    main()
