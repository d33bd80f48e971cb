"""Every notebook checker passes on a reference solution and fails on the blank stub, on a
function that returns None, and on a typical wrong answer (minivar/teaching/exercises.py)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minivar.teaching import exercises as ex
from minivar import scales


def blank(*args):
    raise NotImplementedError


def returns_none(*args):
    return None


# ----------------------------------------------------------------------------- reference solutions
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


def key_range(offs, t, mode):
    k = max(i for i in range(len(offs) - 1) if offs[i] <= t)
    return (0 if mode == "causal" else offs[k]), offs[k + 1]


def mmd2_unbiased(x, y):
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return off(kxx) + off(kyy) - 2 * kxy.mean()


def scale_masks(mask, pns):
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) >= 0.5 for pn in pns]


# ----------------------------------------------------------------------------- typical mistakes
def offsets_of_sides(pns):
    return [0, *[sum(pns[:k + 1]) for k in range(len(pns))]]


def gpt_mask(pns):
    L = scales.num_tokens(pns)
    return torch.ones(L, L, dtype=torch.bool).tril()


def quantize_without_phi(q, f):
    B, C, side, _ = f.shape
    f_rest, out = f.clone(), []
    for pn in q.patch_nums:
        z = F.interpolate(f_rest, size=(pn, pn), mode="area")
        idx = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, C), q.embedding.weight).argmin(1).view(B, -1)
        h = F.interpolate(q.embedding(idx).transpose(1, 2).reshape(B, C, pn, pn), size=(side, side), mode="bicubic")
        f_rest = f_rest - h  # forgot phi
        out.append(idx)
    return out


def adaln_without_norm(x, scale, shift):
    return x * (1 + scale) + shift


def cfg_without_ramp(cond, uncond, cfg, k, K):
    return (1 + cfg) * cond - cfg * uncond


def top_p_inclusive(probs, p):  # keeps tokens while the cumulative mass *including* them is < p
    vals, order = probs.sort(descending=True)
    keep_sorted = vals.cumsum(0) < p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


def ssd_step_without_dt(h, x, dt, A, B, C):
    h = torch.exp(dt * A)[..., None, None] * h + x[..., None] * B[:, None, None, :]
    return (h @ C[:, None, :, None]).squeeze(-1), h


def rescan_cached(pns):
    return scales.num_tokens(pns)


def key_range_inclusive(offs, t, mode):
    lo, hi = key_range(offs, t, mode)
    return lo, hi - 1


def mmd2_biased(x, y):  # keeps the diagonal k(x_i, x_i) in the within-set means
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def scale_masks_strict(mask, pns):  # > 0.5: a token exactly half masked is kept
    m = mask.float()[None, None]
    return [F.interpolate(m, size=(pn, pn), mode="area").flatten(1) > 0.5 for pn in pns]


def coarse_decode(vae, idx, k):
    return vae.decode_per_scale(idx)[k - 1]


def coarse_decode_off_by_one(vae, idx, k):  # k scales means indices 0..k-1, not 0..k
    return vae.decode_per_scale(idx)[min(k, len(idx) - 1)]


def mamba_fraction(model):
    from minivar.models.mamba2 import Mamba2
    m = sum(p.numel() for mod in model.modules() if isinstance(mod, Mamba2) for p in mod.parameters())
    return m / sum(p.numel() for p in model.parameters())


def mamba_percent(model):
    return 100 * mamba_fraction(model)


def welch_t(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


def welch_t_population(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b))


def accumulation(global_batch, gpus, max_micro):
    if global_batch % gpus:
        raise ValueError("global batch must split evenly over the GPUs")
    per = global_batch // gpus
    micro = max(m for m in range(1, max_micro + 1) if per % m == 0)
    return micro, per // micro


def accumulation_ignoring_gpus(global_batch, gpus, max_micro):
    micro = max(m for m in range(1, max_micro + 1) if global_batch % m == 0)
    return micro, global_batch // micro


CASES = [
    (ex.check_coarse_decode, coarse_decode, coarse_decode_off_by_one),
    (ex.check_mamba_fraction, mamba_fraction, mamba_percent),
    (ex.check_welch_t, welch_t, welch_t_population),
    (ex.check_accumulation, accumulation, accumulation_ignoring_gpus),
    (ex.check_offsets, offsets, offsets_of_sides),
    (ex.check_block_causal_mask, block_causal, gpt_mask),
    (ex.check_block_diagonal_mask, block_diagonal, block_causal),
    (ex.check_residual_quantize, residual_quantize, quantize_without_phi),
    (ex.check_adaln_modulate, adaln, adaln_without_norm),
    (ex.check_cfg_mix, cfg_mix, cfg_without_ramp),
    (ex.check_top_p_keep, top_p_keep, top_p_inclusive),
    (ex.check_ssd_step, ssd_step, ssd_step_without_dt),
    (ex.check_rescan_token_steps, rescan, rescan_cached),
    (ex.check_key_range, key_range, key_range_inclusive),
    (ex.check_mmd2_unbiased, mmd2_unbiased, mmd2_biased),
    (ex.check_scale_masks, scale_masks, scale_masks_strict),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("check,solution,wrong", CASES, ids=IDS)
def test_passes_on_solution(check, solution, wrong, capsys):
    check(solution)
    assert capsys.readouterr().out.startswith("correct:")


@pytest.mark.parametrize("check,solution,wrong", CASES, ids=IDS)
def test_fails_on_blank(check, solution, wrong):
    with pytest.raises(AssertionError, match="not written yet"):
        check(blank)
    with pytest.raises(AssertionError, match="returned None"):
        check(returns_none)


@pytest.mark.parametrize("check,solution,wrong", CASES, ids=IDS)
def test_fails_on_typical_mistake(check, solution, wrong, capsys):
    with pytest.raises(AssertionError) as info:
        check(wrong)
    assert len(str(info.value)) > 20  # a message that explains, not a bare assert
    assert "correct:" not in capsys.readouterr().out


def test_every_checker_is_tested():
    assert sorted(ex.__all__) == sorted(IDS)
