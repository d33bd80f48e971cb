"""What a block keeps from one sampling step (one scale) to the next.

Sampling (VAR Sec. 3.2, Fig. 4) feeds the transformer one scale at a time. What must survive
between scales depends on the block:

* a VAR block attends to every earlier scale, so it keeps their keys and values (``KVCache``);
* an M-VAR block's attention never looks outside its own scale (no KV cache); its Mamba2 keeps
  the recurrent state (``Mamba2Cache``: SSM state + the last d_conv-1 conv inputs), or, to
  reproduce the official sampler, the whole prefix of Mamba inputs to scan again (``prefix``);
* both keep their AdaLN modulations: the class condition is the same at every scale.

``SamplingState`` bundles the per-block states with what the whole model keeps (the condition,
the head's modulation, the scale reached). ``NextScaleTransformer.start`` creates it,
``NextScaleTransformer.step`` advances it and each block updates its own ``BlockState`` inside that
step; code outside the model only passes it along.

Dims: B batch (doubled under classifier-free guidance), H heads, n tokens cached so far, c head
dim, C width, L all tokens of the schedule.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .mamba2 import Mamba2Cache


@dataclass
class KVCache:
    """Keys and values of the scales fed so far: one (2, B, H, L, c) buffer filled scale by scale,
    so appending a scale is a copy into place, never a concatenation of everything before it."""
    capacity: int  # L: tokens of the whole schedule
    buffer: torch.Tensor | None = None
    n: int = 0  # tokens cached so far

    def append(self, k_BHlc: torch.Tensor, v_BHlc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one scale's keys / values; return all keys and values so far, (B, H, n, c) each."""
        if self.buffer is None:
            B, H, _, c = k_BHlc.shape
            self.buffer = k_BHlc.new_empty(2, B, H, self.capacity, c)
        l = k_BHlc.shape[2]
        self.buffer[0, :, :, self.n:self.n + l] = k_BHlc
        self.buffer[1, :, :, self.n:self.n + l] = v_BHlc
        self.n += l
        return self.k, self.v

    @property
    def k(self) -> torch.Tensor:
        return self.buffer[0, :, :, :self.n]

    @property
    def v(self) -> torch.Tensor:
        return self.buffer[1, :, :, :self.n]


@dataclass
class BlockState:
    """One block's memory while sampling."""
    kv: KVCache | None = None  # VAR blocks
    mamba: Mamba2Cache | None = None  # M-VAR blocks (recurrent state)
    rescan: bool = False  # M-VAR blocks: re-run Mamba over the whole prefix instead (official sampler)
    prefix: torch.Tensor | None = None  # the Mamba inputs so far, when rescan is on
    modulations: tuple | None = None  # AdaLN vectors, computed at the first scale


@dataclass
class SamplingState:
    """The whole model's memory while sampling: one ``BlockState`` per block, the condition and
    the head's AdaLN modulation (computed once per image), and the next scale to feed."""
    cond_BD: torch.Tensor
    head_modulation: tuple
    blocks: list[BlockState] = field(default_factory=list)
    k: int = 0  # index of the scale the next ``step`` feeds
