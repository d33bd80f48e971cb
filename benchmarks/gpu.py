"""GPU throughput of VAR-d16 and M-VAR-d16 (random weights) and of the fast paths, in one run.

    python benchmarks/gpu.py                  # d16, 256 px, bf16 autocast, default backends
    python benchmarks/gpu.py --batch 48 --amp fp16 --reps 20 --compile

Prints three tables:
1. train step (forward + backward + AdamW on one micro-batch of pre-tokenized images, as
   minivar.training.trainer) in images/s per GPU, and the peak memory;
2. sampling in images/s: 10 scales with cfg 1.5, top-k 900, top-p 0.96, plus the decode of the
   official-architecture tokenizer (random weights), batch ``--sample-batch``;
3. fast-path ratios (reference time / fast time, > 1: the fast path wins), forward + backward at
   d16 shapes: our Triton scale attention and flash-attn varlen vs SDPA with the full mask, and
   mamba-ssm's fused Mamba2 scan vs our chunked PyTorch scan (rows are skipped when not installed).
The GPU and software versions head the output: compare numbers only within one run / one card.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from minivar import scales
from minivar.models.mamba2 import Mamba2, _fused_scan
from minivar.models import ModelConfig, NextScaleTransformer, loss_stats
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE

PNS = scales.PRESETS["256"]


def timed(fn, reps: int, warmup: int = 2) -> float:
    """Median seconds of fn() over reps, after warm-up (compiles, autotune, allocator)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def build(mixer: str, depth: int, backend: str = "auto") -> NextScaleTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=depth, attn_backend=backend, d_state=64, mamba_headdim=64,
                      attn_l2_norm=mixer == "var")
    return NextScaleTransformer(cfg).cuda()


def train_row(mixer: str, a) -> dict:
    model = build(mixer, a.depth).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if a.compile else model
    y = torch.randint(1000, (a.batch,), device="cuda")
    x = torch.randn(a.batch, model.L - 1, 32, device="cuda")
    t = torch.randint(4096, (a.batch, model.L), device="cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=a.amp == "fp16")

    def step():
        with torch.autocast("cuda", dtype=AMP[a.amp], enabled=a.amp != "none"):
            loss = loss_stats(*fwd(y, x, t), PNS)["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    torch.cuda.reset_peak_memory_stats()
    sec = timed(step, a.reps, warmup=3)
    n_par = sum(p.numel() for p in model.parameters())
    out = {"params": n_par, "img_s": a.batch / sec, "mem_gb": torch.cuda.max_memory_allocated() / 2 ** 30}
    del model, opt
    torch.cuda.empty_cache()
    return out


@torch.no_grad()
def sample_row(mixer: str, vae, a) -> dict:
    model = build(mixer, a.depth).eval()
    labels = torch.arange(a.sample_batch) % 1000

    def run():
        with torch.autocast("cuda", dtype=AMP[a.amp], enabled=a.amp != "none"):
            model.generate(labels, cfg=1.5, top_k=900, top_p=0.96, seed=0, vae=vae)
    sec = timed(run, max(2, a.reps // 4), warmup=1)
    del model
    torch.cuda.empty_cache()
    return {"img_s": a.sample_batch / sec}


def attention_rows(a) -> list[tuple[str, float]]:
    from minivar.models.attention import scale_attention
    B, H, c = a.batch, 16, 64
    L = scales.num_tokens(PNS)
    q, k, v = (torch.randn(B, H, L, c, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, L, c, device="cuda", dtype=torch.bfloat16)

    def fwd_bwd(mode, backend):
        def f():
            o = scale_attention(q, k, v, PNS, mode, 1 / 8, backend)
            torch.autograd.grad(o, (q, k, v), g)
        return f
    rows = []
    for mode, name in (("causal", "VAR block-causal"), ("intra", "M-VAR intra-scale")):
        ref = timed(fwd_bwd(mode, "sdpa"), a.reps)
        for backend in ("triton", "blocks", "flash"):
            if backend == "flash" and mode == "causal":
                continue
            try:
                rows.append((f"{name}: {backend} vs sdpa (bf16, B{B} H{H} c{c} L{L})",
                             ref / timed(fwd_bwd(mode, backend), a.reps)))
            except (ImportError, RuntimeError) as e:
                rows.append((f"{name}: {backend} -- skipped ({type(e).__name__}: {str(e)[:60]})", float("nan")))
    return rows


def mamba_row(a) -> tuple[str, float]:
    if _fused_scan() is None:
        return "Mamba2 fused (mamba-ssm) -- skipped: not installed", float("nan")
    torch.manual_seed(0)
    C = 64 * a.depth
    m = Mamba2(C, d_state=64, headdim=64).cuda()
    x = torch.randn(a.batch, scales.num_tokens(PNS), C, device="cuda", requires_grad=True)

    def run(fused):
        def f():
            m.use_fused = fused
            with torch.autocast("cuda", dtype=AMP[a.amp], enabled=a.amp != "none"):
                y = m(x)
            y.float().sum().backward()
        return f
    ref = timed(run(False), a.reps)
    return f"Mamba2 fused vs PyTorch chunked scan (B{a.batch} L680 D{C}, {a.amp})", ref / timed(run(True), a.reps)


AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--batch", type=int, default=32, help="training micro-batch per GPU")
    p.add_argument("--sample-batch", type=int, default=64)
    p.add_argument("--amp", default="bf16", choices=sorted(AMP))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); on CPU use "
                 "benchmarks/train_step.py and benchmarks/sampling.py")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"depth {a.depth}, {a.amp} autocast, median of {a.reps} reps, random weights")
    print(f"\n1. training step, micro-batch {a.batch} per GPU{' (torch.compile)' if a.compile else ''}")
    print(f"{'model':<12} {'params':>8} {'img/s':>9} {'peak GB':>8}")
    for mixer, name in (("var", "VAR"), ("mvar", "M-VAR")):
        r = train_row(mixer, a)
        print(f"{name + '-d' + str(a.depth):<12} {r['params'] / 1e6:>7.0f}M {r['img_s']:>9.1f} {r['mem_gb']:>8.1f}")
    torch.manual_seed(0)
    vae = VQVAE(TOKENIZER_PRESETS["official"]).cuda().eval()
    print(f"\n2. sampling, batch {a.sample_batch} (cfg 1.5, top-k 900, top-p 0.96, tokenizer decode included)")
    for mixer, name in (("var", "VAR"), ("mvar", "M-VAR")):
        print(f"{name + '-d' + str(a.depth):<12} {sample_row(mixer, vae, a)['img_s']:>9.1f} img/s")
    del vae
    torch.cuda.empty_cache()
    print("\n3. fast paths, forward + backward (ratio = reference time / fast time)")
    for name, ratio in attention_rows(a) + [mamba_row(a)]:
        print(f"  {ratio:>6.2f}x  {name}")


if __name__ == "__main__":
    main()
