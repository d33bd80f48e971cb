"""Scale schedules: which token maps a next-scale model predicts, and how they line up.

A schedule ``patch_nums`` (pn) lists the side of each token map, coarse -> fine; the last one equals
the side of the tokenizer's latent. Tokens are raster order inside a scale and the scales are
concatenated, so scale k occupies positions ``begin[k]:end[k]`` of a sequence of L = sum(pn^2)
tokens (VAR paper, Sec. 3.2; M-VAR paper, Sec. 3).

Glossary of dims used across minivar:
    B batch, K number of scales, L tokens over all scales, l tokens of one scale,
    C model width, Cv tokenizer latent channels (Cvae), V vocabulary size, H heads, c head dim.
"""
from __future__ import annotations

from typing import Sequence

import torch

# Named presets. The two official ones come from the VAR code; the small ones are ours for CPU.
PRESETS: dict[str, tuple[int, ...]] = {
    "256": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),  # 256 px images, 16x16 latent, L = 680
    "512": (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),  # 512 px images, 32x32 latent, L = 2240
    "16px": (1, 2, 3, 4),  # 16 px images, 4x4 latent (4x down), L = 30
    "32px": (1, 2, 3, 4, 6, 8),  # 32 px images, 8x8 latent (4x down), L = 130
}


class ScheduleError(ValueError):
    """A scale schedule that cannot work with the model or tokenizer it is given to."""


def get_schedule(name_or_pns: str | Sequence[int]) -> tuple[int, ...]:
    """Return a schedule from a preset name ('256', '512', '16px', '32px') or a sequence of ints."""
    if isinstance(name_or_pns, str):
        if name_or_pns not in PRESETS:
            raise ScheduleError(
                f"unknown schedule preset {name_or_pns!r}; choose one of {sorted(PRESETS)} "
                "or pass the side lengths, e.g. (1, 2, 3, 4)")
        return PRESETS[name_or_pns]
    return validate(name_or_pns)


def validate(patch_nums: Sequence[int], latent_side: int | None = None) -> tuple[int, ...]:
    """Check a schedule: positive ints, strictly increasing, >= 2 scales, last = latent side."""
    pns = tuple(int(p) for p in patch_nums)
    if any(p != q for p, q in zip(pns, patch_nums)):
        raise ScheduleError(f"schedule {tuple(patch_nums)} must hold whole numbers")
    if len(pns) < 2:
        raise ScheduleError(f"schedule {pns} needs at least two scales, e.g. (1, 2, 4)")
    if pns[0] < 1 or any(b <= a for a, b in zip(pns, pns[1:])):
        raise ScheduleError(f"schedule {pns} must be positive and strictly increasing, e.g. (1, 2, 3, 4)")
    if latent_side is not None and pns[-1] != latent_side:
        raise ScheduleError(
            f"schedule {pns} ends at {pns[-1]} but the tokenizer's latent is {latent_side}x{latent_side}: "
            f"the last scale must equal the latent side (append {latent_side}, or use an image size of "
            f"{pns[-1]}x the tokenizer's downsampling factor)")
    return pns


def token_counts(patch_nums: Sequence[int]) -> list[int]:
    """Tokens per scale: pn^2."""
    return [p * p for p in patch_nums]


def num_tokens(patch_nums: Sequence[int]) -> int:
    """L = sum of pn^2 (680 for the 256 px schedule)."""
    return sum(token_counts(patch_nums))


def offsets(patch_nums: Sequence[int]) -> list[int]:
    """Cumulative token offsets [0, n0, n0+n1, ..., L]; scale k is ``offsets[k]:offsets[k+1]``."""
    out = [0]
    for n in token_counts(patch_nums):
        out.append(out[-1] + n)
    return out


def scale_ids(patch_nums: Sequence[int], device=None) -> torch.Tensor:
    """Scale index of every token, LongTensor (L,): [0, 1,1,1,1, 2,...]."""
    return torch.cat([torch.full((n,), k, dtype=torch.long, device=device)
                      for k, n in enumerate(token_counts(patch_nums))])


def block_causal_mask(patch_nums: Sequence[int], device=None) -> torch.Tensor:
    """VAR's mask, bool (L, L), True = may attend: query at scale i sees every key of scales <= i."""
    s = scale_ids(patch_nums, device)
    return s[:, None] >= s[None, :]


def block_diagonal_mask(patch_nums: Sequence[int], device=None) -> torch.Tensor:
    """M-VAR's intra-scale mask, bool (L, L): a query sees only the keys of its own scale."""
    s = scale_ids(patch_nums, device)
    return s[:, None] == s[None, :]


def mask_to_bias(mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Turn a bool mask (True = allowed) into an additive bias of 0 / -inf."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask, float("-inf"))
