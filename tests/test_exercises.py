"""Every notebook checker (minivar/teaching/exercises.py) passes on a reference solution with the exact line the
notebooks store, and fails on the blank stub, on a function that returns None, on typical wrong answers (with a
message that names the mistake), on an answer that looks up minivar's (or scipy's) own implementation, and on
the right values in the wrong shape or type. The reference solutions below never call the package's
implementation of what they are asked to write."""
import inspect
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():  # before the first @triton.jit below: the kernels run in Triton's interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from minivar import scales
from minivar.scales import offsets as _package_offsets
from minivar.teaching import exercises as ex

device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"


def blank(*args):
    raise NotImplementedError


def returns_none(*args):
    return None


# ============================================================================= reference solutions
def coarse_decode(vae, indices, k):
    return vae.fhat_to_img(vae.quantize.indices_to_fhat(indices[:k]))


def mamba_fraction(model):
    from minivar.models.mamba2 import Mamba2
    inside = sum(p.numel() for m in model.modules() if isinstance(m, Mamba2) for p in m.parameters())
    return inside / sum(p.numel() for p in model.parameters())


def welch_t(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def accumulation(global_batch, gpus, max_micro):
    if global_batch % gpus:
        raise ValueError("global batch must split evenly over the GPUs")
    per = global_batch // gpus
    micro = max(m for m in range(1, max_micro + 1) if per % m == 0)
    return micro, per // micro


def offsets(pns):
    out = [0]
    for p in pns:
        out.append(out[-1] + p * p)
    return out


def sid(pns):
    return torch.cat([torch.full((p * p,), k) for k, p in enumerate(pns)])


def block_causal(pns):
    s = sid(pns)
    return s[:, None] >= s[None, :]


def block_diagonal(pns):
    s = sid(pns)
    return s[:, None] == s[None, :]


def residual_quantize(q, f):
    B, C, side, _ = f.shape
    f_rest, out = f.clone(), []
    for k, pn in enumerate(q.patch_nums):
        z = F.interpolate(f_rest, size=(pn, pn), mode="area") if pn != side else f_rest
        z_NC = z.permute(0, 2, 3, 1).reshape(-1, C)
        idx = torch.cdist(z_NC, q.embedding.weight).argmin(1).view(B, pn * pn)
        h = q.embedding(idx).transpose(1, 2).reshape(B, C, pn, pn)
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f_rest = f_rest - q.phi(k, h)
        out.append(idx)
    return out


def adaln(x, scale, shift):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift


def cfg_mix(cond, uncond, cfg, k, K):
    t = cfg * k / (K - 1)
    return (1 + t) * cond - t * uncond


def top_p_keep(probs, p):
    vals, order = probs.sort(descending=True)
    keep_sorted = (vals.cumsum(0) - vals) < p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def ssd_step(h, x, dt, A, B, C):
    h = torch.exp(dt * A)[..., None, None] * h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    y = (h @ C[:, None, :, None]).squeeze(-1)
    return y, h


def rescan(pns):
    return sum(offsets(pns)[1:])


def key_range(offsets, t, mode):  # the parameter is named like scales.offsets, as in the notebook
    k = max(i for i in range(len(offsets) - 1) if offsets[i] <= t)
    return (0 if mode == "causal" else offsets[k]), offsets[k + 1]


def mmd2_unbiased(x, y):
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * kxy.mean()


def scale_masks(mask, pns):
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) >= 0.5 for pn in pns]


def teacher_input(q, indices):
    side = q.patch_nums[-1]
    f_hat, rows = 0, []
    for k in range(1, len(q.patch_nums)):
        j = k - 1  # add the scale before k to f_hat
        f_hat = f_hat + q.upsample_phi(j, q.codes_to_map(indices[j], q.patch_nums[j]), side)
        pn = q.patch_nums[k]
        x = F.interpolate(f_hat, size=(pn, pn), mode="area")
        rows.append(x.flatten(2).transpose(1, 2))  # (B, Cv, pn, pn) -> (B, pn*pn, Cv)
    return torch.cat(rows, dim=1)


def scale_loss_acc(logits, targets, patch_nums):
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none").view(B, L)
    hit = (logits.argmax(-1) == targets).float()
    losses, accs, begin = [], [], 0
    for pn in patch_nums:
        end = begin + pn * pn
        losses.append(ce[:, begin:end].mean())
        accs.append(hit[:, begin:end].mean())
        begin = end
    return torch.stack(losses), torch.stack(accs)


def cached_attention(q, k, v, cache_k, cache_v):
    keys = torch.cat((cache_k, k), dim=2)  # the earlier scales, then this one
    values = torch.cat((cache_v, v), dim=2)
    weights = (q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return weights @ values, keys, values


def mvar_block(block, x, cond):
    C = x.shape[-1]
    vecs = block.ada_lin(cond).view(-1, 1, 9, C)  # [gates | scales | shifts], 3 of each
    for i, f in enumerate((block.attn, block.mamba, block.ffn)):
        gate, scale, shift = vecs[:, :, i], vecs[:, :, 3 + i], vecs[:, :, 6 + i]
        h = F.layer_norm(x, (C,), eps=block.eps) * (1 + scale) + shift
        x = x + gate * f(h)
    return x


@triton.jit
def row_attention_kernel(Q, K, V, O, LO, HI, scale, D: tl.constexpr, BLOCK_N: tl.constexpr):
    t = tl.program_id(0)  # one program per query row
    d = tl.arange(0, D)
    lo = tl.load(LO + t)
    hi = tl.load(HI + t)
    q = tl.load(Q + t * D + d)
    m = tl.full([1], float("-inf"), tl.float32)  # running max of the scores
    total = tl.zeros([1], tl.float32)  # running sum of exp(score - m)
    acc = tl.zeros([D], tl.float32)  # running sum of exp(score - m) * v
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        ok = cols < hi
        k = tl.load(K + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        s = tl.where(ok, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        alpha = tl.exp(m - m_new)  # rescales what was summed under the old max
        p = tl.exp(s - m_new)
        v = tl.load(V + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        total = total * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    tl.store(O + t * D + d, acc / total)


def row_attention(q, k, v, offsets, mode, block_n):
    L, D = q.shape
    lo, hi = [], []
    for t in range(L):
        s = max(i for i in range(len(offsets) - 1) if offsets[i] <= t)  # t's scale
        lo.append(0 if mode == "causal" else offsets[s])
        hi.append(offsets[s + 1])
    q, k, v = (x.to(device).contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    row_attention_kernel[(L,)](q, k, v, out, torch.tensor(lo, dtype=torch.int32, device=device),
                               torch.tensor(hi, dtype=torch.int32, device=device), D ** -0.5, D=D, BLOCK_N=block_n)
    return out.cpu()


# ============================================================================= typical mistakes
# 00 coarse decode
def coarse_decode_off_by_one(vae, idx, k):  # k scales means indices 0..k-1, not 0..k
    return vae.fhat_to_img(vae.quantize.indices_to_fhat(idx[:k + 1]))


def coarse_decode_zero_codes(vae, idx, k):  # code 0 is a real code, not "nothing"
    rest = [i if j < k else torch.zeros_like(i) for j, i in enumerate(idx)]
    return vae.fhat_to_img(vae.quantize.indices_to_fhat(rest))


def coarse_decode_scale_alone(vae, idx, k):
    q = vae.quantize
    h = q.upsample_phi(k - 1, q.codes_to_map(idx[k - 1], vae.patch_nums[k - 1]), vae.patch_nums[-1])
    return vae.fhat_to_img(h)


def coarse_decode_unit_range(vae, idx, k):
    return (coarse_decode(vae, idx, k) + 1) / 2


# 00 mamba fraction
def mamba_percent(model):
    return 100 * mamba_fraction(model)


def mamba_tensors(model):
    from minivar.models.mamba2 import Mamba2
    inside = [p for m in model.modules() if isinstance(m, Mamba2) for p in m.parameters()]
    return len(inside) / len(list(model.parameters()))


def mamba_over_rest(model):
    f = mamba_fraction(model)
    return f / (1 - f)


def mamba_by_name(model):  # works on NextScaleTransformer, not on any model
    inside = sum(p.numel() for n, p in model.named_parameters() if ".mamba." in n)
    return inside / sum(p.numel() for p in model.parameters())


def mamba_first_layer_only(model):
    from minivar.models.mamba2 import Mamba2
    first = next(m for m in model.modules() if isinstance(m, Mamba2))
    return sum(p.numel() for p in first.parameters()) / sum(p.numel() for p in model.parameters())


# 09 welch
def welch_t_population(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))


def welch_t_flipped(a, b):
    return -welch_t(a, b)


def welch_t_pooled(a, b):
    a, b = np.asarray(a), np.asarray(b)
    na, nb = len(a), len(b)
    sp2 = ((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2)
    return (a.mean() - b.mean()) / np.sqrt(sp2 * (1 / na + 1 / nb))


def welch_t_std(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.std(ddof=1) / len(a) + b.std(ddof=1) / len(b))


# 10 accumulation
def accumulation_ignoring_gpus(global_batch, gpus, max_micro):
    micro = max(m for m in range(1, max_micro + 1) if global_batch % m == 0)
    return micro, global_batch // micro


def accumulation_true_division(global_batch, gpus, max_micro):
    if global_batch % gpus:
        raise ValueError("uneven")
    per = global_batch / gpus
    micro = max(m for m in range(1, max_micro + 1) if per % m == 0)
    return micro, per / micro


def accumulation_not_a_divisor(global_batch, gpus, max_micro):
    if global_batch % gpus:
        raise ValueError("uneven")
    per = global_batch // gpus
    micro = min(max_micro, per)
    return micro, -(-per // micro)


def accumulation_no_check(global_batch, gpus, max_micro):
    per = global_batch // gpus
    micro = max(m for m in range(1, max_micro + 1) if per % m == 0)
    return micro, per // micro


def accumulation_assert(global_batch, gpus, max_micro):
    assert global_batch % gpus == 0, "uneven"
    return accumulation(global_batch, gpus, max_micro)


def accumulation_too_eager(global_batch, gpus, max_micro):  # refuses a batch that does split
    if global_batch % (gpus * max_micro):
        raise ValueError("uneven")
    return accumulation(global_batch, gpus, max_micro)


def accumulation_too_big(global_batch, gpus, max_micro):  # ignores max_micro
    if global_batch % gpus:
        raise ValueError("uneven")
    return global_batch // gpus, 1


def accumulation_smallest(global_batch, gpus, max_micro):  # micro = 1 always works, but slowly
    if global_batch % gpus:
        raise ValueError("uneven")
    return 1, global_batch // gpus


# 01 offsets and masks
def offsets_of_sides(pns):
    return [0, *[sum(pns[:k + 1]) for k in range(len(pns))]]


def offsets_without_zero(pns):
    return offsets(pns)[1:]


def offsets_without_end(pns):
    return offsets(pns)[:-1]


def offsets_summed_twice(pns):
    out, total = [], 0
    for v in offsets(pns):
        total += v
        out.append(total)
    return out


def gpt_mask(pns):
    L = sum(p * p for p in pns)
    return torch.ones(L, L, dtype=torch.bool).tril()


def block_causal_strict(pns):
    s = sid(pns)
    return s[:, None] > s[None, :]


def block_causal_swapped(pns):
    return ~block_causal(pns)


def block_causal_transposed(pns):
    return block_causal(pns).T


def diagonal_identity(pns):
    return torch.eye(sum(p * p for p in pns), dtype=torch.bool)


def diagonal_causal_inside(pns):
    return block_diagonal(pns).tril()


# 02 residual quantisation
def _rq(q, f, down="area", up="bicubic", use_phi=True, phis_k=False, update=True):
    B, C, side, _ = f.shape
    f_rest, out = f.clone(), []
    for k, pn in enumerate(q.patch_nums):
        z = F.interpolate(f_rest, size=(pn, pn), mode=down) if pn != side else f_rest
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, C), q.embedding.weight).argmin(1).view(B, pn * pn)
        h = q.embedding(idx).transpose(1, 2).reshape(B, C, pn, pn)
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode=up)
        if use_phi:
            h = q.phis[k](h) if phis_k else q.phi(k, h)
        if update:
            f_rest = f_rest - h
        out.append(idx)
    return out


def quantize_without_phi(q, f):
    return _rq(q, f, use_phi=False)


def quantize_phis_k(q, f):  # q.phis[k] instead of q.phi(k, h)
    return _rq(q, f, phis_k=True)


def quantize_no_update(q, f):
    return _rq(q, f, update=False)


def quantize_nearest_down(q, f):
    return _rq(q, f, down="nearest")


def quantize_bilinear_up(q, f):
    return _rq(q, f, up="bilinear")


def quantize_bilinear_down(q, f):
    return _rq(q, f, down="bilinear")


def quantize_nearest_up(q, f):
    return _rq(q, f, up="nearest")


# 03 adaln
def adaln_without_norm(x, scale, shift):
    return x * (1 + scale) + shift


def adaln_times_scale(x, scale, shift):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * scale + shift


def adaln_swapped(x, scale, shift):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + shift) + scale


def adaln_default_eps(x, scale, shift):
    return F.layer_norm(x, x.shape[-1:]) * (1 + scale) + shift


def adaln_unbiased(x, scale, shift):
    ln = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6).sqrt()
    return ln * (1 + scale) + shift


def adaln_over_tokens(x, scale, shift):
    ln = F.layer_norm(x.transpose(1, 2), x.shape[1:2], eps=1e-6).transpose(1, 2)
    return ln * (1 + scale) + shift


# 04 sampling
def cfg_without_ramp(cond, uncond, cfg, k, K):
    return (1 + cfg) * cond - cfg * uncond


def cfg_ramp_over_K(cond, uncond, cfg, k, K):
    t = cfg * k / K
    return (1 + t) * cond - t * uncond


def cfg_reversed_ramp(cond, uncond, cfg, k, K):
    t = cfg * (K - 1 - k) / (K - 1)
    return (1 + t) * cond - t * uncond


def cfg_swapped(cond, uncond, cfg, k, K):
    return cfg_mix(uncond, cond, cfg, k, K)


def cfg_plus_uncond(cond, uncond, cfg, k, K):
    return cond + cfg * k / (K - 1) * uncond


def top_p_inclusive(probs, p):  # keeps tokens while the cumulative mass *including* them is < p
    vals, order = probs.sort(descending=True)
    keep_sorted = vals.cumsum(0) < p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def top_p_at_most(probs, p):  # <= keeps the token whose preceding mass equals top_p exactly
    vals, order = probs.sort(descending=True)
    keep_sorted = (vals.cumsum(0) - vals) <= p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def top_p_sorted_order(probs, p):
    vals, _ = probs.sort(descending=True)
    return (vals.cumsum(0) - vals) < p


def top_p_swapped(probs, p):
    return ~top_p_keep(probs, p)


# 05 mamba step
def ssd_step_without_dt(h, x, dt, A, B, C):
    h = torch.exp(dt * A)[..., None, None] * h + x[..., None] * B[:, None, None, :]
    return (h @ C[:, None, :, None]).squeeze(-1), h


def ssd_step_exp_A(h, x, dt, A, B, C):
    h = torch.exp(A)[:, None, None] * h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    return (h @ C[:, None, :, None]).squeeze(-1), h


def ssd_step_minus_A(h, x, dt, A, B, C):
    h = torch.exp(-dt * A)[..., None, None] * h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    return (h @ C[:, None, :, None]).squeeze(-1), h


def ssd_step_B_C_swapped(h, x, dt, A, B, C):
    return ssd_step(h, x, dt, A, C, B)


def ssd_step_old_state(h, x, dt, A, B, C):
    y = (h @ C[:, None, :, None]).squeeze(-1)
    return y, ssd_step(h, x, dt, A, B, C)[1]


def ssd_step_y_with_B(h, x, dt, A, B, C):
    h = ssd_step(h, x, dt, A, B, C)[1]
    return (h @ B[:, None, :, None]).squeeze(-1), h


def ssd_step_order(h, x, dt, A, B, C):
    y, h = ssd_step(h, x, dt, A, B, C)
    return h, y


# 06 rescan
def rescan_cached(pns):
    return sum(p * p for p in pns)


def rescan_without_last(pns):
    return sum(offsets(pns)[1:-1])


def rescan_all_every_step(pns):
    return len(pns) * sum(p * p for p in pns)


# 07 key range
def key_range_inclusive(offs, t, mode):
    lo, hi = key_range(offs, t, mode)
    return lo, hi - 1


def key_range_boundary(offs, t, mode):  # < instead of <=: the first token of a scale lands in the previous one
    k = max([i for i in range(len(offs) - 1) if offs[i] < t] or [0])
    return (0 if mode == "causal" else offs[k]), offs[k + 1]


def key_range_modes_swapped(offs, t, mode):
    return key_range(offs, t, "intra" if mode == "causal" else "causal")


def key_range_intra_from_zero(offs, t, mode):
    return 0, key_range(offs, t, mode)[1]


def key_range_to_the_end(offs, t, mode):
    return key_range(offs, t, mode)[0], offs[-1]


def key_range_token_causal(offs, t, mode):
    return key_range(offs, t, mode)[0], t + 1


# 08 mmd
def mmd2_biased(x, y):  # keeps the diagonal k(x_i, x_i) in the within-set means
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def mmd2_no_d(x, y):
    m = len(x)
    kxx, kyy, kxy = ((a @ b.T + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * kxy.mean()


def mmd2_m_squared(x, y):
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / m ** 2 - 2 * kxy.mean()


def mmd2_cross_without_diagonal(x, y):
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * off(kxy)


# 11 scale masks
def scale_masks_strict(mask, pns):  # > 0.5: a token exactly half masked is kept
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) > 0.5 for pn in pns]


def scale_masks_any(mask, pns):
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) > 0 for pn in pns]


def scale_masks_transposed(mask, pns):
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").transpose(-1, -2).flatten(1) >= 0.5 for pn in pns]


def scale_masks_nearest(mask, pns):
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="nearest").flatten(1) >= 0.5 for pn in pns]


def scale_masks_swapped(mask, pns):
    return [~m for m in scale_masks(mask, pns)]


# 03 teacher input
def _teacher_input(q, indices, down="area", use_phi=True, after=False, first=1):
    side, pns = q.patch_nums[-1], q.patch_nums
    f_hats, f_hat = [], 0
    for j, pn in enumerate(pns):
        h = q.codes_to_map(indices[j], pn)
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f_hat = f_hat + (q.phi(j, h) if use_phi else h)
        f_hats.append(f_hat)
    rows = []
    for k in range(first, len(pns)):
        f = f_hats[k] if after else (f_hats[k - 1] if k else torch.zeros_like(f_hats[0]))
        x = F.interpolate(f, size=(pns[k], pns[k]), mode=down)
        rows.append(x.flatten(2).transpose(1, 2))
    return torch.cat(rows, dim=1)


def teacher_input_leak(q, indices):  # f_hat after scales <= k: holds the answer
    return _teacher_input(q, indices, after=True)


def teacher_input_all_rows(q, indices):  # a row for every token, scale 0 included
    return _teacher_input(q, indices, first=0)


def teacher_input_nearest(q, indices):
    return _teacher_input(q, indices, down="nearest")


def teacher_input_bilinear(q, indices):
    return _teacher_input(q, indices, down="bilinear")


def teacher_input_without_phi(q, indices):
    return _teacher_input(q, indices, use_phi=False)


def teacher_input_channels_first(q, indices):
    return teacher_input(q, indices).transpose(1, 2)


# 03 per-scale loss and accuracy
def _per_scale(logits, targets, patch_nums, reduce_loss=torch.mean, reduce_acc=torch.mean, sizes=None):
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none").view(B, L)
    hit = (logits.argmax(-1) == targets).float()
    losses, accs, begin = [], [], 0
    for n in (sizes or [pn * pn for pn in patch_nums]):
        losses.append(reduce_loss(ce[:, begin:begin + n]))
        accs.append(reduce_acc(hit[:, begin:begin + n]))
        begin += n
    return torch.stack(losses), torch.stack(accs)


def scale_acc_count(logits, targets, patch_nums):
    return _per_scale(logits, targets, patch_nums, reduce_acc=torch.sum)


def scale_loss_summed(logits, targets, patch_nums):
    return _per_scale(logits, targets, patch_nums, reduce_loss=torch.sum)


def scale_loss_global(logits, targets, patch_nums):
    loss, acc = _per_scale(logits, targets, patch_nums, sizes=[logits.shape[1]])
    return loss.repeat(len(patch_nums)), acc.repeat(len(patch_nums))


def scale_loss_split_by_pn(logits, targets, patch_nums):
    return _per_scale(logits, targets, patch_nums, sizes=list(patch_nums))


def scale_acc_percent(logits, targets, patch_nums):
    loss, acc = scale_loss_acc(logits, targets, patch_nums)
    return loss, 100 * acc


# 04 cached attention
def cached_attention_cache_only(q, k, v, cache_k, cache_v):
    weights = (q @ cache_k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return weights @ cache_v, torch.cat((cache_k, k), 2), torch.cat((cache_v, v), 2)


def cached_attention_unscaled(q, k, v, cache_k, cache_v):
    keys, values = torch.cat((cache_k, k), 2), torch.cat((cache_v, v), 2)
    return (q @ keys.transpose(-1, -2)).softmax(dim=-1) @ values, keys, values


def cached_attention_not_updated(q, k, v, cache_k, cache_v):
    out = cached_attention(q, k, v, cache_k, cache_v)[0]
    return out, cache_k, cache_v


def cached_attention_softmax_over_queries(q, k, v, cache_k, cache_v):
    keys, values = torch.cat((cache_k, k), 2), torch.cat((cache_v, v), 2)
    return (q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-2) @ values, keys, values


def cached_attention_own_scale_only(q, k, v, cache_k, cache_v):
    out = F.scaled_dot_product_attention(q, k, v)
    return out, torch.cat((cache_k, k), 2), torch.cat((cache_v, v), 2)


def cached_attention_is_causal(q, k, v, cache_k, cache_v):
    keys, values = torch.cat((cache_k, k), 2), torch.cat((cache_v, v), 2)
    return F.scaled_dot_product_attention(q, keys, values, is_causal=True), keys, values


def cached_attention_new_only(q, k, v, cache_k, cache_v):  # the cache forgets the earlier scales
    out = cached_attention(q, k, v, cache_k, cache_v)[0]
    return out, k, v


# 06 M-VAR block
def _mvar(block, x, cond, per_sublayer=False, one_plus=True, order=(0, 1, 2), residual=True, eps=None):
    C = x.shape[-1]
    vecs = block.ada_lin(cond).view(-1, 1, 9, C)
    fns = (block.attn, block.mamba, block.ffn)
    for pos, i in enumerate(order):
        j = pos if per_sublayer else i
        if per_sublayer:
            gate, scale, shift = vecs[:, :, 3 * j], vecs[:, :, 3 * j + 1], vecs[:, :, 3 * j + 2]
        else:
            gate, scale, shift = vecs[:, :, j], vecs[:, :, 3 + j], vecs[:, :, 6 + j]
        h = F.layer_norm(x, (C,), eps=block.eps if eps is None else eps) * ((1 + scale) if one_plus else scale) + shift
        y = gate * fns[i](h)
        x = x + y if residual else y
    return x


def mvar_block_per_sublayer(block, x, cond):
    return _mvar(block, x, cond, per_sublayer=True)


def mvar_block_times_scale(block, x, cond):
    return _mvar(block, x, cond, one_plus=False)


def mvar_block_ffn_before_mamba(block, x, cond):
    return _mvar(block, x, cond, order=(0, 2, 1))


def mvar_block_no_residual(block, x, cond):
    return _mvar(block, x, cond, residual=False)


def mvar_block_default_eps(block, x, cond):
    return _mvar(block, x, cond, eps=1e-5)


def mvar_block_fixed_eps(block, x, cond):
    return _mvar(block, x, cond, eps=1e-6)


# 07 the Triton row kernel
@triton.jit
def _row_kernel_no_rescale(Q, K, V, O, LO, HI, scale, D: tl.constexpr, BLOCK_N: tl.constexpr):
    t = tl.program_id(0)
    d = tl.arange(0, D)
    lo = tl.load(LO + t)
    hi = tl.load(HI + t)
    q = tl.load(Q + t * D + d)
    m = tl.full([1], float("-inf"), tl.float32)
    total = tl.zeros([1], tl.float32)
    acc = tl.zeros([D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        ok = cols < hi
        k = tl.load(K + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        s = tl.where(ok, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        m = tl.maximum(m, tl.max(s, axis=0))
        p = tl.exp(s - m)  # what was summed under the old max is never rescaled
        v = tl.load(V + cols[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
        total = total + tl.sum(p, axis=0)
        acc = acc + tl.sum(p[:, None] * v, axis=0)
    tl.store(O + t * D + d, acc / total)


def _launch(kernel, q, k, v, lo, hi, scale, block_n):
    L, D = q.shape
    out = torch.empty_like(q)
    kernel[(L,)](q.contiguous(), k.contiguous(), v.contiguous(), out, torch.tensor(lo, dtype=torch.int32),
                 torch.tensor(hi, dtype=torch.int32), scale, D=D, BLOCK_N=block_n)
    return out


def _ranges(offsets, mode, L):
    return tuple(zip(*(key_range(offsets, t, mode) for t in range(L))))


def triton_no_rescale(q, k, v, offsets, mode, block_n):
    return _launch(_row_kernel_no_rescale, q, k, v, *_ranges(offsets, mode, q.shape[0]), q.shape[1] ** -0.5, block_n)


def triton_hi_off_by_one(q, k, v, offsets, mode, block_n):
    lo, hi = _ranges(offsets, mode, q.shape[0])
    with np.errstate(invalid="ignore"):  # a one-token range becomes empty: 0 / 0
        return _launch(row_attention_kernel, q, k, v, lo, [h - 1 for h in hi], q.shape[1] ** -0.5, block_n)


def triton_intra_from_zero(q, k, v, offsets, mode, block_n):
    lo, hi = _ranges(offsets, mode, q.shape[0])
    return _launch(row_attention_kernel, q, k, v, [0] * len(lo), hi, q.shape[1] ** -0.5, block_n)


def triton_unscaled(q, k, v, offsets, mode, block_n):
    return _launch(row_attention_kernel, q, k, v, *_ranges(offsets, mode, q.shape[0]), 1.0, block_n)


def triton_in_plain_torch(q, k, v, offsets, mode, block_n):  # right numbers, but no kernel
    lo, hi = _ranges(offsets, mode, q.shape[0])
    cols = torch.arange(q.shape[0])
    allowed = (cols[None] >= torch.tensor(lo)[:, None]) & (cols[None] < torch.tensor(hi)[:, None])
    w = torch.exp((q @ k.T * q.shape[1] ** -0.5).masked_fill(~allowed, float("-inf")))
    return (w / w.sum(-1, keepdim=True)) @ v


# ============================================================================= lookups
def coarse_decode_lookup(vae, indices, k):
    return vae.decode_per_scale(indices)[k - 1]


def coarse_decode_full_lookup(vae, indices, k):
    return vae.decode(indices[:k] + [torch.zeros_like(i) for i in indices[k:]])


def coarse_decode_dynamic_lookup(vae, indices, k):  # hidden from the source check: the tokenizer refuses
    return getattr(vae, "decode_" + "per_scale")(indices)[k - 1]


def welch_t_lookup(a, b):
    import scipy.stats
    return scipy.stats.ttest_ind(a, b, equal_var=False).statistic


def welch_t_imported(a, b):
    from scipy.stats import ttest_ind as tt
    return tt(a, b, equal_var=False)[0]


def offsets_lookup(pns):
    return scales.offsets(pns)


def offsets_imported(pns):
    from minivar.scales import offsets as o
    return o(pns)


def offsets_getattr(pns):
    return getattr(scales, "offsets")(pns)


def offsets_alias(pns):  # an alias imported at the top of this file
    return _package_offsets(pns)


def _offsets_helper(pns):
    return list(scales.offsets(pns))


def offsets_via_helper(pns):
    return _offsets_helper(pns)


def block_causal_lookup(pns):
    return scales.block_causal_mask(pns)


def block_causal_kernel_lookup(pns):
    from minivar.kernels.scale_attention import scale_mask
    return scale_mask(torch.tensor(offsets(pns)), "causal")


def block_diagonal_lookup(pns):
    return scales.block_diagonal_mask(pns)


def quantize_lookup(q, f):
    return q.quantize(f)


def quantize_forward_lookup(q, f):  # q(f) runs MultiScaleQuantizer.forward: the quantiser refuses
    return q(f).indices


def quantize_dynamic_lookup(q, f):
    return getattr(q, "quan" + "tize")(f)


def adaln_lookup(x, scale, shift):
    from types import SimpleNamespace

    from minivar.models.blocks import AdaLNBlock
    me = SimpleNamespace(eps=1e-6, drop_p=0.0, training=False)
    return AdaLNBlock.sublayer(me, torch.zeros_like(x), lambda h: h, (torch.ones_like(scale), scale, shift))


def top_p_lookup(probs, p):
    from minivar.sample import top_k_top_p_candidates
    vals, cand = top_k_top_p_candidates(probs.log()[None], 0, p)
    keep = torch.zeros(len(probs), dtype=torch.bool)
    keep[cand[0][vals[0].isfinite()]] = True
    return keep


def ssd_step_lookup(h, x, dt, A, B, C):
    from minivar.models import mamba2
    y, h = mamba2.ssd_sequential(x[:, None], dt[:, None], A, B[:, None, None], C[:, None, None], h_BHPN=h)
    return y[:, 0], h


def key_range_lookup(offsets, t, mode):
    from minivar.models.attention import _spans
    pns = tuple(int(round((b - a) ** 0.5)) for a, b in zip(offsets, offsets[1:]))
    for b, e, kb in _spans(pns, mode):
        if b <= t < e:
            return kb, e


def mmd2_lookup(x, y):
    from minivar.evaluation import metrics
    return metrics.kid(x, y, num_subsets=1, subset_size=len(x))[0]


def scale_masks_lookup(mask, pns):
    from minivar.sample import scale_masks as sm
    return sm(mask, pns)


def teacher_input_lookup(q, indices):
    return q.teacher_input(indices)


def teacher_input_next_input_lookup(q, indices):
    f_hat, rows = torch.zeros(indices[0].shape[0], q.c, q.patch_nums[-1], q.patch_nums[-1]), []
    for k in range(len(indices) - 1):
        f_hat, x = q.next_input(f_hat, k, indices[k])
        rows.append(x)
    return torch.cat(rows, 1)


def teacher_input_dynamic_lookup(q, indices):  # hidden from the source check: the quantiser refuses
    return getattr(q, "teacher_" + "input")(indices)


def scale_loss_lookup(logits, targets, patch_nums):
    from minivar.models.losses import next_scale_loss
    stats = next_scale_loss(logits, targets, patch_nums)
    return torch.tensor(stats["scale_loss"]), torch.tensor(stats["scale_acc"])


def scale_loss_stats_lookup(logits, targets, patch_nums):
    from minivar.models import losses
    B, L, V = logits.shape
    ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none").view(B, L)
    stats = losses.loss_stats(ce, logits.argmax(-1) == targets, patch_nums)
    return torch.tensor(stats["scale_loss"]), torch.tensor(stats["scale_acc"])


def cached_attention_kvcache_lookup(q, k, v, cache_k, cache_v):
    from minivar.models.caches import KVCache
    cache = KVCache(capacity=cache_k.shape[2] + k.shape[2])
    cache.append(cache_k, cache_v)
    keys, values = cache.append(k, v)
    return F.scaled_dot_product_attention(q, keys, values), keys.clone(), values.clone()


def mvar_block_call_lookup(block, x, cond):  # block(x, cond) runs MVARBlock.forward: the block refuses
    return block(x, cond)


def mvar_block_sublayer_lookup(block, x, cond):
    vecs = block.ada_lin(cond).view(-1, 1, 9, x.shape[-1])
    for i, f in enumerate((block.attn, block.mamba, block.ffn)):
        x = block.sublayer(x, f, (vecs[:, :, i], vecs[:, :, 3 + i], vecs[:, :, 6 + i]))
    return x


def mvar_block_unbound_lookup(block, x, cond):  # the class's own forward still calls the refusing methods
    from minivar.models.blocks import MVARBlock
    return MVARBlock.forward(block, x, cond)


def triton_sdpa_lookup(q, k, v, offsets, mode, block_n):
    lo, hi = _ranges(offsets, mode, q.shape[0])
    cols = torch.arange(q.shape[0])
    allowed = (cols[None] >= torch.tensor(lo)[:, None]) & (cols[None] < torch.tensor(hi)[:, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def triton_softmax_lookup(q, k, v, offsets, mode, block_n):
    lo, hi = _ranges(offsets, mode, q.shape[0])
    cols = torch.arange(q.shape[0])
    allowed = (cols[None] >= torch.tensor(lo)[:, None]) & (cols[None] < torch.tensor(hi)[:, None])
    return (q @ k.T * q.shape[1] ** -0.5).masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def triton_imported_softmax_lookup(q, k, v, offsets, mode, block_n):
    from torch.nn.functional import softmax as sm
    lo, hi = _ranges(offsets, mode, q.shape[0])
    cols = torch.arange(q.shape[0])
    allowed = (cols[None] >= torch.tensor(lo)[:, None]) & (cols[None] < torch.tensor(hi)[:, None])
    return sm((q @ k.T * q.shape[1] ** -0.5).masked_fill(~allowed, float("-inf")), -1) @ v


def triton_minivar_lookup(q, k, v, offsets, mode, block_n):
    from minivar.kernels.scale_attention import scale_attention as sa
    out = sa(q[None, None], k[None, None], v[None, None], torch.tensor(offsets), mode, q.shape[1] ** -0.5)
    return out[0, 0]


# ============================================================================= right values, wrong shape / type
def coarse_decode_batched(vae, indices, k):
    return coarse_decode(vae, indices, k)[None]


def coarse_decode_double(vae, indices, k):
    return coarse_decode(vae, indices, k).double()


def coarse_decode_cumulative_list(vae, indices, k):
    return [vae.fhat_to_img(f) for f in vae.quantize.indices_to_fhat(indices[:k], cumulative=True)]


def mamba_fraction_list(model):
    return [mamba_fraction(model)]


def mamba_fraction_1d(model):
    return torch.tensor([mamba_fraction(model)])


def welch_t_array(a, b):
    return np.array([welch_t(a, b)])


def welch_t_pair(a, b):
    return welch_t(a, b), 0.05


def accumulation_list(global_batch, gpus, max_micro):
    return list(accumulation(global_batch, gpus, max_micro))


def accumulation_floats(global_batch, gpus, max_micro):
    return tuple(float(v) for v in accumulation(global_batch, gpus, max_micro))


def offsets_tuple(pns):
    return tuple(offsets(pns))


def offsets_tensor(pns):
    return torch.tensor(offsets(pns))


def offsets_numpy_ints(pns):
    return list(np.cumsum([0] + [p * p for p in pns]))


def block_causal_int(pns):
    return block_causal(pns).long()


def block_causal_numpy(pns):
    return block_causal(pns).numpy()


def block_causal_batched(pns):
    return block_causal(pns)[None]


def block_diagonal_float(pns):
    return block_diagonal(pns).float()


def quantize_int32(q, f):
    return [i.int() for i in residual_quantize(q, f)]


def quantize_square(q, f):
    return [i.view(i.shape[0], int(i.shape[1] ** 0.5), -1) for i in residual_quantize(q, f)]


def quantize_tuple(q, f):
    return tuple(residual_quantize(q, f))


def adaln_double(x, scale, shift):
    return adaln(x, scale, shift).double()


def adaln_flat(x, scale, shift):
    return adaln(x, scale, shift).reshape(-1, x.shape[-1])


def cfg_double(cond, uncond, cfg, k, K):
    return cfg_mix(cond, uncond, cfg, k, K).double()


def cfg_numpy(cond, uncond, cfg, k, K):
    return cfg_mix(cond, uncond, cfg, k, K).numpy()


def top_p_list(probs, p):
    return top_p_keep(probs, p).tolist()


def top_p_ints(probs, p):
    return top_p_keep(probs, p).long()


def top_p_row(probs, p):
    return top_p_keep(probs, p)[None]


def ssd_step_keepdim(h, x, dt, A, B, C):
    y, h = ssd_step(h, x, dt, A, B, C)
    return y[..., None], h


def ssd_step_list(h, x, dt, A, B, C):
    return list(ssd_step(h, x, dt, A, B, C))


def ssd_step_double(h, x, dt, A, B, C):
    return tuple(t.double() for t in ssd_step(h, x, dt, A, B, C))


def rescan_float(pns):
    return float(rescan(pns))


def rescan_list(pns):
    return [rescan(pns)]


def key_range_list(offs, t, mode):
    return list(key_range(offs, t, mode))


def key_range_floats(offs, t, mode):
    return tuple(float(v) for v in key_range(offs, t, mode))


def key_range_tensor(offs, t, mode):
    return torch.tensor(key_range(offs, t, mode))


def mmd2_array(x, y):
    return np.array([mmd2_unbiased(x, y)])


def scale_masks_flat(mask, pns):
    return [m.flatten() for m in scale_masks(mask, pns)]


def scale_masks_square(mask, pns):
    return [m.view(1, pn, pn) for m, pn in zip(scale_masks(mask, pns), pns)]


def scale_masks_float(mask, pns):
    return [m.float() for m in scale_masks(mask, pns)]


def scale_masks_tuple(mask, pns):
    return tuple(scale_masks(mask, pns))


def teacher_input_double(q, indices):
    return teacher_input(q, indices).double()


def teacher_input_per_scale_list(q, indices):
    x = teacher_input(q, indices)
    sizes = [pn * pn for pn in q.patch_nums[1:]]
    return list(x.split(sizes, dim=1))


def scale_loss_acc_lists(logits, targets, patch_nums):
    loss, acc = scale_loss_acc(logits, targets, patch_nums)
    return loss.tolist(), acc.tolist()


def scale_loss_acc_double(logits, targets, patch_nums):
    return tuple(t.double() for t in scale_loss_acc(logits, targets, patch_nums))


def scale_loss_acc_stacked(logits, targets, patch_nums):
    return torch.stack(scale_loss_acc(logits, targets, patch_nums))


def cached_attention_list(q, k, v, cache_k, cache_v):
    return list(cached_attention(q, k, v, cache_k, cache_v))


def cached_attention_double(q, k, v, cache_k, cache_v):
    out, keys, values = cached_attention(q, k, v, cache_k, cache_v)
    return out.double(), keys, values


def cached_attention_tokens_first(q, k, v, cache_k, cache_v):
    out, keys, values = cached_attention(q, k, v, cache_k, cache_v)
    return out.transpose(1, 2), keys, values


def mvar_block_double(block, x, cond):
    return mvar_block(block, x, cond).double()


def mvar_block_flat(block, x, cond):
    return mvar_block(block, x, cond).reshape(-1, x.shape[-1])


def row_attention_double(q, k, v, offsets, mode, block_n):
    return row_attention(q, k, v, offsets, mode, block_n).double()


def row_attention_batched(q, k, v, offsets, mode, block_n):
    return row_attention(q, k, v, offsets, mode, block_n)[None]


# ============================================================================= the table
# checker, reference solution, the line the notebook stores
SOLUTIONS = [
    (ex.check_coarse_decode, coarse_decode, "coarse_decode (k = 1..4 match vae.decode_per_scale)"),
    (ex.check_mamba_fraction, mamba_fraction, "mamba_fraction (0.255 for a depth-3 width-96 M-VAR)"),
    (ex.check_welch_t, welch_t, "welch_t"),
    (ex.check_accumulation, accumulation, "accumulation"),
    (ex.check_offsets, offsets, "offsets (L = 680 for the 256 px schedule)"),
    (ex.check_block_causal_mask, block_causal, "block_causal_mask (286,434 allowed pairs at 256 px)"),
    (ex.check_block_diagonal_mask, block_diagonal, "block_diagonal_mask (110,468 allowed pairs at 256 px)"),
    (ex.check_residual_quantize, residual_quantize, "residual_quantize (identical codes to "
                                                    "MultiScaleQuantizer.quantize)"),
    (ex.check_adaln_modulate, adaln, "adaln_modulate"),
    (ex.check_cfg_mix, cfg_mix, "cfg_mix"),
    (ex.check_top_p_keep, top_p_keep, "top_p_keep"),
    (ex.check_ssd_step, ssd_step, "ssd_step (matches minivar.models.mamba2.ssd_sequential)"),
    (ex.check_rescan_token_steps, rescan, "rescan_token_steps (1,710 vs 680 at 256 px)"),
    (ex.check_key_range, key_range, "key_range"),
    (ex.check_mmd2_unbiased, mmd2_unbiased, "mmd2_unbiased (matches metrics.kid on one subset)"),
    (ex.check_scale_masks, scale_masks, "scale_masks (matches minivar.sample.scale_masks)"),
    (ex.check_teacher_input, teacher_input, "teacher_input (matches MultiScaleQuantizer.teacher_input)"),
    (ex.check_scale_loss_acc, scale_loss_acc, "scale_loss_acc (matches minivar.models.losses.next_scale_loss)"),
    (ex.check_cached_attention, cached_attention, "cached_attention (each cached step equals the uncached "
                                                  "block-causal attention)"),
    (ex.check_mvar_block, mvar_block, "mvar_block (matches MVARBlock.forward)"),
    (ex.check_triton_row_attention, row_attention, "triton_row_attention (matches masked softmax attention in both "
                                                   "modes)"),
]
IDS = [c[0].__name__ for c in SOLUTIONS]
CHECKS = [c[0] for c in SOLUTIONS]

# checker, wrong answer, a fragment of the message that names the mistake
MISTAKES = [
    (ex.check_coarse_decode, coarse_decode_off_by_one, "i.e. 2 scales; k counts scales"),
    (ex.check_coarse_decode, coarse_decode_zero_codes, "code 0 is a real codebook vector"),
    (ex.check_coarse_decode, coarse_decode_scale_alone, "that is scale 1 alone"),
    (ex.check_coarse_decode, coarse_decode_unit_range, "already gives the picture in [-1, 1]"),
    (ex.check_mamba_fraction, mamba_percent, "is a percentage"),
    (ex.check_mamba_fraction, mamba_tensors, "you counted tensors"),
    (ex.check_mamba_fraction, mamba_over_rest, "divide by ALL parameters"),
    (ex.check_mamba_fraction, mamba_by_name, "nn.Sequential(Linear, Mamba2, Linear)): got 0.0000, expected"),
    (ex.check_mamba_fraction, mamba_first_layer_only, "only the first Mamba2 layer"),
    (ex.check_welch_t, welch_t_population, "population variance"),
    (ex.check_welch_t, welch_t_flipped, "the sign is flipped"),
    (ex.check_welch_t, welch_t_pooled, "pooled variance"),
    (ex.check_welch_t, welch_t_std, "not the standard deviations"),
    (ex.check_accumulation, accumulation_ignoring_gpus, "ignores the 16 GPUs"),
    (ex.check_accumulation, accumulation_true_division, "use // for whole numbers"),
    (ex.check_accumulation, accumulation_not_a_divisor, "the micro-batch must divide the"),
    (ex.check_accumulation, accumulation_no_check, "cannot split evenly over 3 GPUs; raise ValueError"),
    (ex.check_accumulation, accumulation_assert, "raised AssertionError; raise ValueError"),
    (ex.check_accumulation, accumulation_too_eager, "raised ValueError (uneven), but"),
    (ex.check_accumulation, accumulation_too_big, "micro-batch 96 does not fit (max 32)"),
    (ex.check_accumulation, accumulation_smallest, "micro 1 works but 48 is larger"),
    (ex.check_offsets, offsets_of_sides, "adds pn, not pn**2"),
    (ex.check_offsets, offsets_without_zero, "missing the leading 0"),
    (ex.check_offsets, offsets_without_end, "missing the end L = 30"),
    (ex.check_offsets, offsets_summed_twice, "you summed the offsets again"),
    (ex.check_block_causal_mask, gpt_mask, "token-causal mask of a GPT"),
    (ex.check_block_causal_mask, block_causal_strict, "(>=, not >)"),
    (ex.check_block_causal_mask, block_causal_swapped, "True and False are swapped"),
    (ex.check_block_causal_mask, block_causal_transposed, "transposed"),
    (ex.check_block_causal_mask, block_diagonal, "the other model's mask"),
    (ex.check_block_diagonal_mask, block_causal, "the other model's mask"),
    (ex.check_block_diagonal_mask, diagonal_identity, "not only itself"),
    (ex.check_block_diagonal_mask, diagonal_causal_inside, "no causality"),
    (ex.check_residual_quantize, quantize_without_phi, "without phi"),
    (ex.check_residual_quantize, quantize_phis_k, "q.phis[k] is another one"),
    (ex.check_residual_quantize, quantize_no_update, "subtract its contribution"),
    (ex.check_residual_quantize, quantize_nearest_down, "mode='area'"),
    (ex.check_residual_quantize, quantize_bilinear_up, "mode='bicubic', not bilinear"),
    (ex.check_residual_quantize, quantize_bilinear_down, "mode='area' (a token averages its patch), not bilinear"),
    (ex.check_residual_quantize, quantize_nearest_up, "mode='bicubic', not nearest"),
    (ex.check_adaln_modulate, adaln_without_norm, "normalise x first"),
    (ex.check_adaln_modulate, adaln_times_scale, "multiply by (1 + scale)"),
    (ex.check_adaln_modulate, adaln_swapped, "scale and shift are swapped"),
    (ex.check_adaln_modulate, adaln_default_eps, "pass eps=1e-6"),
    (ex.check_adaln_modulate, adaln_unbiased, "biased variance"),
    (ex.check_adaln_modulate, adaln_over_tokens, "not over the tokens"),
    (ex.check_cfg_mix, cfg_without_ramp, "no ramp"),
    (ex.check_cfg_mix, cfg_ramp_over_K, "not cfg * k / K"),
    (ex.check_cfg_mix, cfg_reversed_ramp, "the wrong way"),
    (ex.check_cfg_mix, cfg_swapped, "cond and uncond are swapped"),
    (ex.check_cfg_mix, cfg_plus_uncond, "the mix is (1 + t) * cond - t * uncond"),
    (ex.check_top_p_keep, top_p_inclusive, "INCLUDING the token"),
    (ex.check_top_p_keep, top_p_at_most, "not <="),
    (ex.check_top_p_keep, top_p_sorted_order, "in sorted order"),
    (ex.check_top_p_keep, top_p_swapped, "True and False are swapped"),
    (ex.check_ssd_step, ssd_step_without_dt, "you dropped dt"),
    (ex.check_ssd_step, ssd_step_exp_A, "not exp(A)"),
    (ex.check_ssd_step, ssd_step_minus_A, "A is already negative"),
    (ex.check_ssd_step, ssd_step_B_C_swapped, "B writes into the state"),
    (ex.check_ssd_step, ssd_step_old_state, "read y from the NEW state"),
    (ex.check_ssd_step, ssd_step_y_with_B, "y reads the state with C, not B"),
    (ex.check_ssd_step, ssd_step_order, "return (y, h_new) in this order"),
    (ex.check_rescan_token_steps, rescan_cached, "is the cached cost"),
    (ex.check_rescan_token_steps, rescan_without_last, "you left out the last step"),
    (ex.check_rescan_token_steps, rescan_all_every_step, "not all L"),
    (ex.check_key_range, key_range_inclusive, "hi is exclusive"),
    (ex.check_key_range, key_range_boundary, "is the first token of scale 1"),
    (ex.check_key_range, key_range_modes_swapped, "also sees every coarser scale: lo = 0"),
    (ex.check_key_range, key_range_intra_from_zero, "'intra' (M-VAR) sees only t's own scale"),
    (ex.check_key_range, key_range_to_the_end, "not the whole sequence"),
    (ex.check_key_range, key_range_token_causal, "not t + 1"),
    (ex.check_mmd2_unbiased, mmd2_biased, "biased estimate"),
    (ex.check_mmd2_unbiased, mmd2_no_d, "divide the dot product by d"),
    (ex.check_mmd2_unbiased, mmd2_m_squared, "not m^2"),
    (ex.check_mmd2_unbiased, mmd2_cross_without_diagonal, "keep all m^2 pairs in the cross term"),
    (ex.check_scale_masks, scale_masks_strict, "use >= 0.5"),
    (ex.check_scale_masks, scale_masks_any, "not when any pixel is"),
    (ex.check_scale_masks, scale_masks_transposed, "raster order is row by row"),
    (ex.check_scale_masks, scale_masks_nearest, "nearest-neighbour"),
    (ex.check_scale_masks, scale_masks_swapped, "True and False are swapped"),
    (ex.check_teacher_input, teacher_input_leak, "the model would read the answer it must predict"),
    (ex.check_teacher_input, teacher_input_all_rows, "that has L = 30 rows"),
    (ex.check_teacher_input, teacher_input_nearest, "mode='area' (a token averages its patch), not nearest"),
    (ex.check_teacher_input, teacher_input_bilinear, "mode='area' (a token averages its patch), not bilinear"),
    (ex.check_teacher_input, teacher_input_without_phi, "pass through its phi"),
    (ex.check_teacher_input, teacher_input_channels_first, "that is channels first, (3, 8, 29)"),
    (ex.check_scale_loss_acc, scale_acc_count, "acc_K: that is a count of hits"),
    (ex.check_scale_loss_acc, scale_loss_summed, "loss_K: that is the summed cross-entropy"),
    (ex.check_scale_loss_acc, scale_loss_global, "one loss repeated K times"),
    (ex.check_scale_loss_acc, scale_loss_split_by_pn, "not pn_k"),
    (ex.check_scale_loss_acc, scale_acc_percent, "that is a percentage"),
    (ex.check_cached_attention, cached_attention_cache_only, "attend to the cache only"),
    (ex.check_cached_attention, cached_attention_unscaled, "scale the scores by 1/sqrt(D)"),
    (ex.check_cached_attention, cached_attention_not_updated, "new_cache_k is the old cache"),
    (ex.check_cached_attention, cached_attention_softmax_over_queries, "softmax over the keys (the last dim)"),
    (ex.check_cached_attention, cached_attention_own_scale_only, "that is M-VAR's attention"),
    (ex.check_cached_attention, cached_attention_is_causal, "leave is_causal off"),
    (ex.check_cached_attention, cached_attention_new_only, "new_cache_k holds this scale's keys only"),
    (ex.check_mvar_block, mvar_block_per_sublayer, "not (gate, scale, shift) per sub-layer"),
    (ex.check_mvar_block, mvar_block_times_scale, "multiply by (1 + scale)"),
    (ex.check_mvar_block, mvar_block_ffn_before_mamba, "attention, then Mamba, then the FFN"),
    (ex.check_mvar_block, mvar_block_no_residual, "(the residual)"),
    (ex.check_mvar_block, mvar_block_default_eps, "block.eps = 1e-06, not F.layer_norm's default 1e-5"),
    (ex.check_mvar_block, mvar_block_fixed_eps, "block.eps = 0.0001, not a fixed 1e-6"),
    (ex.check_triton_row_attention, triton_no_rescale, "rescaled by alpha = exp(m_old - m_new)"),
    (ex.check_triton_row_attention, triton_hi_off_by_one, "your answer leaves out key hi-1"),
    (ex.check_triton_row_attention, triton_intra_from_zero, "'intra' (M-VAR) sees only t's own scale"),
    (ex.check_triton_row_attention, triton_unscaled, "by 1/sqrt(D)"),
    (ex.check_triton_row_attention, triton_in_plain_torch, "write the loop as a Triton kernel"),
]

# checker, an answer that looks the function up, what the refusal names. cfg_mix, mamba_fraction, accumulation
# and rescan_token_steps have nothing to look up: minivar has no function that returns their answer.
LOOKUPS = [
    (ex.check_coarse_decode, coarse_decode_lookup, "minivar's own VQVAE.decode_per_scale"),
    (ex.check_coarse_decode, coarse_decode_full_lookup, "minivar's own VQVAE.decode"),
    (ex.check_coarse_decode, coarse_decode_dynamic_lookup, "minivar's own VQVAE.decode_per_scale"),
    (ex.check_welch_t, welch_t_lookup, "scipy.stats.ttest_ind"),
    (ex.check_welch_t, welch_t_imported, "scipy.stats.ttest_ind"),
    (ex.check_offsets, offsets_lookup, "minivar's own scales.offsets"),
    (ex.check_offsets, offsets_imported, "minivar's own scales.offsets"),
    (ex.check_offsets, offsets_getattr, "minivar's own scales.offsets"),
    (ex.check_offsets, offsets_alias, "minivar's own scales.offsets"),
    (ex.check_offsets, offsets_via_helper, "minivar's own scales.offsets"),
    (ex.check_block_causal_mask, block_causal_lookup, "minivar's own scales.block_causal_mask"),
    (ex.check_block_causal_mask, block_causal_kernel_lookup, "minivar's own kernels.scale_attention.scale_mask"),
    (ex.check_block_diagonal_mask, block_diagonal_lookup, "minivar's own scales.block_diagonal_mask"),
    (ex.check_residual_quantize, quantize_lookup, "minivar's own MultiScaleQuantizer.quantize"),
    (ex.check_residual_quantize, quantize_forward_lookup, "minivar's own MultiScaleQuantizer.forward (q(f))"),
    (ex.check_residual_quantize, quantize_dynamic_lookup, "minivar's own MultiScaleQuantizer.quantize"),
    (ex.check_adaln_modulate, adaln_lookup, "minivar's own AdaLNBlock.sublayer"),
    (ex.check_top_p_keep, top_p_lookup, "minivar's own sample.top_k_top_p_candidates"),
    (ex.check_ssd_step, ssd_step_lookup, "minivar's own mamba2.ssd_sequential"),
    (ex.check_key_range, key_range_lookup, "minivar's own models.attention._spans"),
    (ex.check_mmd2_unbiased, mmd2_lookup, "minivar's own evaluation.metrics.kid"),
    (ex.check_scale_masks, scale_masks_lookup, "minivar's own sample.scale_masks"),
    (ex.check_teacher_input, teacher_input_lookup, "minivar's own MultiScaleQuantizer.teacher_input"),
    (ex.check_teacher_input, teacher_input_next_input_lookup, "minivar's own MultiScaleQuantizer.next_input"),
    (ex.check_teacher_input, teacher_input_dynamic_lookup, "minivar's own MultiScaleQuantizer.teacher_input"),
    (ex.check_scale_loss_acc, scale_loss_lookup, "minivar's own models.losses.next_scale_loss"),
    (ex.check_scale_loss_acc, scale_loss_stats_lookup, "minivar's own models.losses.loss_stats"),
    (ex.check_cached_attention, cached_attention_kvcache_lookup, "minivar's own models.caches.KVCache"),
    (ex.check_mvar_block, mvar_block_call_lookup, "minivar's own MVARBlock.forward (block(x, cond))"),
    (ex.check_mvar_block, mvar_block_sublayer_lookup, "minivar's own AdaLNBlock.sublayer"),
    (ex.check_mvar_block, mvar_block_unbound_lookup, "minivar's own AdaLNBlock.modulations"),
    (ex.check_triton_row_attention, triton_sdpa_lookup, "torch's scaled_dot_product_attention"),
    (ex.check_triton_row_attention, triton_softmax_lookup, "a ready-made softmax"),
    (ex.check_triton_row_attention, triton_imported_softmax_lookup, "a ready-made softmax"),
    (ex.check_triton_row_attention, triton_minivar_lookup, "minivar's own kernels.scale_attention.scale_attention"),
]

# checker, the right values in the wrong shape / dtype / type, a fragment of the message
WRONG_TYPES = [
    (ex.check_coarse_decode, coarse_decode_batched, "expected (2, 3, 16, 16) (B, 3, H, W)"),
    (ex.check_coarse_decode, coarse_decode_double, "dtype torch.float64, expected torch.float32"),
    (ex.check_coarse_decode, coarse_decode_cumulative_list, "must be a torch.Tensor"),
    (ex.check_mamba_fraction, mamba_fraction_list, "must be a float"),
    (ex.check_mamba_fraction, mamba_fraction_1d, "must be a float"),
    (ex.check_welch_t, welch_t_array, "must be a float"),
    (ex.check_welch_t, welch_t_pair, "must be a float"),
    (ex.check_accumulation, accumulation_list, "return a tuple (micro, accum)"),
    (ex.check_accumulation, accumulation_floats, "must be a whole number"),
    (ex.check_offsets, offsets_tuple, "use list(...)"),
    (ex.check_offsets, offsets_tensor, "use .tolist()"),
    (ex.check_offsets, offsets_numpy_ints, "must be Python ints"),
    (ex.check_block_causal_mask, block_causal_int, "dtype torch.int64, expected torch.bool"),
    (ex.check_block_causal_mask, block_causal_numpy, "must be a torch.Tensor"),
    (ex.check_block_causal_mask, block_causal_batched, "expected (30, 30) (L x L, L = 30"),
    (ex.check_block_diagonal_mask, block_diagonal_float, "expected torch.bool"),
    (ex.check_residual_quantize, quantize_int32, "dtype torch.int32, expected torch.int64"),
    (ex.check_residual_quantize, quantize_square, "expected (3, 1) = (B, pn*pn)"),
    (ex.check_residual_quantize, quantize_tuple, "return a list of 4 index tensors"),
    (ex.check_adaln_modulate, adaln_double, "expected torch.float32"),
    (ex.check_adaln_modulate, adaln_flat, "expected (2, 5, 16) (x's shape)"),
    (ex.check_cfg_mix, cfg_double, "expected torch.float32"),
    (ex.check_cfg_mix, cfg_numpy, "must be a torch.Tensor"),
    (ex.check_top_p_keep, top_p_list, "must be a torch.Tensor, torch.bool, of shape (5,)"),
    (ex.check_top_p_keep, top_p_ints, "dtype torch.int64, expected torch.bool"),
    (ex.check_top_p_keep, top_p_row, "shape (1, 5), expected (5,)"),
    (ex.check_ssd_step, ssd_step_keepdim, "expected (2, 3, 4) = (batch, H, P)"),
    (ex.check_ssd_step, ssd_step_list, "return a tuple (y, h_new)"),
    (ex.check_ssd_step, ssd_step_double, "expected torch.float32"),
    (ex.check_rescan_token_steps, rescan_float, "must be a whole number"),
    (ex.check_rescan_token_steps, rescan_list, "must be a whole number"),
    (ex.check_key_range, key_range_list, "return a tuple (lo, hi)"),
    (ex.check_key_range, key_range_floats, "must be a whole number"),
    (ex.check_key_range, key_range_tensor, "return a tuple (lo, hi)"),
    (ex.check_mmd2_unbiased, mmd2_array, "must be a float"),
    (ex.check_scale_masks, scale_masks_flat, "shape (1,), expected (1, 1) = (1, pn*pn) with pn = 1"),
    (ex.check_scale_masks, scale_masks_square, "shape (1, 1, 1), expected (1, 1) = (1, pn*pn)"),
    (ex.check_scale_masks, scale_masks_float, "expected torch.bool"),
    (ex.check_scale_masks, scale_masks_tuple, "return a list of 4 masks"),
    (ex.check_teacher_input, teacher_input_double, "dtype torch.float64, expected torch.float32"),
    (ex.check_teacher_input, teacher_input_per_scale_list, "must be a torch.Tensor"),
    (ex.check_scale_loss_acc, scale_loss_acc_lists, "loss_K must be a torch.Tensor, torch.float32, of shape (4,)"),
    (ex.check_scale_loss_acc, scale_loss_acc_double, "dtype torch.float64, expected torch.float32"),
    (ex.check_scale_loss_acc, scale_loss_acc_stacked, "return a tuple (loss_K, acc_K)"),
    (ex.check_cached_attention, cached_attention_list, "return a tuple (out, new_cache_k, new_cache_v)"),
    (ex.check_cached_attention, cached_attention_double, "dtype torch.float64, expected torch.float32"),
    (ex.check_cached_attention, cached_attention_tokens_first, "expected (2, 2, 1, 8) = (B, H, n, D)"),
    (ex.check_mvar_block, mvar_block_double, "expected torch.float32"),
    (ex.check_mvar_block, mvar_block_flat, "expected (2, 14, 32) (x's shape)"),
    (ex.check_triton_row_attention, row_attention_double, "dtype torch.float64, expected torch.float32"),
    (ex.check_triton_row_attention, row_attention_batched, "shape (1, 14, 8), expected (14, 8)"),
]


def _id(case):
    return f"{case[0].__name__[len('check_'):]}-{case[1].__name__}"


def _fails(check, fn, fragment, capsys):
    with pytest.raises(AssertionError) as info:
        check(fn)
    assert fragment in str(info.value), str(info.value)
    assert "correct:" not in capsys.readouterr().out


# ============================================================================= tests
@pytest.mark.parametrize("check,solution,line", SOLUTIONS, ids=IDS)
def test_passes_on_solution(check, solution, line, capsys):
    check(solution)
    assert capsys.readouterr().out == f"correct: {line}\n"  # the line nbval compares in the notebooks


@pytest.mark.parametrize("check", CHECKS, ids=IDS)
def test_fails_on_blank(check):
    with pytest.raises(AssertionError, match="not written yet"):
        check(blank)
    with pytest.raises(AssertionError, match="returned None"):
        check(returns_none)


@pytest.mark.parametrize("check,wrong,fragment", MISTAKES, ids=[_id(c) for c in MISTAKES])
def test_recognises_typical_mistake(check, wrong, fragment, capsys):
    _fails(check, wrong, fragment, capsys)


@pytest.mark.parametrize("check,lookup,what", LOOKUPS, ids=[_id(c) for c in LOOKUPS])
def test_refuses_lookup(check, lookup, what, capsys):
    _fails(check, lookup, f"your answer calls {what} -- the exercise is to write it yourself (", capsys)


@pytest.mark.parametrize("check,wrong,fragment", WRONG_TYPES, ids=[_id(c) for c in WRONG_TYPES])
def test_refuses_right_values_in_wrong_shape_or_type(check, wrong, fragment, capsys):
    _fails(check, wrong, fragment, capsys)


def test_lookup_message_reads_as_documented():
    with pytest.raises(AssertionError) as info:
        ex.check_offsets(offsets_lookup)
    assert str(info.value) == ("offsets: your answer calls minivar's own scales.offsets -- the exercise is to "
                               "write it yourself (from pn * pn)")


def test_every_checker_is_tested():
    assert sorted(ex.__all__) == sorted(IDS + PREDICTION_IDS)
    for table in (MISTAKES, WRONG_TYPES):
        for check in CHECKS:
            assert sum(c[0] is check for c in table) >= (2 if table is MISTAKES else 1), check.__name__
    no_lookup = {ex.check_cfg_mix, ex.check_mamba_fraction, ex.check_accumulation, ex.check_rescan_token_steps}
    assert {c[0] for c in LOOKUPS} == set(CHECKS) - no_lookup


# ----------------------------------------------------------------------------- the source check itself
def offsets_with_local_named_offsets(patch_nums):
    offsets = [0]
    for pn in patch_nums:
        offsets.append(offsets[-1] + pn * pn)
    return offsets


def scale_masks_with_local_named_scale_masks(mask, patch_nums):
    scale_masks = []
    for pn in patch_nums:
        scale_masks.append(F.interpolate(mask[None, None].float(), size=(pn, pn), mode="area").flatten(1) >= 0.5)
    return scale_masks


def ssd_step_with_local_named_step(h, x, dt, A, B, C):
    step = (dt[..., None] * x)[..., None] * B[:, None, None, :]
    h = torch.exp(dt * A)[..., None, None] * h + step
    return (h @ C[:, None, :, None]).squeeze(-1), h


def test_names_like_forbidden_ones_are_fine_as_parameters_and_locals(capsys):
    assert ex._find_lookup(key_range, {"offsets": "minivar's own scales.offsets"}) is None
    ex.check_key_range(key_range)  # its parameter is called `offsets`
    ex.check_offsets(offsets_with_local_named_offsets)
    ex.check_scale_masks(scale_masks_with_local_named_scale_masks)
    ex.check_ssd_step(ssd_step_with_local_named_step)
    assert capsys.readouterr().out.count("correct:") == 4


class Proxy:
    """What a bulk grader hands over: callable, with the answer cell's source attached."""

    def __init__(self, fn, answer_source):
        self.fn, self.answer_source = fn, answer_source

    def __call__(self, *args):
        return self.fn(*args)


def test_a_proxy_is_judged_by_its_answer_source(capsys):
    cell = ("from minivar.scales import offsets\n\n"
            "def my_offsets(patch_nums):\n"
            "    return offsets(patch_nums)\n")
    with pytest.raises(AssertionError, match="calls minivar's own scales.offsets"):
        ex.check_offsets(Proxy(offsets, cell))  # the callable itself is fine: the source decides
    cell = ("import minivar.scales as s\n%time x = 1\n\n"
            "def my_offsets(patch_nums):\n"
            "    return s.offsets(patch_nums)\n")
    with pytest.raises(AssertionError, match="calls minivar's own scales.offsets"):
        ex.check_offsets(Proxy(offsets, cell))
    ex.check_offsets(Proxy(offsets, inspect.getsource(offsets)))
    ex.check_offsets(Proxy(offsets, None))  # no source: nothing to check, the values still are
    assert capsys.readouterr().out.count("correct: offsets") == 2
    with pytest.raises(AssertionError, match="not written yet"):
        ex.check_offsets(Proxy(blank, "def my_offsets(patch_nums):\n    raise NotImplementedError\n"))


def test_the_package_function_itself_is_refused():
    import functools

    import scipy.stats
    from minivar.sample import top_k_top_p_candidates
    for check, fn in ((ex.check_offsets, scales.offsets), (ex.check_offsets, functools.partial(scales.offsets)),
                      (ex.check_block_causal_mask, scales.block_causal_mask),
                      (ex.check_welch_t, scipy.stats.ttest_ind), (ex.check_top_p_keep, top_k_top_p_candidates)):
        with pytest.raises(AssertionError, match="your answer calls"):
            check(fn)
    with pytest.raises(AssertionError, match="calls minivar's own MultiScaleQuantizer.quantize"):
        ex.check_residual_quantize(lambda q, f: q.quantize(f))


class GraderProxy(Proxy):
    """Like minivar.teaching.grading.AnswerFunction: defined inside minivar, named after the answer."""

    __module__ = "minivar.teaching.grading"

    def __init__(self, fn, answer_source, name):
        super().__init__(fn, answer_source)
        self.__name__ = name


def test_a_grader_proxy_named_like_a_forbidden_function_is_judged_by_its_source(capsys):
    ex.check_offsets(GraderProxy(offsets, inspect.getsource(offsets), "offsets"))
    assert capsys.readouterr().out.startswith("correct: offsets")
    with pytest.raises(AssertionError, match="calls minivar's own scales.offsets"):
        ex.check_offsets(GraderProxy(offsets, inspect.getsource(offsets_lookup), "offsets"))


def test_star_imports_and_aliases_are_seen():
    star = "from minivar.scales import *\n\ndef my_offsets(patch_nums):\n    return offsets(patch_nums)\n"
    assert ex._find_lookup(Proxy(offsets, star), {"offsets": "x"}) == "offsets"
    alias = "from minivar.scales import offsets as o\n\ndef my_offsets(patch_nums):\n    return o(patch_nums)\n"
    assert ex._find_lookup(Proxy(offsets, alias), {"offsets": "x"}) == "offsets"
    own = "def offsets(patch_nums):\n    return [0] if not patch_nums else offsets(patch_nums[:-1]) + [1]\n"
    assert ex._find_lookup(Proxy(offsets, own), {"offsets": "x"}) is None  # its own recursive call


def test_answer_source():
    assert ex._answer_source(Proxy(blank, "the cell")) == "the cell"
    assert ex._answer_source(offsets).startswith("def offsets(pns):")
    assert ex._answer_source(len) is None  # a builtin has no Python source


CELL_EXTRAS = {row_attention: [row_attention_kernel.fn]}  # what else the answer cell holds: the Triton kernel


class PickledCall:
    """Calls the answer the way a grader in another process would: arguments and result pickled; the answer's
    source is its cell's (the function, with the kernel it launches)."""

    def __init__(self, fn):
        cell = [*CELL_EXTRAS.get(fn, []), fn]
        self.fn, self.answer_source = fn, "\n\n".join(inspect.getsource(f) for f in cell)

    def __call__(self, *args):
        args = pickle.loads(pickle.dumps(args))
        return pickle.loads(pickle.dumps(self.fn(*args)))


@pytest.mark.parametrize("check,solution,line", SOLUTIONS, ids=IDS)
def test_arguments_survive_another_process(check, solution, line, capsys):
    check(PickledCall(solution))
    assert capsys.readouterr().out == f"correct: {line}\n"


def test_checkers_do_not_depend_on_the_default_dtype(capsys):
    torch.set_default_dtype(torch.float64)  # what notebook 05 does for its own equality checks
    try:
        for check, solution, line in SOLUTIONS:
            check(solution)
            assert capsys.readouterr().out == f"correct: {line}\n"
            assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)


def test_checkers_leave_the_global_rng_alone(capsys):
    state = torch.get_rng_state()
    for check, solution, _ in SOLUTIONS:
        check(solution)
    assert torch.equal(state, torch.get_rng_state())


# ----------------------------------------------------------------------------- predict, then check
# checker, the right prediction, the line the notebook stores
PREDICTIONS = [
    (ex.check_predict_cfg_ramp, (0.0, 2.0), "predict_cfg_ramp (t = 0 at the first scale, t = cfg at the last)"),
    (ex.check_predict_decay, 0.5, "predict_decay (exp(dt * A) = exp(-ln 2) = 0.5)"),
    (ex.check_predict_cached_steps, 680, "predict_cached_steps (L = 680 token-steps, vs 1,710 re-scanning)"),
    (ex.check_predict_pairs, 354, "predict_pairs (354 of the 900 pairs of the dense 30 x 30 mask)"),
]
PREDICTION_IDS = [c[0].__name__ for c in PREDICTIONS]

# checker, a wrong prediction, a fragment of the feedback
PREDICTION_MISTAKES = [
    (ex.check_predict_cfg_ramp, (2.0, 2.0), "there is a ramp"),
    (ex.check_predict_cfg_ramp, (0.0, 1.5), "the last scale is k = K - 1 = 3, not K"),
    (ex.check_predict_cfg_ramp, (0.5, 2.0), "k counts from 0"),
    (ex.check_predict_cfg_ramp, (1.0, 1.0), "t_first = 2.0 * 0 / 3 = 0"),
    (ex.check_predict_decay, 2.0, "A < 0 makes the step a decay"),
    (ex.check_predict_decay, float(np.exp(-1)), "not exp(A)"),
    (ex.check_predict_decay, 0.25, "exp(dt * A) = exp(-ln 2) = 1/2 = 0.5"),
    (ex.check_predict_cached_steps, 1710, "1,710 is the re-scan count"),
    (ex.check_predict_cached_steps, 256, "not only the last one"),
    (ex.check_predict_cached_steps, 681, "every token is scanned once"),
    (ex.check_predict_pairs, 627, "VAR's block-causal count"),
    (ex.check_predict_pairs, 900, "the dense mask"),
    (ex.check_predict_pairs, 30, "30 is L"),
    (ex.check_predict_pairs, 100, "1 + 16 + 81 + 256 = 354"),
]

# checker, a prediction of the wrong type, a fragment of the message
PREDICTION_WRONG_TYPES = [
    (ex.check_predict_cfg_ramp, 2.0, "predict a pair (t_first, t_last)"),
    (ex.check_predict_cfg_ramp, (0.0, "2"), "t_last must be a number"),
    (ex.check_predict_decay, "0.5", "must be a number, got a str"),
    (ex.check_predict_decay, True, "must be a number"),
    (ex.check_predict_cached_steps, [680], "must be a number, got a list of 1"),
    (ex.check_predict_pairs, blank, "must be a number, got a function"),
]


@pytest.mark.parametrize("check,value,line", PREDICTIONS, ids=PREDICTION_IDS)
def test_prediction_passes(check, value, line, capsys):
    check(value)
    assert capsys.readouterr().out == f"correct: {line}\n"


def test_predictions_take_any_number_type(capsys):
    ex.check_predict_cfg_ramp((0, 2))
    ex.check_predict_cfg_ramp([0.0, 2.0 + 1e-9])
    ex.check_predict_decay(np.float32(0.5))
    ex.check_predict_decay(torch.tensor(0.5))
    ex.check_predict_cached_steps(680.0)
    ex.check_predict_pairs(np.int64(354))
    assert capsys.readouterr().out.count("correct:") == 6


@pytest.mark.parametrize("check", [c[0] for c in PREDICTIONS], ids=PREDICTION_IDS)
@pytest.mark.parametrize("value", [None, ..., NotImplementedError, NotImplementedError()], ids=repr)
def test_prediction_not_answered(check, value, capsys):
    _fails(check, value, "not answered yet", capsys)


@pytest.mark.parametrize("check,value,fragment", PREDICTION_MISTAKES + PREDICTION_WRONG_TYPES,
                         ids=[f"{c[0].__name__[len('check_'):]}-"
                              f"{getattr(c[1], '__name__', None) or repr(c[1])}" for c in
                              PREDICTION_MISTAKES + PREDICTION_WRONG_TYPES])
def test_prediction_feedback(check, value, fragment, capsys):
    _fails(check, value, fragment, capsys)


def test_a_grader_proxy_of_a_prediction_is_read_from_its_cell(capsys):
    def proxy(cell):
        return GraderProxy(blank, cell, "my_prediction")  # the sandbox has no function of that name to call
    ex.check_predict_cfg_ramp(proxy("my_prediction = (0.0, 2.0)  # first and last\n"))
    ex.check_predict_pairs(proxy("my_prediction = 1 + 16 + 81 + 256\n"))
    ex.check_predict_decay(proxy("my_prediction = None\n# changed my mind:\nmy_prediction = 1 / 2\n"))
    assert capsys.readouterr().out.count("correct:") == 3
    for cell in ("my_prediction = ...\n", "other = 0.5\n", "my_prediction = None\n"):
        with pytest.raises(AssertionError, match="not answered yet"):
            ex.check_predict_decay(proxy(cell))
    with pytest.raises(AssertionError, match="write your prediction itself"):
        ex.check_predict_decay(proxy("import math\nmy_prediction = math.exp(-math.log(2))\n"))
    with pytest.raises(AssertionError, match="1,710 is the re-scan count"):
        ex.check_predict_cached_steps(proxy("my_prediction = 1710\n"))


# ----------------------------------------------------------------------------- the Triton exercise
def test_the_triton_answer_must_hold_a_kernel():
    assert ex._writes_triton_kernel(row_attention) is True  # the kernel is a global the launcher names
    assert ex._writes_triton_kernel(triton_in_plain_torch) is False
    cell = inspect.getsource(row_attention_kernel.fn) + inspect.getsource(row_attention)
    assert ex._writes_triton_kernel(Proxy(row_attention, cell)) is True  # a grader's proxy: the cell's text
    assert ex._writes_triton_kernel(Proxy(row_attention, inspect.getsource(row_attention))) is False
    assert ex._writes_triton_kernel(Proxy(row_attention, None)) is None  # no source: not judged


def test_a_lookup_inside_the_kernel_is_seen():
    cell = ("import triton\nfrom minivar.kernels.scale_attention import _scale_bounds\n\n@triton.jit\n"
            "def kernel(Q, O, OFFS):\n    lo, hi = _scale_bounds(OFFS, 0, 1, 1, 2)\n")
    with pytest.raises(AssertionError, match="calls minivar's own kernels.scale_attention._scale_bounds"):
        ex.check_triton_row_attention(Proxy(row_attention, cell))
