"""Checkers for the notebooks' exercises.

Each ``check_*`` takes what the learner wrote (a function, usually), runs it on a few inputs,
compares the answer with minivar's own implementation and either prints one "correct" line or
raises ``AssertionError`` with a message that says what is wrong and, where a common mistake is
recognisable, which one. A function that still raises ``NotImplementedError`` (the student copy's
stub) gets a friendly "not written yet".

    from minivar.teaching.exercises import check_block_causal_mask
    check_block_causal_mask(my_block_causal_mask)

tests/test_exercises.py shows that every checker passes on a reference solution and fails on the
blank stub and on a typical wrong answer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import scales

SCHEDULES = [(1, 2, 3, 4), (1, 2, 3, 4, 6, 8), (1, 3, 5), (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]


def _call(name: str, fn, *args):
    """Call the learner's function; turn the stub's NotImplementedError and a None into clear failures."""
    if not callable(fn):
        raise AssertionError(f"{name}: expected a function, got {type(fn).__name__}")
    try:
        out = fn(*args)
    except NotImplementedError:
        raise AssertionError(f"{name}: not written yet -- replace `raise NotImplementedError` "
                             "with your code, then run this cell again") from None
    if out is None:
        raise AssertionError(f"{name}: your function returned None -- did you forget `return`?")
    return out


def _ok(name: str, detail: str = "") -> None:
    print(f"correct: {name}" + (f" ({detail})" if detail else ""))


def _as_tensor(name: str, x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception:
            raise AssertionError(f"{name}: {what} must be a tensor (or convertible), got {type(x).__name__}") from None
    return x


# ----------------------------------------------------------------------------- 00 the tour
def check_coarse_decode(fn) -> None:
    """fn(vae, indices, k) -> the images decoded from the first k scales only (k = 1..K)."""
    from ..tokenizer.vqvae import TOKENIZER_PRESETS, VQVAE
    name = "coarse_decode"
    torch.manual_seed(0)
    vae = VQVAE(TOKENIZER_PRESETS["tiny16"]).eval()
    g = torch.Generator().manual_seed(0)
    idx = [torch.randint(vae.config.vocab_size, (2, p * p), generator=g) for p in vae.patch_nums]
    with torch.no_grad():
        want = vae.decode_per_scale(idx)
        for k in range(1, len(idx) + 1):
            got = _as_tensor(name, _call(name, fn, vae, [i.clone() for i in idx], k), "the result")
            if got.shape != want[0].shape:
                raise AssertionError(f"{name}: shape {tuple(got.shape)}, expected {tuple(want[0].shape)} (B, 3, H, W)")
            if torch.allclose(got, want[k - 1], atol=1e-5):
                continue
            for j, w in enumerate(want):
                if torch.allclose(got, w, atol=1e-5):
                    raise AssertionError(f"{name}(k={k}): you decoded scales 0..{j}, i.e. {j + 1} scales; k counts "
                                         "scales, so k=1 is the 1x1 scale alone")
            raise AssertionError(f"{name}(k={k}): differs from vae.decode_per_scale(indices)[k-1]; every scale "
                                 "adds to the same f_hat, so scales 0..k-1 together make the picture")
    _ok(name, f"k = 1..{len(idx)} match vae.decode_per_scale")


def check_mamba_fraction(fn) -> None:
    """fn(model) -> the fraction (0..1) of the model's parameters that sit in its Mamba2 layers."""
    from ..models.mamba2 import Mamba2
    from ..models.transformer import ModelConfig, NextScaleTransformer
    name = "mamba_fraction"
    for depth, width in ((2, 64), (3, 96)):
        model = NextScaleTransformer(ModelConfig(mixer="mvar", depth=depth, width=width, heads=2, num_classes=3,
                                                 vocab_size=32, z_channels=8, patch_nums=(1, 2)))
        total = sum(p.numel() for p in model.parameters())
        mamba = sum(p.numel() for m in model.modules() if isinstance(m, Mamba2) for p in m.parameters())
        got, want = float(_call(name, fn, model)), mamba / total
        if abs(got - 100 * want) < 1e-6:
            raise AssertionError(f"{name}: {got:.2f} is a percentage; return a fraction between 0 and 1")
        n_tensors = sum(1 for m in model.modules() if isinstance(m, Mamba2) for _ in m.parameters())
        if abs(got - n_tensors / len(list(model.parameters()))) < 1e-9:
            raise AssertionError(f"{name}: you counted tensors; count their elements (p.numel())")
        if abs(got - want) > 1e-9:
            raise AssertionError(f"{name}(depth {depth}, width {width}): got {got:.4f}, expected {want:.4f}")
    _ok(name, f"{want:.3f} for a depth-3 width-96 M-VAR")


# ----------------------------------------------------------------------------- 09 scaling up
def check_welch_t(fn) -> None:
    """fn(a, b) -> Welch's t statistic of two lists of per-seed numbers (sample variances, ddof=1)."""
    name = "welch_t"
    cases = [([10.0, 12.0, 11.0], [14.0, 15.0, 13.5]), ([3.1, 2.9, 3.4, 3.0], [3.3, 3.2]), ([1.0, 2.0], [1.0, 3.0])]
    for a, b in cases:
        got = float(_call(name, fn, list(a), list(b)))
        ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)

        def t(ddof):
            se = (ta.var(correction=ddof) / len(a) + tb.var(correction=ddof) / len(b)).sqrt()
            return ((ta.mean() - tb.mean()) / se).item()
        if abs(got - t(1)) < 1e-9:
            continue
        if abs(got - t(0)) < 1e-9:
            raise AssertionError(f"{name}{(a, b)}: that uses the population variance; with 3 seeds use the sample "
                                 "variance (divide by n - 1)")
        if abs(got + t(1)) < 1e-9:
            raise AssertionError(f"{name}: the sign is flipped -- compute mean(a) - mean(b)")
        raise AssertionError(f"{name}{(a, b)}: got {got:.4f}, expected {t(1):.4f}")
    _ok(name)


# ----------------------------------------------------------------------------- 10 ImageNet-256
def check_accumulation(fn) -> None:
    """fn(global_batch, gpus, max_micro) -> (micro, accum): micro * accum * gpus == global_batch with the largest
    micro-batch <= max_micro; ValueError when global_batch is not a multiple of gpus."""
    name = "accumulation"
    for gb, gpus, mm in ((768, 16, 48), (768, 8, 32), (768, 4, 40), (768, 1, 64), (1024, 8, 100)):
        got = _call(name, fn, gb, gpus, mm)
        per = gb // gpus
        want = max(m for m in range(1, mm + 1) if per % m == 0)
        micro, accum = (int(v) for v in got)
        if micro * accum == gb and gpus > 1:
            raise AssertionError(f"{name}({gb}, {gpus}, {mm}): micro x accum = {gb} ignores the {gpus} GPUs; each "
                                 f"GPU holds {per} images per step")
        if micro * accum * gpus != gb:
            raise AssertionError(f"{name}({gb}, {gpus}, {mm}): {micro} x {accum} x {gpus} != {gb}")
        if micro > mm:
            raise AssertionError(f"{name}({gb}, {gpus}, {mm}): micro-batch {micro} does not fit (max {mm})")
        if micro != want:
            raise AssertionError(f"{name}({gb}, {gpus}, {mm}): micro {micro} works but {want} is larger (fewer, "
                                 "faster accumulation steps)")
    try:
        fn(1000, 3, 64)
    except ValueError:
        pass
    except NotImplementedError:
        raise AssertionError(f"{name}: not written yet") from None
    else:
        raise AssertionError(f"{name}(1000, 3, 64): 1000 images cannot split over 3 GPUs; raise ValueError")
    _ok(name)


# ----------------------------------------------------------------------------- 01 scales and tokens
def check_offsets(fn) -> None:
    """fn(patch_nums) -> [0, n0, n0+n1, ..., L]: where each scale starts in the token sequence."""
    name = "offsets"
    for pns in SCHEDULES:
        got = _call(name, fn, pns)
        got = [int(v) for v in (got.tolist() if isinstance(got, torch.Tensor) else got)]
        want = scales.offsets(pns)
        if got == want[1:]:
            raise AssertionError(f"{name}{pns}: {got} is missing the leading 0 (scale 0 starts at token 0)")
        if got == [int(v) for v in torch.tensor(want).cumsum(0)]:
            raise AssertionError(f"{name}{pns}: you summed the offsets again; offsets[k+1] = offsets[k] + pn_k**2")
        if got == [0, *[sum(pns[:k + 1]) for k in range(len(pns))]]:
            raise AssertionError(f"{name}{pns}: {got} adds pn, not pn**2 -- scale k holds pn_k x pn_k tokens")
        if got != want:
            raise AssertionError(f"{name}{pns}: got {got}, expected {want}")
    _ok(name, f"L = {scales.num_tokens(SCHEDULES[-1])} for the 256 px schedule")


def _check_mask(name: str, fn, make, other) -> None:
    for pns in SCHEDULES[:3]:
        got = _as_tensor(name, _call(name, fn, pns), "the mask")
        want = make(pns)
        if tuple(got.shape) != tuple(want.shape):
            raise AssertionError(f"{name}{pns}: shape {tuple(got.shape)}, expected {tuple(want.shape)} (L x L, "
                                 f"L = {want.shape[0]})")
        if got.dtype != torch.bool:
            raise AssertionError(f"{name}{pns}: dtype {got.dtype}; return a bool mask (True = may attend)")
        if torch.equal(got, want):
            continue
        L = want.shape[0]
        if torch.equal(got, ~want):
            raise AssertionError(f"{name}{pns}: True and False are swapped (True must mean 'may attend')")
        if torch.equal(got, torch.ones(L, L, dtype=torch.bool).tril()):
            raise AssertionError(f"{name}{pns}: that is the token-causal mask of a GPT; here a token also "
                                 "sees every token of its own scale")
        if torch.equal(got, want.T):
            raise AssertionError(f"{name}{pns}: transposed -- rows are queries, columns keys")
        if torch.equal(got, other(pns)):
            raise AssertionError(f"{name}{pns}: that is the other model's mask")
        bad = (got != want).nonzero()[0].tolist()
        raise AssertionError(f"{name}{pns}: wrong at query {bad[0]}, key {bad[1]}: got {bool(got[bad[0], bad[1]])}")
    _ok(name, f"{int(make(SCHEDULES[-1]).sum()):,} allowed pairs at 256 px")


def check_block_causal_mask(fn) -> None:
    """fn(patch_nums) -> bool (L, L): VAR's mask, query of scale i sees keys of scales <= i."""
    _check_mask("block_causal_mask", fn, scales.block_causal_mask, scales.block_diagonal_mask)


def check_block_diagonal_mask(fn) -> None:
    """fn(patch_nums) -> bool (L, L): M-VAR's intra-scale mask, a query sees only its own scale."""
    _check_mask("block_diagonal_mask", fn, scales.block_diagonal_mask, scales.block_causal_mask)


# ----------------------------------------------------------------------------- 02 tokenizer
def check_residual_quantize(fn) -> None:
    """fn(quantizer, f_BChw) -> list of K LongTensors (B, pn^2): multi-scale residual quantisation."""
    from ..tokenizer.quantizer import MultiScaleQuantizer
    name = "residual_quantize"
    g = torch.Generator().manual_seed(0)
    for pns in [(1, 2, 3, 4), (1, 2, 4, 6, 8)]:
        torch.manual_seed(1)
        q = MultiScaleQuantizer(64, 8, pns).eval()
        f = torch.randn(3, 8, pns[-1], pns[-1], generator=g)
        with torch.no_grad():
            got = _call(name, fn, q, f.clone())
            want = q.quantize(f)
        if not isinstance(got, (list, tuple)) or len(got) != len(pns):
            raise AssertionError(f"{name}: return a list of {len(pns)} index tensors, one per scale")
        for k, (a, b) in enumerate(zip(got, want)):
            a = _as_tensor(name, a, f"scale {k}'s indices")
            if tuple(a.shape) != tuple(b.shape):
                raise AssertionError(f"{name}{pns}: scale {k} indices have shape {tuple(a.shape)}, expected "
                                     f"{tuple(b.shape)} = (B, pn*pn) in raster order")
            if not torch.equal(a.long(), b):
                hint = ("scale 0 is already wrong: area-downsample the residual, then take the nearest code "
                        "(squared L2)") if k == 0 else (
                        "the first scale is right, so look at the update: subtract phi_k(up(codes)) -- "
                        "bicubic up to the latent side, then q.phi(k, ...) -- from the residual")
                raise AssertionError(f"{name}{pns}: scale {k} differs from minivar ({int((a != b).sum())} of "
                                     f"{b.numel()} codes); {hint}")
    _ok(name, "identical codes to MultiScaleQuantizer.quantize")


# ----------------------------------------------------------------------------- 03 the VAR transformer
def check_adaln_modulate(fn) -> None:
    """fn(x_BLC, scale_B1C, shift_B1C) -> LayerNorm(x) * (1 + scale) + shift (LN without affine, eps 1e-6)."""
    name = "adaln_modulate"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 16, generator=g) * 3 + 1
    sc, sh = torch.randn(2, 1, 16, generator=g), torch.randn(2, 1, 16, generator=g)
    got = _as_tensor(name, _call(name, fn, x.clone(), sc.clone(), sh.clone()), "the output")
    ln = F.layer_norm(x, (16,), eps=1e-6)
    want = ln * (1 + sc) + sh
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if torch.allclose(got, x * (1 + sc) + sh, atol=1e-4):
        raise AssertionError(f"{name}: normalise x first (layer norm over the channels, no affine)")
    if torch.allclose(got, ln * sc + sh, atol=1e-4):
        raise AssertionError(f"{name}: multiply by (1 + scale), not scale: a zero scale must leave LN(x) unchanged")
    if not torch.allclose(got, want, atol=1e-4):
        raise AssertionError(f"{name}: max |difference| {(got - want).abs().max().item():.3g} from "
                             "LayerNorm(x) * (1 + scale) + shift")
    _ok(name)


# ----------------------------------------------------------------------------- 04 sampling
def check_cfg_mix(fn) -> None:
    """fn(cond, uncond, cfg, k, K) -> guided logits with VAR's linear ramp t = cfg * k / (K - 1)."""
    name = "cfg_mix"
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 10, generator=g), torch.randn(2, 4, 10, generator=g)
    for cfg, k, K in [(1.5, 0, 10), (1.5, 9, 10), (3.0, 2, 4), (0.0, 3, 4)]:
        got = _as_tensor(name, _call(name, fn, cond.clone(), uncond.clone(), cfg, k, K), "the logits")
        t = cfg * k / (K - 1)
        want = (1 + t) * cond - t * uncond
        if not torch.allclose(got, want, atol=1e-5):
            if torch.allclose(got, (1 + cfg) * cond - cfg * uncond, atol=1e-5):
                raise AssertionError(f"{name}: no ramp -- at scale k the guidance is t = cfg * k / (K - 1) "
                                     "(0 at the first scale, cfg at the last)")
            if torch.allclose(got, t * cond - (t - 1) * uncond, atol=1e-5) or \
                    torch.allclose(got, cond + t * uncond, atol=1e-5):
                raise AssertionError(f"{name}: the mix is (1 + t) * cond - t * uncond")
            raise AssertionError(f"{name}(cfg={cfg}, k={k}, K={K}): max |difference| "
                                 f"{(got - want).abs().max().item():.3g} from (1 + t) cond - t uncond")
    _ok(name)


def check_top_p_keep(fn) -> None:
    """fn(probs_V, top_p) -> bool (V,): the smallest set of most likely tokens whose mass reaches top_p."""
    name = "top_p_keep"
    cases = [([0.5, 0.3, 0.15, 0.05], 0.7, [1, 1, 0, 0]), ([0.5, 0.3, 0.15, 0.05], 0.8, [1, 1, 0, 0]),
             ([0.05, 0.15, 0.5, 0.3], 0.81, [0, 1, 1, 1]), ([0.9, 0.05, 0.05], 0.5, [1, 0, 0]),
             ([0.25, 0.25, 0.25, 0.25], 1.0, [1, 1, 1, 1])]
    for probs, p, want in cases:
        got = _as_tensor(name, _call(name, fn, torch.tensor(probs), p), "the keep mask").bool().tolist()
        want = [bool(w) for w in want]
        if got != want:
            raise AssertionError(f"{name}(probs={probs}, top_p={p}): got {got}, expected {want}. Sort by "
                                 "probability; keep a token when the mass of the tokens strictly more likely "
                                 "than it is still below top_p (so the most likely token always stays)")
    _ok(name)


# ----------------------------------------------------------------------------- 05 Mamba
def check_ssd_step(fn) -> None:
    """fn(h_BHPN, x_BHP, dt_BH, A_H, B_BN, C_BN) -> (y_BHP, h_BHPN): one step of the SSM recurrence

        h = exp(dt * A) * h + dt * x (outer) B;   y = h C        (dt already softplus'ed, no D term)
    """
    from ..models.mamba2 import ssd_sequential
    name = "ssd_step"
    g = torch.Generator().manual_seed(0)
    Bsz, H, P, N = 2, 3, 4, 5
    h = torch.randn(Bsz, H, P, N, generator=g)
    x, dt = torch.randn(Bsz, H, P, generator=g), torch.rand(Bsz, H, generator=g) * 0.5 + 0.05
    A = -torch.rand(H, generator=g) * 2 - 0.5
    Bm, Cm = torch.randn(Bsz, N, generator=g), torch.randn(Bsz, N, generator=g)
    out = _call(name, fn, h.clone(), x, dt, A, Bm, Cm)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise AssertionError(f"{name}: return a pair (y, h_new)")
    y, h_new = (_as_tensor(name, t, "y and h") for t in out)
    y_ref, h_ref = ssd_sequential(x[:, None], dt[:, None], A, Bm[:, None, None], Cm[:, None, None], h_BHPN=h.clone())
    y_ref = y_ref[:, 0]
    if tuple(h_new.shape) != tuple(h_ref.shape) or tuple(y.shape) != tuple(y_ref.shape):
        raise AssertionError(f"{name}: shapes y {tuple(y.shape)}, h {tuple(h_new.shape)}; expected "
                             f"{tuple(y_ref.shape)} and {tuple(h_ref.shape)}")
    decay = torch.exp(dt * A)[..., None, None]
    if torch.allclose(h_new, decay * h + x[..., None] * Bm[:, None, None], atol=1e-5):
        raise AssertionError(f"{name}: the input term is dt * x (outer) B -- you dropped dt")
    if torch.allclose(h_new, torch.exp(A)[:, None, None] * h + (dt[..., None] * x)[..., None] * Bm[:, None, None],
                      atol=1e-5):
        raise AssertionError(f"{name}: the decay is exp(dt * A), not exp(A): dt sets how much to forget")
    if not torch.allclose(h_new, h_ref, atol=1e-5):
        raise AssertionError(f"{name}: new state off by {(h_new - h_ref).abs().max().item():.3g}")
    if torch.allclose(y, (h @ Cm[:, None, :, None]).squeeze(-1), atol=1e-5) and not torch.allclose(y, y_ref, atol=1e-5):
        raise AssertionError(f"{name}: read y from the NEW state: y = h_new C")
    if not torch.allclose(y, y_ref, atol=1e-5):
        raise AssertionError(f"{name}: y off by {(y - y_ref).abs().max().item():.3g}")
    _ok(name, "matches minivar.models.mamba2.ssd_sequential")


# ----------------------------------------------------------------------------- 06 M-VAR
def check_rescan_token_steps(fn) -> None:
    """fn(patch_nums) -> Mamba token-steps per block when every scale re-scans the whole prefix."""
    name = "rescan_token_steps"
    for pns in SCHEDULES:
        got = _call(name, fn, pns)
        want = sum(scales.offsets(pns)[1:])
        if int(got) == scales.num_tokens(pns):
            raise AssertionError(f"{name}{pns}: {got} = L is the cached cost; without a state cache step k "
                                 "re-runs all tokens of scales 0..k")
        if int(got) != want:
            raise AssertionError(f"{name}{pns}: got {got}, expected {want} (sum over k of the tokens of scales 0..k)")
    _ok(name, f"{sum(scales.offsets(SCHEDULES[-1])[1:]):,} vs {scales.num_tokens(SCHEDULES[-1])} at 256 px")


# ----------------------------------------------------------------------------- 07 the Triton kernel
def check_key_range(fn) -> None:
    """fn(offsets, t, mode) -> (lo, hi): the contiguous key range query t may see."""
    name = "key_range"
    for pns in SCHEDULES[:3]:
        offs = scales.offsets(pns)
        sid = scales.scale_ids(pns)
        for mode, make in (("causal", scales.block_causal_mask), ("intra", scales.block_diagonal_mask)):
            mask = make(pns)
            for t in range(offs[-1]):
                got = _call(name, fn, list(offs), t, mode)
                lo, hi = (int(v) for v in got)
                allowed = mask[t].nonzero().flatten()
                want = (int(allowed[0]), int(allowed[-1]) + 1)
                if (lo, hi) != want:
                    k = int(sid[t])
                    extra = " (hi is exclusive: the end of t's scale)" if hi == want[1] - 1 else ""
                    raise AssertionError(f"{name}(offsets={offs}, t={t}, mode={mode!r}): got {(lo, hi)}, "
                                         f"expected {want}: t is in scale {k}{extra}")
    _ok(name)


# ----------------------------------------------------------------------------- 08 evaluation
def check_mmd2_unbiased(fn) -> None:
    """fn(x_md, y_md) -> unbiased MMD^2 with the KID kernel (a.b / d + 1)^3 (one subset, equal m)."""
    import numpy as np
    from ..evaluation import metrics
    name = "mmd2_unbiased"
    rng = np.random.default_rng(0)
    for m, d, shift in [(20, 5, 0.5), (30, 8, 0.0), (12, 3, 2.0)]:
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d)) + shift
        got = float(_call(name, fn, x.copy(), y.copy()))
        want = metrics.kid(x, y, num_subsets=1, subset_size=m)[0]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        if np.isclose(got, kxx.mean() + kyy.mean() - 2 * kxy.mean()) and not np.isclose(got, want):
            raise AssertionError(f"{name}: that is the biased estimate -- leave the diagonal k(x_i, x_i) out of "
                                 "the within-set means and divide by m (m - 1)")
        kxx1, kyy1, kxy1 = ((a @ b.T + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
        if np.isclose(got, off(kxx1) + off(kyy1) - 2 * kxy1.mean()) and not np.isclose(got, want):
            raise AssertionError(f"{name}: the kernel is (a.b / d + 1)^3 -- divide the dot product by d")
        if not np.isclose(got, want, rtol=1e-6, atol=1e-9):
            raise AssertionError(f"{name}(m={m}, d={d}): got {got:.6g}, expected {want:.6g} (metrics.kid on one "
                                 "subset of all m points)")
    _ok(name, "matches metrics.kid on one subset")


# ----------------------------------------------------------------------------- 11 zero-shot editing
def check_scale_masks(fn) -> None:
    """fn(mask_HW, patch_nums) -> per scale bool (1, pn^2): True where >= half of the token's area is masked."""
    from ..sample import scale_masks
    name = "scale_masks"
    g = torch.Generator().manual_seed(0)
    centre = torch.zeros(16, 16)
    centre[4:12, 4:12] = 1
    bottom = torch.zeros(16, 16)
    bottom[8:] = 1
    blob = (torch.rand(16, 16, generator=g) > 0.6).float()
    right = torch.zeros(32, 32)
    right[:, 20:] = 1
    cases = [("centre", centre, (1, 2, 3, 4)), ("border", 1 - centre, (1, 2, 3, 4)),
             ("bottom half", bottom, (1, 2, 3, 4)), ("random", blob, (1, 2, 4)), ("right", right, (1, 2, 3, 4, 6, 8))]
    for what, mask, pns in cases:
        got = _call(name, fn, mask.clone(), pns)
        want = scale_masks(mask, pns)
        if not isinstance(got, (list, tuple)) or len(got) != len(pns):
            raise AssertionError(f"{name}: return a list of {len(pns)} masks, one per scale")
        got = [_as_tensor(name, a, f"scale {k}'s mask") for k, a in enumerate(got)]
        for k, (a, b) in enumerate(zip(got, want)):
            if a.numel() != b.numel():
                raise AssertionError(f"{name}({what}, {pns}): scale {k} has {a.numel()} entries, expected "
                                     f"{b.numel()} = pn * pn")
            if a.dtype != torch.bool:
                raise AssertionError(f"{name}: scale {k} has dtype {a.dtype}; return bool (True = regenerate)")
        got = [a.reshape(b.shape) for a, b in zip(got, want)]
        if all(torch.equal(a, b) for a, b in zip(got, want)):
            continue
        m = mask[None, None].float()
        same = lambda other: all(torch.equal(a, o) for a, o in zip(got, other))  # noqa: E731
        if same([~b for b in want]):
            raise AssertionError(f"{name}({what}): True and False are swapped -- True marks a token to regenerate")
        if same([F.interpolate(m, size=(pn, pn), mode="area").flatten(1) > 0.5 for pn in pns]):
            raise AssertionError(f"{name}({what}): a token exactly half masked must count as masked: use >= 0.5")
        if same([F.interpolate(m, size=(pn, pn), mode="nearest").flatten(1) >= 0.5 for pn in pns]):
            raise AssertionError(f"{name}({what}): nearest-neighbour downsampling looks at one pixel per token; "
                                 "average over the token's patch (mode='area')")
        k = next(k for k, (a, b) in enumerate(zip(got, want)) if not torch.equal(a, b))
        raise AssertionError(f"{name}({what}, {pns}): scale {k} ({pns[k]}x{pns[k]}) differs from "
                             f"minivar.sample.scale_masks at {int((got[k] != want[k]).sum())} tokens")
    _ok(name, "matches minivar.sample.scale_masks")


__all__ = [n for n in dir() if n.startswith("check_")]
