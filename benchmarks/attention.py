"""Scale attention: how much of the dense score matrix the Triton kernels skip, and (on a GPU) how
fast they are against the alternatives.

    python benchmarks/attention.py

1. Always: visited vs. dense (query block, key block) tiles for the 256 px (L = 680) and 512 px
   (L = 2240) schedules, block-causal (VAR) and intra-scale (M-VAR), for a few tile sizes.
2. With CUDA only: forward and forward+backward times at d16 shapes (B 8, H 16, c 64, bf16) of
   - Triton      minivar/kernels/scale_attention.py (skips tiles outside each query block's key range)
   - SDPA        torch's scaled_dot_product_attention with a dense (L, L) boolean mask
   - Flex        torch's FlexAttention with a block mask (compiled)
   - flash-attn  flash_attn_varlen_func, one sequence per (image, scale); intra mode only, since
                 a block-causal mask is not a set of independent sequences (if installed)
   as milliseconds and as ratios to Triton (> 1: slower than Triton).
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from minivar.kernels.scale_attention import MODES, scale_attention, scale_ids, scale_mask, visited_key_blocks

SCHEDULES = {
    "256 px": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    "512 px": (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
}
TILES = ((16, 16), (64, 64), (128, 64))  # (BLOCK_M, BLOCK_N); 64x64 is the kernel's GPU default


def offsets_of(pns, device="cpu") -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(p * p for p in pns)], dtype=torch.int32, device=device)


def tile_table() -> None:
    """Visited / dense key tiles, next to the fraction of allowed (query, key) pairs."""
    cols = "  ".join(f"{f'tiles {bm}x{bn}':>19s}" for bm, bn in TILES)
    print(f"{'schedule':8s} {'L':>5s} {'mode':6s} {'pairs/L^2':>9s}  {cols}")
    for name, pns in SCHEDULES.items():
        offsets = offsets_of(pns)
        L = int(offsets[-1])
        n_K = offsets.diff().long()
        for mode in MODES:
            pairs = int((n_K * n_K).sum() if mode == "intra" else (n_K * offsets[1:].long()).sum())
            cells = []
            for bm, bn in TILES:
                visited, dense = visited_key_blocks(offsets, L, mode, bm, bn)
                cells.append(f"{visited:>6d}/{dense:<6d} ({visited / dense:.2f})")
            print(f"{name:8s} {L:5d} {mode:6s} {pairs / L**2:9.3f}  " + "  ".join(f"{c:>19s}" for c in cells))


def implementations(q, k, v, offsets, mode, scale):
    """name -> (forward fn, input tensors to zero grads on). Each fn returns the attention output."""
    L = q.shape[2]
    impls = {"triton": (lambda: scale_attention(q, k, v, offsets, mode, scale), [q, k, v])}
    mask_LL = scale_mask(offsets.long(), mode)
    impls["sdpa dense mask"] = (lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask_LL, scale=scale),
                                [q, k, v])
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        sid_L = scale_ids(offsets.long())

        def mask_mod(b, h, q_idx, kv_idx):
            return sid_L[kv_idx] == sid_L[q_idx] if mode == "intra" else sid_L[kv_idx] <= sid_L[q_idx]

        block_mask = create_block_mask(mask_mod, None, None, L, L, device=q.device)
        flex = torch.compile(flex_attention)
        impls["flex block mask"] = (lambda: flex(q, k, v, block_mask=block_mask, scale=scale), [q, k, v])
    except Exception as e:  # noqa: BLE001 - an old torch without FlexAttention
        print(f"  (FlexAttention unavailable: {type(e).__name__}: {e})")
    if mode == "intra":
        try:
            from flash_attn import flash_attn_varlen_func
        except ImportError:
            print("  (flash-attn not installed: skipped)")
        else:
            B, H, _, c = q.shape
            # packed layout (B*L, H, c); one sequence per (image, scale): cu_seqlens over all of them
            q_TH, k_TH, v_TH = (t.detach().transpose(1, 2).reshape(B * L, H, c).requires_grad_()
                                for t in (q, k, v))
            starts = torch.cat([offsets[:-1] + b * L for b in range(B)])
            cu_seqlens = torch.cat([starts, starts.new_tensor([B * L])]).to(torch.int32)
            max_len = int(offsets.diff().max())
            impls["flash-attn varlen"] = (lambda: flash_attn_varlen_func(
                q_TH, k_TH, v_TH, cu_seqlens, cu_seqlens, max_len, max_len, softmax_scale=scale, causal=False)
                .reshape(B, L, H, c).transpose(1, 2), [q_TH, k_TH, v_TH])
    return impls


def gpu_timings(B=8, H=16, c=64, dtype=torch.bfloat16) -> None:
    from triton.testing import do_bench

    print(f"\nGPU timings on {torch.cuda.get_device_name()}: B {B}, H {H}, c {c}, {dtype}; "
          "ratio = time / Triton's time")
    for (name, pns), mode in itertools.product(SCHEDULES.items(), MODES):
        offsets = offsets_of(pns, "cuda")
        L = int(offsets[-1])
        q, k, v = (torch.randn(B, H, L, c, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        print(f"{name} (L={L}) {mode}:")
        print(f"  {'impl':18s} {'fwd ms':>8s} {'ratio':>6s} {'fwd+bwd ms':>11s} {'ratio':>6s} "
              f"{'max|out-triton|':>16s}")
        base = None
        for impl, (fn, leaves) in implementations(q, k, v, offsets, mode, c ** -0.5).items():
            try:
                with torch.no_grad():
                    out = fn()
                    err = (out.float() - base[0].float()).abs().max().item() if base else 0.0
                    t_fwd = do_bench(fn)
                t_all = do_bench(lambda: fn().backward(do), grad_to_none=leaves)
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                print(f"  {impl:18s} failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
                continue
            base = base or (out, t_fwd, t_all)
            print(f"  {impl:18s} {t_fwd:8.3f} {t_fwd / base[1]:6.2f} {t_all:11.3f} {t_all / base[2]:6.2f} "
                  f"{err:16.2e}")


if __name__ == "__main__":
    tile_table()
    if torch.cuda.is_available():
        gpu_timings()
    else:
        print("\nno CUDA device: GPU timings (Triton vs SDPA vs FlexAttention vs flash-attn) skipped")
