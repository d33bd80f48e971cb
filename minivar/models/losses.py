"""The next-scale training loss: mean cross-entropy over all L tokens, and per-scale loss / accuracy.

Both models end in ``logits = head(h)`` and train on the mean cross-entropy over all L tokens
(VAR, Tian et al. 2024, Sec. 3.2: every token of every scale weighs 1/L). ``next_scale_loss``
computes it from the logits, as notebook 03 derives it; ``model.loss(labels, x, targets)`` runs the
same with the head and the cross-entropy fused (``minivar.fast.head_loss``) when
``minivar.fast.enabled.head_loss`` is on. Both return ``loss_stats``'s dict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import scales


def next_scale_loss(logits_BLV: torch.Tensor, targets_BL: torch.Tensor, patch_nums) -> dict:
    """Cross-entropy over all L tokens with uniform 1/L weight, plus per-scale loss and accuracy.

    The softmax runs over rows of the contiguous (B*L, V) view: over ``transpose(1, 2)`` (a strided
    class dimension) PyTorch's CPU log-softmax is ~8x slower, and at 256 px this is a large buffer."""
    B, L, V = logits_BLV.shape
    ce_BL = F.cross_entropy(logits_BLV.reshape(B * L, V), targets_BL.reshape(B * L), reduction="none").view(B, L)
    with torch.no_grad():
        hit_BL = (logits_BLV.argmax(-1) == targets_BL).float()
    return loss_stats(ce_BL, hit_BL, patch_nums)


def loss_stats(ce_BL, hit_BL, patch_nums) -> dict:
    """Per-token losses and hits (B, L) -> {loss (mean, a tensor), acc, scale_loss, scale_acc}."""
    hit_BL = hit_BL.float()
    offs = scales.offsets(patch_nums)
    per_loss = [ce_BL[:, b:e].mean().item() for b, e in zip(offs[:-1], offs[1:])]
    per_acc = [hit_BL[:, b:e].mean().item() for b, e in zip(offs[:-1], offs[1:])]
    return {"loss": ce_BL.mean(), "acc": hit_BL.mean().item(), "scale_loss": per_loss, "scale_acc": per_acc}
