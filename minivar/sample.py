"""Next-scale sampling with caches, classifier-free guidance, top-k / top-p, and zero-shot editing.

VAR (Tian et al. 2024, Sec. 3.2 and Fig. 4) samples K steps: at step k the transformer sees only
scale k's tokens (built from the running reconstruction f_hat), and

  * VAR: every block keeps the keys/values of the earlier scales (KV cache);
  * M-VAR: attention is intra-scale, so it needs no cache at all; each block's Mamba2 keeps its
    recurrent state (SSM state + the last d_conv-1 conv inputs), so across the whole image Mamba
    runs exactly L token-steps. The official M-VAR sampler re-runs Mamba over the whole prefix at
    every scale (sum_k end_k token-steps, 1,710 instead of 680 at 256 px); ``rescan_mamba=True``
    reproduces it, for comparison and tests.

Classifier-free guidance doubles the batch with the null class and mixes the logits with a
linear ramp over scales: t_k = cfg * k / (K - 1), logits = (1 + t_k) cond - t_k uncond.

The model is driven only through ``model.start`` / ``model.step`` / ``model.scale_input`` (its
caches are typed, ``minivar.models.caches``); the tokenizer through ``vae.next_input``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def top_k_top_p_candidates(logits_NV: torch.Tensor, top_k: int = 0, top_p: float = 0.0):
    """(values, token ids) of the candidates that survive top-k then top-p; dropped ones are -inf.

    top-p keeps the smallest set of most-likely tokens whose probability reaches top_p (the most
    likely token always stays). With top_k > 0 everything happens on the k candidates returned by
    one ``topk`` call -- no sort over the whole vocabulary.
    """
    V = logits_NV.shape[-1]
    if 0 < top_k < V:
        vals, cand = logits_NV.topk(top_k, dim=-1)  # sorted, largest first
    elif top_p > 0:
        vals, cand = logits_NV.sort(dim=-1, descending=True)
    else:
        return logits_NV, None  # nothing to filter: all V tokens, in vocabulary order
    if top_p > 0:
        probs = vals.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability of the strictly more likely candidates
        vals = vals.masked_fill(before >= top_p, float("-inf"))
    return vals, cand


def sample_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, generator=None):
    """One token per position from softmax(logits) restricted to the top-k / top-p candidates."""
    B, l, V = logits_BlV.shape
    flat = logits_BlV.reshape(B * l, V).float()
    if top_k == 1:  # greedy
        return flat.argmax(-1).view(B, l)
    vals, cand = top_k_top_p_candidates(flat, top_k, top_p)
    pick = torch.multinomial(vals.softmax(-1), 1, generator=generator)
    return (pick if cand is None else cand.gather(-1, pick)).view(B, l)


def _check_args(model, labels_B, cfg, top_k, top_p):
    model.check_labels(labels_B)
    if not math.isfinite(cfg) or cfg < 0:
        raise ValueError(f"cfg must be a finite number >= 0 (0 = no guidance), got {cfg}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (0 = off), got {top_p}")
    if top_k < 0 or int(top_k) != top_k:
        raise ValueError(f"top_k must be a whole number >= 0 (0 = off), got {top_k}")


@torch.no_grad()
def generate(model, vae, labels_B, cfg=1.5, top_k=900, top_p=0.96, seed=None, return_indices=False,
             more_smooth=False, rescan_mamba=False, force=None, trace=None):
    """Sample images (B, 3, H, W) in [0, 1] for class ids ``labels_B`` (num_classes = unconditional).

    seed: an int makes the result bit-reproducible (CPU); None uses the global RNG.
    more_smooth: feed a Gumbel-softmax mixture of codes instead of the sampled code (VAR's
        visualisation trick, not for benchmarks). force(k, idx_Bl) -> idx_Bl may overwrite the
        sampled tokens of scale k (used by ``edit``). trace: a list that receives, per scale,
        the conditional / unconditional / guided logits (for tests and notebooks).
    """
    _check_args(model, labels_B, cfg, top_k, top_p)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    labels_B = labels_B.to(dev)
    B, K = labels_B.shape[0], len(model.config.patch_nums)
    g = None if seed is None else torch.Generator(dev).manual_seed(int(seed))
    guided = cfg > 0
    labels = torch.cat((labels_B, torch.full_like(labels_B, model.num_classes))) if guided else labels_B
    state, x_BlC = model.start(labels, rescan_mamba=rescan_mamba)
    f_hat = vae.empty_fhat(B, device=dev)
    indices = []
    for k in range(K):
        logits = model.step(state, x_BlC)
        t = cfg * k / (K - 1)
        mixed = (1 + t) * logits[:B] - t * logits[B:] if guided else logits
        if trace is not None:
            trace.append({"cond": logits[:B], "uncond": logits[B:] if guided else None, "guided": mixed})
        idx_Bl = sample_top_k_top_p(mixed, top_k, top_p, g)
        if force is not None:
            idx_Bl = force(k, idx_Bl)
        indices.append(idx_Bl)
        codes = idx_Bl
        if more_smooth:  # soft mixture of codebook vectors (Gumbel-softmax, temperature falls with k)
            ratio = k / (K - 1)
            tau = max(0.27 * (1 - 0.95 * ratio), 0.005)
            gumbel = -torch.empty_like(mixed).exponential_(generator=g).log()
            codes = ((mixed * (1 + ratio) + gumbel) / tau).softmax(-1) @ vae.quantize.embedding.weight
        f_hat, nxt = vae.next_input(f_hat, k, codes)
        if nxt is not None:
            x_BlC = model.scale_input(state, nxt)
            if guided:
                x_BlC = torch.cat((x_BlC, x_BlC))
    model.train(was_training)
    images = vae.fhat_to_img(f_hat).add_(1).mul_(0.5)
    return (images, indices) if return_indices else images


def scale_masks(mask, patch_nums) -> list[torch.Tensor]:
    """Per scale, bool (B, pn^2): True where at least half of the token's area is masked."""
    m = mask.float()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) >= 0.5 for pn in patch_nums]


@torch.no_grad()
def edit(model, vae, images, mask, labels_B, cfg=1.5, top_k=900, top_p=0.96, seed=None, return_indices=False):
    """Zero-shot in-painting / out-painting / class-conditional editing (VAR Sec. 4.4).

    images: (B, 3, H, W) in [-1, 1]; mask: (H, W), (B, H, W) or (B, 1, H, W), 1 = regenerate.
    At every scale the tokens outside the (downsampled) mask are forced to the image's own codes,
    the ones inside are sampled from the model conditioned on ``labels_B``.
    """
    gt = vae.encode(images.to(next(model.parameters()).device))
    masks = [m.to(gt[0].device) for m in scale_masks(mask.to(images.device), model.config.patch_nums)]
    if masks[0].shape[0] not in (1, gt[0].shape[0]):
        raise ValueError(f"mask batch {masks[0].shape[0]} does not match {gt[0].shape[0]} images")
    force = lambda k, idx: torch.where(masks[k], idx, gt[k])  # noqa: E731
    return generate(model, vae, labels_B, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed,
                    return_indices=return_indices, force=force)
