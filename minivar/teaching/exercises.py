"""Checkers for the notebooks' exercises.

Each ``check_*`` takes what the learner wrote (a function, usually), runs it on the notebook's
inputs and on seeded random ones the notebook never shows, compares the answer with minivar's own
implementation and either prints one "correct" line or raises ``AssertionError`` with a message that
says what is wrong and, where a common mistake is recognisable, which one. A function that still
raises ``NotImplementedError`` (the student copy's stub) gets a friendly "not written yet".

    from minivar.teaching.exercises import check_block_causal_mask
    check_block_causal_mask(my_block_causal_mask)

What the checkers insist on:

* **No lookups.** An answer that uses the package's own implementation of the function it is asked
  to write (``scales.offsets`` in the offsets exercise, ``scipy.stats.ttest_ind`` in the Welch one,
  ...) is refused before it runs. The answer's source (``_answer_source``: ``fn.answer_source`` when
  a grader wraps the function in a proxy that carries its cell's text, else ``inspect.getsource``)
  is parsed and searched for the forbidden names: an attribute ``x.NAME``, ``from minivar... import
  NAME`` (or scipy), a bare ``NAME`` that the answer's globals resolve to a minivar / scipy function
  of that name, and a string ``"NAME"`` (``getattr(mod, "NAME")``). Parameters and local variables
  that happen to share the name are fine. Helpers defined next to the answer are searched too. Where
  the checker hands the learner a minivar object (the quantiser, the tokenizer), that object's own
  shortcut methods also refuse to run.
* **Exact types.** Each docstring says what to return: tensors of the stated shape and dtype (a
  right value in another shape or dtype fails and the message names the expected one), lists of
  Python ints, and "a float": a Python float, a numpy float or a 0-d float tensor (an int does not
  count); "an int": a Python int, a numpy integer or a 0-d integer tensor (a float does not count).
* **Every edge case reachable.** Ties and half-way cases use dyadic numbers (0.5, 0.25, ...) that
  float32 sums exactly, so e.g. top-p's "preceding mass exactly top_p" token really occurs.

The learner's function is called only as ``fn(*args)`` with picklable arguments (tensors, numbers,
lists, tuples, numpy arrays, modules); nothing relies on the function changing its inputs.

tests/test_exercises.py shows that every checker passes on a reference solution and fails on the
blank stub, on a None, on typical wrong answers, on a lookup and on the right values in the wrong
shape or type.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import itertools
import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from .. import scales
from ..tokenizer.quantizer import MultiScaleQuantizer
from ..tokenizer.vqvae import VQVAE

SCHEDULES = [(1, 2, 3, 4), (1, 2, 3, 4, 6, 8), (1, 3, 5), (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
_ROOTS = ("minivar", "scipy")  # packages whose implementations an answer may not call
_F32 = torch.float32  # every input tensor is float32, whatever the notebook's default dtype (05 sets float64)


@contextlib.contextmanager
def _built_apart():
    """Build the checker's own modules in float32 and on a private RNG: the notebook's default dtype and
    random stream stay as they were."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_default_dtype(old)


# ----------------------------------------------------------------------------- calling the answer
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


# ----------------------------------------------------------------------------- refusing lookups
def _answer_source(fn) -> str | None:
    """The text of the learner's answer: ``fn.answer_source`` if the object carries one (a grader's
    proxy around the answer cell), else ``inspect.getsource(fn)`` (functions from modules and
    Jupyter cells), else None (then the lookup check is skipped)."""
    if hasattr(fn, "answer_source"):
        return fn.answer_source
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return None


def _parse(src) -> ast.AST | None:
    if not isinstance(src, str):
        return None
    lines = [ln for ln in textwrap.dedent(src).splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _from_roots(module: str | None) -> bool:
    return (module or "").split(".")[0] in _ROOTS


def _find_lookup(fn, forbidden, seen=None) -> str | None:
    """The first forbidden name the answer uses (see the module docstring), or None."""
    seen = set() if seen is None else seen
    if not hasattr(fn, "answer_source"):  # (a grader's proxy lives in minivar and carries the answer's name)
        target = fn
        while isinstance(target, functools.partial):
            target = target.func
        try:
            target = inspect.unwrap(target)
        except ValueError:  # a cycle of __wrapped__
            pass
        real = getattr(target, "__name__", None)
        if real in forbidden and _from_roots(getattr(target, "__module__", None)):
            return real  # the package's own function (or bound method) handed in as the answer
    tree = _parse(_answer_source(fn))
    if tree is None:
        return None
    glb = getattr(fn, "__globals__", None)
    glb = glb if isinstance(glb, dict) else {}
    bound, star = set(), False
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            bound.update(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg) if x)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.ImportFrom):
            for al in node.names:
                if (_from_roots(node.module) or node.level) and al.name in forbidden:
                    return al.name
                star |= al.name == "*" and _from_roots(node.module)
                bound.add(al.asname or al.name)
        elif isinstance(node, ast.Import):
            bound.update((al.asname or al.name).split(".")[0] for al in node.names)
    helpers = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in forbidden:
            return node.attr
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in forbidden:
            return node.value
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in bound:
            if star and node.id in forbidden:  # from minivar.scales import *
                return node.id
            obj = glb.get(node.id)
            real = getattr(obj, "__name__", None)
            if real in forbidden and _from_roots(getattr(obj, "__module__", None)):
                return real
            if inspect.isfunction(obj) and obj.__module__ == getattr(fn, "__module__", None) and obj is not fn:
                helpers.append(obj)  # a helper written next to the answer: search it too
    for h in helpers:
        if h not in seen and len(seen) < 20:
            seen.add(h)
            hit = _find_lookup(h, forbidden, seen)
            if hit:
                return hit
    return None


def _lookup_message(name: str, what: str, hint: str) -> str:
    return f"{name}: your answer calls {what} -- the exercise is to write it yourself ({hint})"


def _refuse_lookups(name: str, fn, forbidden: dict, hint: str) -> None:
    """forbidden: {name the answer may not use: what it is, e.g. "minivar's own scales.offsets"}."""
    if forbidden:
        hit = _find_lookup(fn, forbidden)
        if hit:
            raise AssertionError(_lookup_message(name, forbidden[hit], hint))


_RQ_HINT = "area-down the residual, nearest code, bicubic up, q.phi(k, ...), subtract"
_CD_HINT = "build it from vae.quantize.indices_to_fhat and vae.fhat_to_img"


class _ExerciseQuantizer(MultiScaleQuantizer):
    """The quantiser ``check_residual_quantize`` hands out: its own encoders refuse to run."""

    def quantize(self, f_BChw):
        raise AssertionError(_lookup_message("residual_quantize", "minivar's own MultiScaleQuantizer.quantize",
                                             _RQ_HINT))

    def forward(self, f_BChw):
        raise AssertionError(_lookup_message("residual_quantize", "minivar's own MultiScaleQuantizer.forward "
                                             "(q(f))", _RQ_HINT))


class _ExerciseVQVAE(VQVAE):
    """The tokenizer ``check_coarse_decode`` hands out: its own decoders refuse to run."""

    def decode(self, indices):
        raise AssertionError(_lookup_message("coarse_decode", "minivar's own VQVAE.decode", _CD_HINT))

    def decode_per_scale(self, indices):
        raise AssertionError(_lookup_message("coarse_decode", "minivar's own VQVAE.decode_per_scale", _CD_HINT))


# ----------------------------------------------------------------------------- strict types
def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"a numpy {x.dtype} array of shape {x.shape}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of {len(x)}"
    if isinstance(x, (bool, int, float, np.generic)):
        return f"{type(x).__name__} {x!r}"
    return f"a {type(x).__name__}"


def _float(label: str, x, what: str = "the result") -> float:
    """A Python float, a numpy float (or 0-d float array) or a 0-d float tensor."""
    ok = (isinstance(x, (float, np.floating))
          or (isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind == "f")
          or (isinstance(x, torch.Tensor) and x.dim() == 0 and x.is_floating_point()))
    if not ok:
        raise AssertionError(f"{label}: {what} must be a float (a Python float, a numpy float or a 0-d float "
                             f"tensor), got {_describe(x)}")
    return float(x)


def _int(label: str, x, what: str = "the result") -> int:
    """A Python int, a numpy integer (or 0-d integer array) or a 0-d integer tensor; not a bool or a float."""
    ok = ((isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)))
          or (isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iu")
          or (isinstance(x, torch.Tensor) and x.dim() == 0 and not x.is_floating_point()
              and not x.is_complex() and x.dtype != torch.bool))
    if not ok:
        hint = " -- use // for whole numbers" if isinstance(x, (float, np.floating)) else ""
        raise AssertionError(f"{label}: {what} must be a whole number (a Python int, a numpy integer or a 0-d "
                             f"integer tensor), got {_describe(x)}{hint}")
    return int(x)


def _tensor(label: str, x, what: str, shape, dtype: torch.dtype, meaning: str = "") -> torch.Tensor:
    """x itself (detached) if it is a torch tensor of exactly this shape and dtype."""
    shape = tuple(shape)
    if not isinstance(x, torch.Tensor):
        hint = " -- convert with torch.as_tensor" if isinstance(x, (np.ndarray, list, tuple)) else ""
        raise AssertionError(f"{label}: {what} must be a torch.Tensor, {dtype}, of shape {shape}{meaning}; got "
                             f"{_describe(x)}{hint}")
    if tuple(x.shape) != shape:
        raise AssertionError(f"{label}: {what} has shape {tuple(x.shape)}, expected {shape}{meaning}")
    if x.dtype != dtype:
        raise AssertionError(f"{label}: {what} has dtype {x.dtype}, expected {dtype}")
    return x.detach()


def _pair(label: str, x, what: str) -> tuple:
    if not isinstance(x, tuple) or len(x) != 2:
        raise AssertionError(f"{label}: return a tuple {what}, got {_describe(x)}")
    return x


# ----------------------------------------------------------------------------- random inputs
def _random_schedule(rng: np.random.Generator, max_side: int, max_scales: int) -> tuple[int, ...]:
    """A strictly increasing schedule of 2..max_scales sides in 1..max_side (not always starting at 1)."""
    k = int(rng.integers(2, max_scales + 1))
    return tuple(sorted(int(v) for v in rng.choice(np.arange(1, max_side + 1), size=k, replace=False)))


def _first(mistakes, got_matches) -> str | None:
    """The message of the first (candidate, message) pair that the answer matches: got_matches(candidate) is
    called with the candidate as it is (cfg_mix passes formulas) or, for a no-argument lambda, its value."""
    for candidate, message in mistakes:
        needs_args = any(p.default is p.empty for p in inspect.signature(candidate).parameters.values())
        if got_matches(candidate if needs_args else candidate()):
            return message
    return None


# ----------------------------------------------------------------------------- 00 the tour
def _coarse_variants(vae, idx, k):
    """What coarse_decode's typical mistakes return (for recognising them)."""
    q, K = vae.quantize, len(idx)
    zeros = [i if j < k else torch.zeros_like(i) for j, i in enumerate(idx)]
    alone = q.upsample_phi(k - 1, q.codes_to_map(idx[k - 1], vae.patch_nums[k - 1]), vae.patch_nums[-1])
    right = VQVAE.decode_per_scale(vae, idx)[k - 1]
    return [
        (lambda: VQVAE.decode(vae, zeros), "the later scales are not 'empty' when their codes are 0 -- code 0 is a "
         "real codebook vector; decode only the first k index maps (indices[:k])"),
        (lambda: vae.fhat_to_img(alone), f"that is scale {k - 1} alone; f_hat is the sum of the contributions of "
         "scales 0..k-1, so pass the first k index maps together"),
        (lambda: (right + 1) / 2, "vae.fhat_to_img already gives the picture in [-1, 1]; return it as it is"),
    ] + [(lambda j=j: VQVAE.decode_per_scale(vae, idx)[j],
          f"you decoded scales 0..{j}, i.e. {j + 1} scales; k counts scales, so k=1 is the 1x1 scale alone")
         for j in range(K) if j != k - 1]


def check_coarse_decode(fn) -> None:
    """fn(vae, indices, k) -> float32 (B, 3, H, W): the images decoded from the first k scales only (k = 1..K;
    k = 1 is the 1x1 map alone), in [-1, 1] like vae.decode.

    Build it from ``vae.quantize.indices_to_fhat`` (it takes a list of the first k index maps, or
    ``cumulative=True``) and ``vae.fhat_to_img``; ``vae.decode`` and ``vae.decode_per_scale`` are refused.
    Checked on two tokenizers (schedules (1, 2, 3, 4) and (1, 2, 4)) and every k, against
    ``vae.decode_per_scale(indices)[k - 1]``."""
    from ..tokenizer.vqvae import TOKENIZER_PRESETS, TokenizerConfig
    name = "coarse_decode"
    _refuse_lookups(name, fn, {"decode_per_scale": "minivar's own VQVAE.decode_per_scale",
                               "decode": "minivar's own VQVAE.decode"}, _CD_HINT)
    small = TOKENIZER_PRESETS["tiny16"]
    other = TokenizerConfig(image_size=16, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, norm_groups=8, z_channels=8,
                            vocab_size=64, patch_nums=(1, 2, 4))
    g = torch.Generator().manual_seed(0)
    for cfg, B, seed in ((small, 2, 0), (other, 3, 1)):
        with _built_apart():
            torch.manual_seed(seed)
            vae = _ExerciseVQVAE(cfg).eval()
        idx = [torch.randint(cfg.vocab_size, (B, p * p), generator=g) for p in cfg.patch_nums]
        with torch.no_grad():
            want = VQVAE.decode_per_scale(vae, idx)
        for k in range(1, len(idx) + 1):
            label = f"{name}(k={k})"
            got = _tensor(label, _call(name, fn, vae, [i.clone() for i in idx], k), "the images",
                          want[0].shape, torch.float32, " (B, 3, H, W)")
            if torch.allclose(got, want[k - 1], atol=1e-4):
                continue
            with torch.no_grad():
                hint = _first(_coarse_variants(vae, idx, k), lambda c: torch.allclose(got, c, atol=1e-4))
            raise AssertionError(f"{label}: " + (hint or "differs from vae.decode_per_scale(indices)[k-1] by "
                                 f"{(got - want[k - 1]).abs().max().item():.3g}; every scale adds to the same "
                                 "f_hat, so scales 0..k-1 together make the picture"))
    _ok(name, f"k = 1..{len(small.patch_nums)} match vae.decode_per_scale")


def check_mamba_fraction(fn) -> None:
    """fn(model) -> a float (Python float, numpy float or 0-d tensor) in [0, 1]: the fraction of the model's
    parameters (counted in elements) that sit inside its Mamba2 layers. ``model`` is any nn.Module: M-VAR
    transformers of several sizes, a VAR transformer (0.0) and a plain nn.Sequential holding a Mamba2."""
    import torch.nn as nn

    from ..models.mamba2 import Mamba2
    from ..models.transformer import ModelConfig, NextScaleTransformer
    name = "mamba_fraction"
    rng = np.random.default_rng(3)
    specs = [dict(mixer="mvar", depth=2, width=64), dict(mixer="mvar", depth=3, width=96)]
    for _ in range(2):
        specs.append(dict(mixer="mvar", depth=int(rng.integers(1, 4)), width=32 * int(rng.integers(1, 4)),
                          d_state=int(rng.choice([8, 16, 32])), mamba_headdim=16, expand=int(rng.integers(1, 3)),
                          mlp_ratio=float(rng.choice([2.0, 4.0]))))
    specs += [dict(mixer="var", depth=2, width=32), "sequential"]
    with _built_apart():
        torch.manual_seed(0)
        models = []
        for spec in specs:
            if spec == "sequential":
                models.append(("an nn.Sequential(Linear, Mamba2, Linear)",
                               nn.Sequential(nn.Linear(8, 32), Mamba2(32, d_state=8, headdim=16), nn.Linear(32, 8))))
                continue
            kw = dict(heads=2, num_classes=3, vocab_size=32, z_channels=8, patch_nums=(1, 2), **spec)
            models.append((f"{spec['mixer']} depth {spec['depth']}, width {spec['width']}",
                           NextScaleTransformer(ModelConfig(**kw))))
    summary = None
    for i, (what, model) in enumerate(models):
        label = f"{name}({what})"
        got = _float(label, _call(name, fn, model), "the fraction")
        params = list(model.parameters())
        inner = [p for m in model.modules() if isinstance(m, Mamba2) for p in m.parameters()]
        total, mamba = sum(p.numel() for p in params), sum(p.numel() for p in inner)
        want = mamba / total
        if want and abs(got - 100 * want) < 1e-6:
            raise AssertionError(f"{label}: {got:.2f} is a percentage; return a fraction between 0 and 1")
        if want and abs(got - len(inner) / len(params)) < 1e-9:
            raise AssertionError(f"{label}: you counted tensors; count their elements (p.numel())")
        if want and total > mamba and abs(got - mamba / (total - mamba)) < 1e-9:
            raise AssertionError(f"{label}: divide by ALL parameters (the Mamba2 ones included), not by the rest")
        first = next((m for m in model.modules() if isinstance(m, Mamba2)), None)
        if first is not None and abs(got - sum(p.numel() for p in first.parameters()) / total) < 1e-9 \
                and abs(got - want) > 1e-9:
            raise AssertionError(f"{label}: that counts only the first Mamba2 layer; every block has one")
        if abs(got - want) > 1e-9:
            raise AssertionError(f"{label}: got {got:.4f}, expected {want:.4f}")
        if i == 1:  # the depth-3 width-96 M-VAR
            summary = want
    _ok(name, f"{summary:.3f} for a depth-3 width-96 M-VAR")


# ----------------------------------------------------------------------------- 09 scaling up
def check_welch_t(fn) -> None:
    """fn(a, b) -> a float (Python float, numpy float or 0-d tensor): Welch's t statistic of two lists of
    per-seed numbers, (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b) with sample variances (ddof=1).
    ``a`` and ``b`` are lists of Python floats, of equal or different lengths. scipy.stats.ttest_ind is
    refused."""
    name = "welch_t"
    _refuse_lookups(name, fn, {"ttest_ind": "scipy.stats.ttest_ind",
                               "ttest_ind_from_stats": "scipy.stats.ttest_ind_from_stats"},
                    "means, sample variances and counts of the two lists")
    rng = np.random.default_rng(4)
    cases = [([10.0, 12.0, 11.0], [14.0, 15.0, 13.5]), ([3.1, 2.9, 3.4, 3.0], [3.3, 3.2]), ([1.0, 2.0], [1.0, 3.0])]
    for _ in range(4):
        na, nb = (int(v) for v in rng.integers(2, 7, size=2))
        cases.append(([float(v) for v in rng.normal(1.0, 0.5, na).round(3)],
                      [float(v) for v in rng.normal(1.3, 1.5, nb).round(3)]))
    for a, b in cases:
        label = f"{name}{(a, b)}"
        got = _float(label, _call(name, fn, list(a), list(b)), "t")
        ta, tb = np.asarray(a, np.float64), np.asarray(b, np.float64)
        na, nb, diff = len(a), len(b), ta.mean() - tb.mean()
        want = diff / np.sqrt(ta.var(ddof=1) / na + tb.var(ddof=1) / nb)
        if np.isclose(got, want, rtol=1e-7, atol=1e-9):
            continue
        pooled = ((na - 1) * ta.var(ddof=1) + (nb - 1) * tb.var(ddof=1)) / (na + nb - 2)
        hint = _first([
            (lambda: diff / np.sqrt(ta.var() / na + tb.var() / nb), "that uses the population variance; with a "
             "few seeds use the sample variance (divide by n - 1, ddof=1)"),
            (lambda: -want, "the sign is flipped -- compute mean(a) - mean(b)"),
            (lambda: diff / np.sqrt(pooled * (1 / na + 1 / nb)), "that is Student's t with a pooled variance; "
             "Welch keeps the two variances apart: sqrt(s_a^2 / n_a + s_b^2 / n_b)"),
            (lambda: diff / np.sqrt(ta.std(ddof=1) / na + tb.std(ddof=1) / nb), "use the variances s^2, not the "
             "standard deviations, under the square root"),
        ], lambda c: np.isclose(got, c, rtol=1e-7, atol=1e-9))
        raise AssertionError(f"{label}: " + (hint or f"got {got:.4f}, expected {want:.4f}"))
    _ok(name)


# ----------------------------------------------------------------------------- 10 ImageNet-256
def check_accumulation(fn) -> None:
    """fn(global_batch, gpus, max_micro) -> (micro, accum), a tuple of two ints (Python or numpy ints, not
    floats): micro * accum * gpus == global_batch with the largest micro-batch <= max_micro; raises ValueError
    when global_batch is not a multiple of gpus (and only then)."""
    name = "accumulation"
    rng = np.random.default_rng(5)
    cases = [(768, 16, 48), (768, 8, 32), (768, 4, 40), (768, 1, 64), (1024, 8, 100), (768, 8, 1), (96, 3, 7)]
    for _ in range(8):
        gpus, per = int(rng.integers(1, 17)), int(rng.integers(1, 200))
        cases.append((gpus * per, gpus, int(rng.integers(1, per + 20))))
    for gb, gpus, mm in cases:
        label = f"{name}({gb}, {gpus}, {mm})"
        per = gb // gpus
        try:
            got = _call(name, fn, gb, gpus, mm)
        except ValueError as e:
            raise AssertionError(f"{label}: raised ValueError ({e}), but {gb} images split evenly over {gpus} "
                                 f"GPU(s): {per} each") from None
        micro, accum = (_int(label, v, what) for v, what in zip(_pair(label, got, "(micro, accum)"),
                                                                ("micro", "accum")))
        want = max(m for m in range(1, mm + 1) if per % m == 0)
        if micro * accum == gb and gpus > 1:
            raise AssertionError(f"{label}: micro x accum = {gb} ignores the {gpus} GPUs; each GPU holds {per} "
                                 "images per step")
        if micro * accum * gpus != gb:
            raise AssertionError(f"{label}: {micro} x {accum} x {gpus} != {gb}" + (
                f"; the micro-batch must divide the {per} images of each GPU" if per % micro else ""))
        if micro > mm:
            raise AssertionError(f"{label}: micro-batch {micro} does not fit (max {mm})")
        if micro != want:
            raise AssertionError(f"{label}: micro {micro} works but {want} is larger (fewer, faster accumulation "
                                 "steps)")
    bad = [(1000, 3, 64), (770, 8, 32), (10, 4, 2)] + [
        (int(rng.integers(2, 9)) * 12 + 1, 12, int(rng.integers(1, 30))) for _ in range(2)]
    for gb, gpus, mm in bad:
        label = f"{name}({gb}, {gpus}, {mm})"
        try:
            got = fn(gb, gpus, mm)
        except ValueError:
            continue
        except NotImplementedError:
            raise AssertionError(f"{name}: not written yet -- replace `raise NotImplementedError` with your code, "
                                 "then run this cell again") from None
        except Exception as e:  # noqa: BLE001 -- an assert or a ZeroDivisionError is the wrong signal
            raise AssertionError(f"{label}: raised {type(e).__name__}; raise ValueError when the global batch "
                                 "does not split over the GPUs") from None
        raise AssertionError(f"{label}: returned {got!r}, but {gb} images cannot split evenly over {gpus} GPUs; "
                             "raise ValueError")
    _ok(name)


# ----------------------------------------------------------------------------- 01 scales and tokens
def check_offsets(fn) -> None:
    """fn(patch_nums) -> [0, n0, n0+n1, ..., L], a list of K + 1 Python ints (n_k = pn_k * pn_k): where each
    scale starts in the token sequence. ``patch_nums`` is a tuple of increasing ints (the notebook's schedules
    and random ones). A tuple, a tensor or numpy / tensor elements are refused."""
    name = "offsets"
    _refuse_lookups(name, fn, {"offsets": "minivar's own scales.offsets",
                               "_offsets_tensor": "minivar's own models.attention._offsets_tensor"}, "from pn * pn")
    rng = np.random.default_rng(1)
    for pns in SCHEDULES + [_random_schedule(rng, 20, 8) for _ in range(6)]:
        label = f"{name}{pns}"
        got = _call(name, fn, pns)
        want = scales.offsets(pns)
        if not isinstance(got, list):
            hint = (" -- use .tolist()" if isinstance(got, (torch.Tensor, np.ndarray)) else
                    " -- use list(...)" if isinstance(got, tuple) else "")
            raise AssertionError(f"{label}: return a list of {len(want)} Python ints, got {_describe(got)}{hint}")
        odd = [v for v in got if type(v) is not int]
        if odd:
            raise AssertionError(f"{label}: the offsets must be Python ints, got {_describe(odd[0])} -- "
                                 "convert with int(...)")
        if got == want:
            continue
        hint = _first([
            (lambda: want[1:], f"{got} is missing the leading 0 (scale 0 starts at token 0)"),
            (lambda: want[:-1], f"{got} is missing the end L = {want[-1]}: K scales need K + 1 offsets"),
            (lambda: list(itertools.accumulate(want)), "you summed the offsets again; offsets[k+1] = offsets[k] + "
             "pn_k**2"),
            (lambda: [0, *itertools.accumulate(pns)], f"{got} adds pn, not pn**2 -- scale k holds pn_k x pn_k "
             "tokens"),
        ], lambda c: got == c)
        raise AssertionError(f"{label}: " + (hint or f"got {got}, expected {want}"))
    _ok(name, f"L = {scales.num_tokens(SCHEDULES[-1])} for the 256 px schedule")


def _check_mask(name: str, fn, make, other, forbidden: dict, mistakes) -> None:
    _refuse_lookups(name, fn, forbidden, "compare the scale index of each query with that of each key")
    rng = np.random.default_rng(2)
    for pns in SCHEDULES[:3] + [_random_schedule(rng, 9, 5) for _ in range(4)]:
        want = make(pns)
        L = want.shape[0]
        label = f"{name}{pns}"
        got = _tensor(label, _call(name, fn, pns), "the mask", (L, L), torch.bool,
                      f" (L x L, L = {L}; True = may attend)")
        if torch.equal(got, want):
            continue
        sid = scales.scale_ids(pns)
        hint = _first([
            (lambda: ~want, "True and False are swapped (True must mean 'may attend')"),
            (lambda: torch.ones(L, L, dtype=torch.bool).tril(), "that is the token-causal mask of a GPT; here a "
             "token also sees every token of its own scale"),
            (lambda: want.T, "transposed -- rows are queries, columns keys"),
            (lambda: other(pns), "that is the other model's mask"),
        ] + [(lambda m=m: m(sid), msg) for m, msg in mistakes], lambda c: torch.equal(got, c))
        if hint is None:
            q, k = (got != want).nonzero()[0].tolist()
            hint = f"wrong at query {q} (scale {int(sid[q])}), key {k} (scale {int(sid[k])}): got {bool(got[q, k])}"
        raise AssertionError(f"{label}: {hint}")
    _ok(name, f"{int(make(SCHEDULES[-1]).sum()):,} allowed pairs at 256 px")


_MASK_HELPERS = {"scale_mask": "minivar's own kernels.scale_attention.scale_mask",
                 "_mask": "minivar's own models.attention._mask"}


def check_block_causal_mask(fn) -> None:
    """fn(patch_nums) -> torch.bool tensor (L, L): VAR's mask, True where query i (row) may attend to key j
    (column): the query's scale is >= the key's. Checked on the notebook's schedules and random ones."""
    _check_mask("block_causal_mask", fn, scales.block_causal_mask, scales.block_diagonal_mask,
                {"block_causal_mask": "minivar's own scales.block_causal_mask", **_MASK_HELPERS},
                [(lambda s: s[:, None] > s[None, :], "a query also sees the keys of its own scale (>=, not >)")])


def check_block_diagonal_mask(fn) -> None:
    """fn(patch_nums) -> torch.bool tensor (L, L): M-VAR's intra-scale mask, True where query i and key j are in
    the same scale. Checked on the notebook's schedules and random ones."""
    _check_mask("block_diagonal_mask", fn, scales.block_diagonal_mask, scales.block_causal_mask,
                {"block_diagonal_mask": "minivar's own scales.block_diagonal_mask", **_MASK_HELPERS},
                [(lambda s: torch.eye(len(s), dtype=torch.bool), "a query sees its whole scale, not only itself"),
                 (lambda s: (s[:, None] == s[None, :]).tril(), "inside a scale there is no causality: every token "
                  "sees all tokens of its scale")])


# ----------------------------------------------------------------------------- 02 tokenizer
@torch.no_grad()
def _rq(q, f, down="area", up="bicubic", phi="phi", update=True):
    """Residual quantisation with switchable parts (for recognising mistakes)."""
    B, C, side, _ = f.shape
    rest, out = f.clone(), []
    for k, pn in enumerate(q.patch_nums):
        z = rest if pn == side else F.interpolate(rest, size=(pn, pn), mode=down)
        idx = q.nearest(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn * pn)
        h = q.codes_to_map(idx, pn)
        if pn != side:
            h = F.interpolate(h, size=(side, side), mode=up)
        if phi == "phi":
            h = q.phi(k, h)
        elif phi == "phis[k]":
            h = q.phis[k](h) if k < len(q.phis) else q.phi(k, h)
        if update:
            rest = rest - h
        out.append(idx)
    return out


def check_residual_quantize(fn) -> None:
    """fn(q, f_BChw) -> list of K torch.int64 tensors, scale k's of shape (B, pn_k * pn_k) in raster order:
    multi-scale residual quantisation with the quantiser's codebook (q.embedding.weight) and convs
    (q.phi(k, h)). Checked against MultiScaleQuantizer.quantize on several schedules, batch sizes, codebooks
    and phi layouts (4 partially shared convs, 1 shared, one per scale); q.quantize, q.forward / q(f) and
    an .encode are refused."""
    name = "residual_quantize"
    _refuse_lookups(name, fn, {"quantize": "minivar's own MultiScaleQuantizer.quantize",
                               "encode": "minivar's own VQVAE.encode"}, _RQ_HINT)
    rng = np.random.default_rng(6)
    g = torch.Generator().manual_seed(0)
    specs = [((1, 2, 3, 4), 64, 8, 3, 4), ((1, 3, 5), 32, 4, 2, 4), ((1, 2, 4, 6, 8), 64, 8, 3, 4)]
    for num_phi in (1, 0):
        pns = _random_schedule(rng, 7, 5)
        specs.append((pns, int(rng.integers(8, 65)), int(rng.integers(2, 9)), int(rng.integers(1, 4)), num_phi))
    for seed, (pns, vocab, c, B, num_phi) in enumerate(specs):
        with _built_apart():
            torch.manual_seed(seed + 1)
            q = _ExerciseQuantizer(vocab, c, pns, num_phi=num_phi).eval()
        f = torch.randn(B, c, pns[-1], pns[-1], generator=g, dtype=_F32)
        want = MultiScaleQuantizer.quantize(q, f)
        label = f"{name}{pns}"
        got = _call(name, fn, q, f.clone())
        if not isinstance(got, list) or len(got) != len(pns):
            raise AssertionError(f"{label}: return a list of {len(pns)} index tensors, one per scale; got "
                                 f"{_describe(got)}")
        got = [_tensor(label, a, f"scale {k}'s indices", b.shape, torch.int64, " = (B, pn*pn) in raster order")
               for k, (a, b) in enumerate(zip(got, want))]
        if all(torch.equal(a, b) for a, b in zip(got, want)):
            continue
        k = next(k for k, (a, b) in enumerate(zip(got, want)) if not torch.equal(a, b))
        hint = _first([
            (lambda: _rq(q, f, phi="none"), "you subtracted up(codes) without phi: the residual update is "
             "f_rest -= q.phi(k, up(codes))"),
            (lambda: _rq(q, f, phi="phis[k]"), "scale k's conv is q.phi(k, h) (conv q.phi_of_scale[k] -- the K "
             "scales share fewer convs); q.phis[k] is another one"),
            (lambda: _rq(q, f, update=False), "each scale must quantise the residual: subtract its contribution "
             "from f_rest before the next scale"),
            (lambda: _rq(q, f, down="nearest"), "downsample with mode='area' (a token averages its patch), "
             "not nearest"),
            (lambda: _rq(q, f, down="bilinear"), "downsample with mode='area' (a token averages its patch), "
             "not bilinear"),
            (lambda: _rq(q, f, up="bilinear"), "upsample the codes with mode='bicubic', not bilinear"),
            (lambda: _rq(q, f, up="nearest"), "upsample the codes with mode='bicubic', not nearest"),
        ], lambda c: all(torch.equal(a, b) for a, b in zip(got, c)))
        if hint is None:
            hint = ("scale 0 is already wrong: area-downsample the residual, then take the nearest code (squared "
                    "L2)") if k == 0 else ("the first scale is right, so look at the update: subtract "
                                           "phi_k(up(codes)) -- bicubic up to the latent side, then q.phi(k, ...) "
                                           "-- from the residual")
        raise AssertionError(f"{label}: scale {k} differs from minivar ({int((got[k] != want[k]).sum())} of "
                             f"{want[k].numel()} codes); {hint}")
    _ok(name, "identical codes to MultiScaleQuantizer.quantize")


# ----------------------------------------------------------------------------- 03 the VAR transformer
def check_adaln_modulate(fn) -> None:
    """fn(x_BLC, scale_B1C, shift_B1C) -> float32 tensor of x's shape: LayerNorm(x) * (1 + scale) + shift, a
    layer norm over the last dim without affine, eps = 1e-6 (F.layer_norm is fine; minivar's AdaLN helpers
    are refused). Checked on several shapes, one with a tiny variance (where eps matters)."""
    name = "adaln_modulate"
    _refuse_lookups(name, fn, {"sublayer": "minivar's own AdaLNBlock.sublayer",
                               "head_input": "minivar's own NextScaleTransformer.head_input"},
                    "F.layer_norm over the last dim, then * (1 + scale) + shift")
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(7)
    cases = [(2, 5, 16, 3.0, 1.0)]
    for _ in range(2):
        cases.append((int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(4, 33)), 2.0, -0.5))
    cases.append((2, 3, 8, 1e-3, 0.0))  # variance ~1e-6: the eps shows
    for B, L, C, spread, centre in cases:
        x = torch.randn(B, L, C, generator=g, dtype=_F32) * spread + centre
        sc, sh = torch.randn(B, 1, C, generator=g, dtype=_F32), torch.randn(B, 1, C, generator=g, dtype=_F32)
        label = f"{name}(x {tuple(x.shape)})"
        got = _tensor(label, _call(name, fn, x.clone(), sc.clone(), sh.clone()), "the output", x.shape,
                      torch.float32, " (x's shape)")
        ln = F.layer_norm(x, (C,), eps=1e-6)
        want = ln * (1 + sc) + sh
        close = lambda c: torch.allclose(got, c, rtol=1e-4, atol=1e-4)  # noqa: E731
        if close(want):
            continue
        var_n1 = x.var(-1, keepdim=True, correction=1)
        hint = _first([
            (lambda: x * (1 + sc) + sh, "normalise x first (layer norm over the channels, no affine)"),
            (lambda: ln * sc + sh, "multiply by (1 + scale), not scale: a zero scale must leave LN(x) unchanged"),
            (lambda: ln * (1 + sh) + sc, "scale and shift are swapped: LN(x) * (1 + scale) + shift"),
            (lambda: F.layer_norm(x, (C,), eps=1e-5) * (1 + sc) + sh, "eps is 1e-6 here (F.layer_norm's default "
             "is 1e-5): pass eps=1e-6"),
            (lambda: (x - x.mean(-1, keepdim=True)) / (var_n1 + 1e-6).sqrt() * (1 + sc) + sh, "layer norm divides "
             "by the biased variance (mean of squares, / C), not the sample variance"),
            (lambda: F.layer_norm(x.transpose(1, 2), (L,), eps=1e-6).transpose(1, 2) * (1 + sc) + sh,
             "normalise over the channels (the last dim), each token on its own, not over the tokens"),
        ], close)
        raise AssertionError(f"{label}: " + (hint or f"max |difference| {(got - want).abs().max().item():.3g} "
                                             "from LayerNorm(x) * (1 + scale) + shift"))
    _ok(name)


# ----------------------------------------------------------------------------- 04 sampling
def check_cfg_mix(fn) -> None:
    """fn(cond, uncond, cfg, k, K) -> float32 tensor of cond's shape: guided logits (1 + t) cond - t uncond with
    VAR's linear ramp t = cfg * k / (K - 1) (0 at the first scale, cfg at the last). cond and uncond are float32
    (B, l, V), cfg a float, k and K ints. (minivar has no separate function for this: the mix is inline in
    minivar.sample.generate.)"""
    name = "cfg_mix"
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(8)
    cond, uncond = torch.randn(2, 4, 10, generator=g, dtype=_F32), torch.randn(2, 4, 10, generator=g, dtype=_F32)
    cases = [(cond, uncond, 1.5, 0, 10), (cond, uncond, 1.5, 9, 10), (cond, uncond, 3.0, 2, 4),
             (cond, uncond, 0.0, 3, 4)]
    for _ in range(5):
        K = int(rng.integers(2, 11))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 10)), int(rng.integers(2, 33)))
        cases.append((torch.randn(shape, generator=g, dtype=_F32), torch.randn(shape, generator=g, dtype=_F32),
                      float(rng.integers(1, 17)) / 4, int(rng.integers(0, K)), K))
    got = []
    for c, u, cfg, k, K in cases:
        got.append(_tensor(f"{name}(cfg={cfg}, k={k}, K={K})", _call(name, fn, c.clone(), u.clone(), cfg, k, K),
                           "the logits", c.shape, torch.float32, " (cond's shape)"))
    close = lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    mix = lambda c, u, t: (1 + t) * c - t * u  # noqa: E731
    bad = [i for i, (c, u, cfg, k, K) in enumerate(cases) if not close(got[i], mix(c, u, cfg * k / (K - 1)))]
    if bad:  # name the mistake that explains every case, else show the first wrong one
        hint = _first([
            (lambda c, u, cfg, k, K: mix(c, u, cfg), "no ramp -- at scale k the guidance is t = cfg * k / (K - 1) "
             "(0 at the first scale, cfg at the last)"),
            (lambda c, u, cfg, k, K: mix(c, u, cfg * k / K), "the ramp reaches cfg at the last scale, k = K - 1: "
             "t = cfg * k / (K - 1), not cfg * k / K"),
            (lambda c, u, cfg, k, K: mix(c, u, cfg * (K - 1 - k) / (K - 1)), "the ramp runs the wrong way: t grows "
             "with k, 0 at the first scale"),
            (lambda c, u, cfg, k, K: mix(u, c, cfg * k / (K - 1)), "cond and uncond are swapped: (1 + t) * cond - "
             "t * uncond"),
            (lambda c, u, cfg, k, K: mix(c, u, cfg * k / (K - 1) - 1), "the mix is (1 + t) * cond - t * uncond"),
            (lambda c, u, cfg, k, K: c + cfg * k / (K - 1) * u, "the mix is (1 + t) * cond - t * uncond"),
        ], lambda formula: all(close(a, formula(*case)) for a, case in zip(got, cases)))
        c, u, cfg, k, K = cases[bad[0]]
        diff = (got[bad[0]] - mix(c, u, cfg * k / (K - 1))).abs().max().item()
        raise AssertionError(f"{name}(cfg={cfg}, k={k}, K={K}): " + (hint or f"max |difference| {diff:.3g} from "
                                                                     "(1 + t) cond - t uncond"))
    _ok(name)


def _top_p_rule(probs64: np.ndarray, top_p: float, strict=True, before=True, unsort=True) -> list[bool]:
    """top-p on float64 probabilities (stable sort): keep a token when the mass before it is < top_p."""
    order = np.argsort(-probs64, kind="stable")
    vals = probs64[order]
    mass = np.cumsum(vals) - (vals if before else 0)
    keep_sorted = mass < top_p if strict else mass <= top_p
    if not unsort:
        return [bool(v) for v in keep_sorted]
    keep = np.zeros(len(vals), bool)
    keep[order] = keep_sorted
    return [bool(v) for v in keep]


def check_top_p_keep(fn) -> None:
    """fn(probs_V, top_p) -> torch.bool tensor of shape (V,), in vocabulary order: the tokens top-p keeps,
    i.e. a token stays when the total probability of the tokens more likely than it is < top_p (so the most
    likely token always stays, and a token whose preceding mass equals top_p exactly is dropped). probs is a
    float32 (V,) probability vector, top_p a float. The rule of minivar.sample.top_k_top_p_candidates, which
    is refused (as is sample_top_k_top_p)."""
    name = "top_p_keep"
    _refuse_lookups(name, fn, {"top_k_top_p_candidates": "minivar's own sample.top_k_top_p_candidates",
                               "sample_top_k_top_p": "minivar's own sample.sample_top_k_top_p"},
                    "sort, cumulative sum, then back to vocabulary order")
    cases = [  # dyadic probabilities: float32 sums are exact, so the "== top_p" ties really happen
        ([0.5, 0.25, 0.125, 0.0625, 0.0625], 0.75),  # the 0.125 has exactly 0.75 before it: dropped
        ([0.5, 0.25, 0.125, 0.125], 0.75),  # both 0.125s have >= 0.75 before them, whichever comes first
        ([0.0625, 0.5, 0.03125, 0.125, 0.25, 0.03125], 0.875),  # 0.0625 has exactly 0.875 before it
        ([0.125, 0.5, 0.125, 0.25], 0.5),  # the 0.25 has exactly 0.5 before it
        ([0.25, 0.5, 0.25], 0.25),  # the top token alone already passes top_p: it stays
        ([0.5, 0.0, 0.5, 0.0], 1.0),  # zero-probability tokens have 1.0 before them: dropped
        ([0.25, 0.25, 0.25, 0.25], 1.0),  # everything stays
        ([0.5, 0.3, 0.15, 0.05], 0.7), ([0.05, 0.15, 0.5, 0.3], 0.81), ([0.9, 0.05, 0.05], 0.5),
    ]
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(9)
    for V in (16, 64, 200):
        probs = (torch.randn(V, generator=g, dtype=_F32) * 2).softmax(0)
        marks = np.cumsum(np.sort(probs.double().numpy())[::-1])
        while True:  # a top_p well away from every cumulative sum: float32 rounding cannot decide
            p = float(rng.uniform(0.05, 0.98))
            if np.abs(marks - p).min() > 1e-4:
                break
        cases.append((probs.tolist(), p))
    for probs, p in cases:
        t = torch.tensor(probs, dtype=torch.float32)
        V = len(probs)
        label = f"{name}(probs={probs if V <= 8 else f'<{V} random>'}, top_p={p})"
        got = _tensor(label, _call(name, fn, t.clone(), p), "the keep mask", (V,), torch.bool,
                      " (one bool per token, True = keep)").tolist()
        p64 = t.double().numpy()
        want = _top_p_rule(p64, p)
        if got == want:
            continue
        hint = _first([
            (lambda: [not w for w in want], "True and False are swapped (True = keep)"),
            (lambda: _top_p_rule(p64, p, before=False), "you compared the mass INCLUDING the token with top_p; "
             "use the mass of the tokens before it (cumsum - probs), so the token that crosses top_p stays and the "
             "most likely token always stays"),
            (lambda: _top_p_rule(p64, p, strict=False), "a token whose preceding mass equals top_p exactly is "
             "dropped: keep while that mass is < top_p, not <="),
            (lambda: _top_p_rule(p64, p, unsort=False), "your mask is in sorted order; put it back in vocabulary "
             "order (keep[order] = keep_sorted)"),
        ], lambda c: got == c)
        if hint is None:
            shown = f"got {got}, expected {want}" if V <= 8 else \
                f"wrong at tokens {[i for i in range(V) if got[i] != want[i]][:8]}"
            hint = (f"{shown}. Sort by probability; keep a token when the mass of the tokens strictly more likely "
                    "than it is still below top_p (so the most likely token always stays)")
        raise AssertionError(f"{label}: {hint}")
    _ok(name)


# ----------------------------------------------------------------------------- 05 Mamba
def check_ssd_step(fn) -> None:
    """fn(h_BHPN, x_BHP, dt_BH, A_H, B_BN, C_BN) -> (y_BHP, h_BHPN), a tuple of two float32 tensors of those
    shapes: one step of the SSM recurrence

        h = exp(dt * A) * h + dt * x (outer) B;   y = h C        (dt already softplus'ed, A < 0, no D term)

    Checked against minivar.models.mamba2.ssd_sequential (refused in the answer, as are ssd_chunked and
    Mamba2.step) on several sizes."""
    from ..models.mamba2 import ssd_sequential
    name = "ssd_step"
    _refuse_lookups(name, fn, {"ssd_sequential": "minivar's own mamba2.ssd_sequential",
                               "ssd_chunked": "minivar's own mamba2.ssd_chunked",
                               "step": "minivar's own Mamba2.step", "_fused_scan": "minivar's own mamba2._fused_scan"},
                    "h = exp(dt A) h + dt x B^T, then y = h C")
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(10)
    sizes = [(2, 3, 4, 5)] + [tuple(int(v) for v in rng.integers(1, 7, size=4)) for _ in range(3)]
    for Bsz, H, P, N in sizes:
        h = torch.randn(Bsz, H, P, N, generator=g, dtype=_F32)
        x = torch.randn(Bsz, H, P, generator=g, dtype=_F32)
        dt = torch.rand(Bsz, H, generator=g, dtype=_F32) * 0.5 + 0.05
        A = -torch.rand(H, generator=g, dtype=_F32) * 2 - 0.5
        Bm, Cm = torch.randn(Bsz, N, generator=g, dtype=_F32), torch.randn(Bsz, N, generator=g, dtype=_F32)
        label = f"{name}(batch={Bsz}, H={H}, P={P}, N={N})"
        out = _call(name, fn, h.clone(), x.clone(), dt.clone(), A.clone(), Bm.clone(), Cm.clone())
        if not isinstance(out, tuple) or len(out) != 2:
            raise AssertionError(f"{label}: return a tuple (y, h_new), got {_describe(out)}")
        y_shape, h_shape = (Bsz, H, P), (Bsz, H, P, N)
        if all(isinstance(o, torch.Tensor) for o in out) and y_shape != h_shape and \
                tuple(out[0].shape) == h_shape and tuple(out[1].shape) == y_shape:
            raise AssertionError(f"{label}: return (y, h_new) in this order")
        y = _tensor(label, out[0], "y", y_shape, torch.float32, " = (batch, H, P)")
        h_new = _tensor(label, out[1], "h_new", h_shape, torch.float32, " = (batch, H, P, N)")
        y_ref, h_ref = ssd_sequential(x[:, None], dt[:, None], A, Bm[:, None, None], Cm[:, None, None],
                                      h_BHPN=h.clone())
        y_ref = y_ref[:, 0]
        close = lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
        outer = lambda u, v: u[..., None] * v[:, None, None]  # noqa: E731  (B,H,P) x (B,N) -> (B,H,P,N)
        decay = torch.exp(dt * A)[..., None, None]
        if not close(h_new, h_ref):
            hint = _first([
                (lambda: decay * h + outer(x, Bm), "the input term is dt * x (outer) B -- you dropped dt"),
                (lambda: torch.exp(A)[:, None, None] * h + outer(dt[..., None] * x, Bm), "the decay is exp(dt * A), "
                 "not exp(A): dt sets how much to forget"),
                (lambda: torch.exp(-dt * A)[..., None, None] * h + outer(dt[..., None] * x, Bm), "A is already "
                 "negative (A = -exp(A_log)): the decay is exp(dt * A) < 1, no minus sign"),
                (lambda: decay * h + outer(dt[..., None] * x, Cm), "B writes into the state, C reads from it: "
                 "h uses B, y uses C"),
            ], lambda c: close(h_new, c))
            raise AssertionError(f"{label}: " + (hint or f"new state off by {(h_new - h_ref).abs().max().item():.3g}"))
        if not close(y, y_ref):
            hint = _first([
                (lambda: (h @ Cm[:, None, :, None]).squeeze(-1), "read y from the NEW state: y = h_new C"),
                (lambda: (h_ref @ Bm[:, None, :, None]).squeeze(-1), "y reads the state with C, not B"),
            ], lambda c: close(y, c))
            raise AssertionError(f"{label}: " + (hint or f"y off by {(y - y_ref).abs().max().item():.3g}"))
    _ok(name, "matches minivar.models.mamba2.ssd_sequential")


# ----------------------------------------------------------------------------- 06 M-VAR
def check_rescan_token_steps(fn) -> None:
    """fn(patch_nums) -> an int (Python int, numpy integer or 0-d integer tensor; not a float): Mamba token-steps
    per block when every scale re-scans the whole prefix, i.e. the sum over k of the tokens of scales 0..k.
    Checked on the notebook's schedules and random ones."""
    name = "rescan_token_steps"
    rng = np.random.default_rng(11)
    for pns in SCHEDULES + [_random_schedule(rng, 20, 8) for _ in range(5)]:
        label = f"{name}{pns}"
        got = _int(label, _call(name, fn, pns), "the token-step count")
        ends = scales.offsets(pns)[1:]
        want = sum(ends)
        if got == want:
            continue
        hint = _first([
            (lambda: ends[-1], f"{got} = L is the cached cost; without a state cache step k re-runs all tokens of "
             "scales 0..k"),
            (lambda: sum(ends[:-1]), "you left out the last step: step K-1 re-scans all L tokens too"),
            (lambda: len(pns) * ends[-1], "step k scans only the tokens of scales 0..k, not all L"),
        ], lambda c: got == c)
        raise AssertionError(f"{label}: " + (hint or f"got {got}, expected {want} (sum over k of the tokens of "
                                             "scales 0..k)"))
    _ok(name, f"{sum(scales.offsets(SCHEDULES[-1])[1:]):,} vs {scales.num_tokens(SCHEDULES[-1])} at 256 px")


# ----------------------------------------------------------------------------- 07 the Triton kernel
def check_key_range(fn) -> None:
    """fn(offsets, t, mode) -> (lo, hi), a tuple of two ints (Python ints, numpy integers or 0-d integer
    tensors): the contiguous key range query t may see, hi exclusive. offsets is a list of Python ints
    [0, ..., L], t an int in [0, L), mode "causal" (VAR) or "intra" (M-VAR). Every t of the notebook's
    schedules and of random ones; minivar's mask / key-range helpers are refused."""
    name = "key_range"
    _refuse_lookups(name, fn, {"_scale_bounds": "minivar's own kernels.scale_attention._scale_bounds",
                               "scale_mask": "minivar's own kernels.scale_attention.scale_mask",
                               "_spans": "minivar's own models.attention._spans",
                               "_mask": "minivar's own models.attention._mask",
                               "block_causal_mask": "minivar's own scales.block_causal_mask",
                               "block_diagonal_mask": "minivar's own scales.block_diagonal_mask"},
                    "find the scale k with offsets[k] <= t < offsets[k+1]")
    rng = np.random.default_rng(12)
    for pns in SCHEDULES[:3] + [_random_schedule(rng, 7, 5) for _ in range(3)]:
        offs = scales.offsets(pns)
        sid = scales.scale_ids(pns).tolist()
        for mode, make in (("causal", scales.block_causal_mask), ("intra", scales.block_diagonal_mask)):
            mask = make(pns)
            for t in range(offs[-1]):
                label = f"{name}(offsets={offs}, t={t}, mode={mode!r})"
                got = _pair(label, _call(name, fn, list(offs), t, mode), "(lo, hi)")
                lo, hi = (_int(label, v, w) for v, w in zip(got, ("lo", "hi")))
                allowed = mask[t].nonzero().flatten()
                want = (int(allowed[0]), int(allowed[-1]) + 1)
                if (lo, hi) == want:
                    continue
                k = sid[t]
                prev = (0 if mode == "causal" else offs[k - 1], offs[k]) if k else None
                hint = _first([
                    (lambda: (want[0], want[1] - 1), "hi is exclusive: the end of t's scale, offsets[k+1]"),
                    (lambda: prev, f"t = offsets[{k}] is the first token of scale {k}: offsets[k] <= t < offsets[k+1]"),
                    (lambda: (offs[k], want[1]), "'causal' (VAR) also sees every coarser scale: lo = 0"),
                    (lambda: (0, want[1]), "'intra' (M-VAR) sees only t's own scale: lo = offsets[k]"),
                    (lambda: (want[0], offs[-1]), "a query sees keys up to the end of its own scale, hi = "
                     "offsets[k+1], not the whole sequence"),
                    (lambda: (want[0], t + 1), "inside its scale a query sees every key, also the later ones: hi is "
                     "the end of t's scale, not t + 1"),
                ], lambda c: (lo, hi) == c)
                raise AssertionError(f"{label}: got {(lo, hi)}, expected {want}: t is in scale {k}"
                                     + (f"; {hint}" if hint else ""))
    _ok(name)


# ----------------------------------------------------------------------------- 08 evaluation
def check_mmd2_unbiased(fn) -> None:
    """fn(x_md, y_md) -> a float (Python float, numpy float or 0-d tensor): the unbiased MMD^2 with the KID kernel
    (a.b / d + 1)^3 for one subset of equal size m. x and y are float64 numpy arrays (m, d). Checked against
    minivar.evaluation.metrics.kid on one subset of all m points (kid itself is refused)."""
    from ..evaluation import metrics
    name = "mmd2_unbiased"
    _refuse_lookups(name, fn, {"kid": "minivar's own evaluation.metrics.kid"},
                    "the three kernel matrices, diagonals left out of the within-set means")
    rng = np.random.default_rng(0)
    cases = [(20, 5, 0.5), (30, 8, 0.0), (12, 3, 2.0)]
    for _ in range(3):
        cases.append((int(rng.integers(4, 25)), int(rng.integers(1, 10)), float(rng.uniform(0, 1.5))))
    for m, d, shift in cases:
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d)) + shift
        label = f"{name}(m={m}, d={d})"
        got = _float(label, _call(name, fn, x.copy(), y.copy()), "MMD^2")
        want = metrics.kid(x, y, num_subsets=1, subset_size=m)[0]
        close = lambda c: np.isclose(got, c, rtol=1e-6, atol=1e-9)  # noqa: E731
        if close(want):
            continue
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        k1 = [(a @ b.T + 1) ** 3 for a, b in ((x, x), (y, y), (x, y))]
        off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
        hint = _first([
            (lambda: kxx.mean() + kyy.mean() - 2 * kxy.mean(), "that is the biased estimate -- leave the diagonal "
             "k(x_i, x_i) out of the within-set means and divide by m (m - 1)"),
            (lambda: off(k1[0]) + off(k1[1]) - 2 * k1[2].mean(), "the kernel is (a.b / d + 1)^3 -- divide the dot "
             "product by d"),
            (lambda: (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / m ** 2 - 2 * kxy.mean(),
             "without the diagonal there are m (m - 1) pairs: divide by m (m - 1), not m^2"),
            (lambda: off(kxx) + off(kyy) - 2 * off(kxy), "keep all m^2 pairs in the cross term: k(x_i, y_i) is not "
             "a point with itself"),
        ], close)
        raise AssertionError(f"{label}: " + (hint or f"got {got:.6g}, expected {want:.6g} (metrics.kid on one "
                                             "subset of all m points)"))
    _ok(name, "matches metrics.kid on one subset")


# ----------------------------------------------------------------------------- 11 zero-shot editing
def check_scale_masks(fn) -> None:
    """fn(mask_HW, patch_nums) -> a list of K torch.bool tensors, scale k's of shape exactly (1, pn_k * pn_k) in
    raster order: True where at least half of the token's area is masked (area-downsampled mask >= 0.5).
    mask_HW is a float32 0/1 tensor (H, W). Checked against minivar.sample.scale_masks (refused in the answer),
    with masks that make tokens exactly half masked."""
    from ..sample import scale_masks
    name = "scale_masks"
    _refuse_lookups(name, fn, {"scale_masks": "minivar's own sample.scale_masks"},
                    "F.interpolate(mask, size=(pn, pn), mode='area'), then >= 0.5")
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(13)
    ii, jj = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    stripes = ((jj % 4) < 2).float()  # every 4x4 and 8x8 token exactly half masked
    checker = ((ii + jj) % 2).float()  # every token of an even side exactly half masked
    centre = torch.zeros(16, 16, dtype=_F32)
    centre[4:12, 4:12] = 1
    bottom = torch.zeros(16, 16, dtype=_F32)
    bottom[8:] = 1
    corner = torch.zeros(16, 16, dtype=_F32)
    corner[:4, :8] = 1  # tells raster order from its transpose
    blob = (torch.rand(16, 16, generator=g, dtype=_F32) > 0.6).float()
    right = torch.zeros(32, 32, dtype=_F32)
    right[:, 20:] = 1
    cases = [("stripes", stripes, (1, 2, 4, 8)), ("checkerboard", checker, (1, 2, 4, 8, 16)),
             ("corner", corner, (1, 2, 4)), ("centre", centre, (1, 2, 3, 4)), ("border", 1 - centre, (1, 2, 3, 4)),
             ("bottom half", bottom, (1, 2, 3, 4)), ("random", blob, (1, 2, 4)), ("right", right, (1, 2, 3, 4, 6, 8))]
    for i in range(3):
        side = int(rng.choice([16, 24, 32]))
        r = torch.zeros(side, side, dtype=_F32)
        y0, x0 = (int(v) for v in rng.integers(0, side // 2, size=2))
        r[y0:y0 + int(rng.integers(2, side // 2)), x0:x0 + int(rng.integers(2, side // 2))] = 1
        cases.append((f"random rectangle {i}", r, _random_schedule(rng, min(side, 12), 5)))
    answers = []
    for what, mask, pns in cases:
        label = f"{name}({what}, {pns})"
        got = _call(name, fn, mask.clone(), pns)
        if not isinstance(got, list) or len(got) != len(pns):
            raise AssertionError(f"{label}: return a list of {len(pns)} masks, one per scale; got {_describe(got)}")
        answers.append([_tensor(label, a, f"scale {k}'s mask", (1, pn * pn), torch.bool, f" = (1, pn*pn) with pn = "
                                f"{pn}; True = regenerate") for k, (a, pn) in enumerate(zip(got, pns))])
    same = lambda xs, ys: all(torch.equal(a, b) for a, b in zip(xs, ys))  # noqa: E731
    wrong = [i for i, (got, (_, mask, pns)) in enumerate(zip(answers, cases)) if not same(got, scale_masks(mask, pns))]
    if wrong:  # name the mistake that explains every case, else show the first wrong one
        area = lambda mask, pn: F.interpolate(mask[None, None].float(), size=(pn, pn), mode="area")  # noqa: E731
        hint = _first([
            (lambda mask, pns: [~b for b in scale_masks(mask, pns)], "True and False are swapped -- True marks a "
             "token to regenerate"),
            (lambda mask, pns: [area(mask, pn).flatten(1) > 0.5 for pn in pns], "a token exactly half masked must "
             "count as masked: use >= 0.5"),
            (lambda mask, pns: [area(mask, pn).flatten(1) > 0 for pn in pns], "a token is regenerated when at least "
             "HALF of it is masked, not when any pixel is"),
            (lambda mask, pns: [area(mask, pn).transpose(-1, -2).flatten(1) >= 0.5 for pn in pns], "raster order is "
             "row by row: flatten the (pn, pn) map as it is, not its transpose"),
            (lambda mask, pns: [F.interpolate(mask[None, None].float(), size=(pn, pn), mode="nearest").flatten(1)
                                >= 0.5 for pn in pns], "nearest-neighbour downsampling looks at one pixel per token; "
             "average over the token's patch (mode='area')"),
        ], lambda variant: all(same(got, variant(mask, pns)) for got, (_, mask, pns) in zip(answers, cases)))
        what, mask, pns = cases[wrong[0]]
        if hint is None:
            got, want = answers[wrong[0]], scale_masks(mask, pns)
            k = next(k for k, (a, b) in enumerate(zip(got, want)) if not torch.equal(a, b))
            hint = (f"scale {k} ({pns[k]}x{pns[k]}) differs from minivar.sample.scale_masks at "
                    f"{int((got[k] != want[k]).sum())} tokens")
        raise AssertionError(f"{name}({what}, {pns}): {hint}")
    _ok(name, "matches minivar.sample.scale_masks")


__all__ = [n for n in dir() if n.startswith("check_")]
