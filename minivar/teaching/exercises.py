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
  that happen to share the name are fine. Helpers defined next to the answer (Triton kernels included)
  are searched too. Where the checker hands the learner a minivar object (the quantiser, the
  tokenizer, a transformer block), that object's own shortcut methods also refuse to run.
* **Exact types.** Each docstring says what to return: tensors of the stated shape and dtype (a
  right value in another shape or dtype fails and the message names the expected one), lists of
  Python ints, and "a float": a Python float, a numpy float or a 0-d float tensor (an int does not
  count); "an int": a Python int, a numpy integer or a 0-d integer tensor (a float does not count).
* **Every edge case reachable.** Ties and half-way cases use dyadic numbers (0.5, 0.25, ...) that
  float32 sums exactly, so e.g. top-p's "preceding mass exactly top_p" token really occurs.

The learner's function is called only as ``fn(*args)`` with picklable arguments (tensors, numbers,
lists, tuples, numpy arrays, modules); nothing relies on the function changing its inputs.

The ``check_predict_*`` checkers take a value instead of a function: a prediction the learner writes
down before running the cell that reveals it, ``check_predict_decay(my_prediction)``. A number may be
an int or a float (equal within 1e-6, relative); None, ``...`` or NotImplementedError mean "not
answered yet"; the message for a wrong prediction explains the reasoning. A grader hands every
checker a proxy of the answer cell, not a value: then the prediction is read from the cell's last
``my_prediction = ...`` (a literal, or plain arithmetic such as ``1 + 16 + 81 + 256``).

tests/test_exercises.py shows that every checker passes on a reference solution and fails on the
blank stub, on a None, on typical wrong answers, on a lookup and on the right values in the wrong
shape or type.
"""
from __future__ import annotations

import ast
import contextlib
import copy
import functools
import inspect
import itertools
import textwrap

import numpy as np
import torch
import torch.nn.functional as F

from .. import scales
from ..models.blocks import MVARBlock
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


def _from_roots(module: str | None, roots: tuple = _ROOTS) -> bool:
    return (module or "").split(".")[0] in roots


def _is_triton_kernel(obj) -> bool:
    """A @triton.jit function: a JITFunction, or an InterpretedFunction under TRITON_INTERPRET=1 (both keep the
    Python function as ``.fn``). Recognised without importing triton."""
    return type(obj).__module__.split(".")[0] == "triton" and inspect.isfunction(getattr(obj, "fn", None))


def _find_lookup(fn, forbidden, seen=None, roots: tuple = _ROOTS) -> str | None:
    """The first forbidden name the answer uses (see the module docstring), or None. ``roots``: the packages
    whose implementations count (minivar and scipy; the Triton exercise adds torch, for its softmax)."""
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
        if real in forbidden and _from_roots(getattr(target, "__module__", None), roots):
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
                if (_from_roots(node.module, roots) or node.level) and al.name in forbidden:
                    return al.name
                star |= al.name == "*" and _from_roots(node.module, roots)
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
            if real in forbidden and _from_roots(getattr(obj, "__module__", None), roots):
                return real
            if _is_triton_kernel(obj):  # a kernel written next to the answer: search its Python function
                obj = obj.fn
            if inspect.isfunction(obj) and obj.__module__ == getattr(fn, "__module__", None) and obj is not fn:
                helpers.append(obj)  # a helper written next to the answer: search it too
    for h in helpers:
        if h not in seen and len(seen) < 20:
            seen.add(h)
            hit = _find_lookup(h, forbidden, seen, roots)
            if hit:
                return hit
    return None


def _lookup_message(name: str, what: str, hint: str) -> str:
    return f"{name}: your answer calls {what} -- the exercise is to write it yourself ({hint})"


def _refuse_lookups(name: str, fn, forbidden: dict, hint: str, roots: tuple = _ROOTS) -> None:
    """forbidden: {name the answer may not use: what it is, e.g. "minivar's own scales.offsets"}."""
    if forbidden:
        hit = _find_lookup(fn, forbidden, roots=roots)
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


_TI_HINT = ("add q.upsample_phi(j, q.codes_to_map(indices[j], pn_j), side) for j < k, area-down to pn_k, "
            "flatten to (B, pn_k^2, Cv)")
_MB_HINT = ("block.ada_lin(cond) -> [gates | scales | shifts]; x = x + gate * f(LayerNorm(x, eps=block.eps) * "
            "(1 + scale) + shift) for f = block.attn, block.mamba, block.ffn")


class _ExerciseTeacherQuantizer(MultiScaleQuantizer):
    """The quantiser ``check_teacher_input`` hands out: its own teacher-forcing paths refuse to run."""

    def teacher_input(self, indices):
        raise AssertionError(_lookup_message("teacher_input", "minivar's own MultiScaleQuantizer.teacher_input",
                                             _TI_HINT))

    def next_input(self, f_hat_BChw, k, codes):
        raise AssertionError(_lookup_message("teacher_input", "minivar's own MultiScaleQuantizer.next_input",
                                             _TI_HINT))


class _ExerciseMVARBlock(MVARBlock):
    """The block ``check_mvar_block`` hands out: its own forward, sub-layer and modulation code refuse to run;
    its modules (attn, mamba, ffn, ada_lin) and eps work as usual."""

    def forward(self, x_BLC, cond_BD, state=None):
        raise AssertionError(_lookup_message("mvar_block", "minivar's own MVARBlock.forward (block(x, cond))",
                                             _MB_HINT))

    def sublayer(self, x_BLC, fn, mod):
        raise AssertionError(_lookup_message("mvar_block", "minivar's own AdaLNBlock.sublayer", _MB_HINT))

    def modulations(self, cond_BD, state=None):
        raise AssertionError(_lookup_message("mvar_block", "minivar's own AdaLNBlock.modulations", _MB_HINT))


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


@torch.no_grad()
def _teacher(q, idx, down="area", phi=True, upto="before", raster="rows"):
    """Teacher-forcing inputs with switchable parts (for recognising mistakes): (B, L - pn_0^2, Cv)."""
    pns, side = q.patch_nums, q.patch_nums[-1]
    f_hat, after = 0, []
    for j, pn in enumerate(pns):
        h = q.codes_to_map(idx[j], pn)
        if j != len(pns) - 1:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f_hat = f_hat + (q.phi(j, h) if phi else h)
        after.append(f_hat)  # f_hat after scales 0..j
    rows = []
    for k, pn in enumerate(pns[1:], start=1):
        f = after[k - 1] if upto == "before" else after[k]
        x = f if pn == side else F.interpolate(f, size=(pn, pn), mode=down)
        x = x.transpose(-1, -2) if raster == "columns" else x
        rows.append(x.flatten(2).transpose(1, 2))
    return torch.cat(rows, dim=1)


def check_teacher_input(fn) -> None:
    """fn(q, indices) -> float32 tensor (B, L - pn_0^2, Cv) (L - 1 rows when the schedule starts at 1): the
    transformer's teacher-forcing input. For k = 1..K-1: f_hat after the scales before k (the sum over j < k of
    q.upsample_phi(j, q.codes_to_map(indices[j], pn_j), side)), area-downsampled to pn_k x pn_k and flattened in
    raster order to (B, pn_k^2, Cv); the K-1 pieces concatenated along dim 1. ``q`` is a MultiScaleQuantizer,
    ``indices`` a list of K int64 tensors (B, pn_k^2). Checked against MultiScaleQuantizer.teacher_input on
    several schedules, batch sizes, codebooks and phi layouts; q.teacher_input and q.next_input are refused
    (indices_to_fhat, upsample_phi, codes_to_map, area_down and phi are fine)."""
    name = "teacher_input"
    _refuse_lookups(name, fn, {"teacher_input": "minivar's own MultiScaleQuantizer.teacher_input",
                               "next_input": "minivar's own MultiScaleQuantizer.next_input"}, _TI_HINT)
    rng = np.random.default_rng(14)
    g = torch.Generator().manual_seed(0)
    specs = [((1, 2, 3, 4), 64, 8, 3, 4), ((1, 3, 5), 32, 4, 2, 4)]
    for num_phi in (1, 0):
        specs.append((_random_schedule(rng, 7, 5), int(rng.integers(8, 65)), int(rng.integers(2, 9)),
                      int(rng.integers(1, 4)), num_phi))
    for seed, (pns, vocab, c, B, num_phi) in enumerate(specs):
        with _built_apart():
            torch.manual_seed(seed + 20)
            q = _ExerciseTeacherQuantizer(vocab, c, pns, num_phi=num_phi).eval()
            plain = MultiScaleQuantizer(vocab, c, pns, num_phi=num_phi).eval()
        plain.load_state_dict(q.state_dict())
        idx = [torch.randint(vocab, (B, pn * pn), generator=g) for pn in pns]
        with _built_apart():  # its f_hat starts as zeros of the default dtype
            want = MultiScaleQuantizer.teacher_input(plain, idx)
        L, rows = scales.num_tokens(pns), scales.num_tokens(pns) - pns[0] ** 2
        label = f"{name}{pns}"
        got = _call(name, fn, q, [i.clone() for i in idx])
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else None
        if shape == (B, c, rows) and c != rows:
            raise AssertionError(f"{label}: that is channels first, {shape}; the transformer reads one token per row: "
                                 f"(B, L - pn_0^2, Cv) = {(B, rows, c)} -- flatten each map to (B, pn^2, Cv) "
                                 "(.flatten(2).transpose(1, 2))")
        if shape == (B, L, c):
            raise AssertionError(f"{label}: that has L = {L} rows, one for every token of every scale; the teacher "
                                 f"input has none for scale 0 (the start token stands there) and never holds the "
                                 f"last scale's f_hat: for k = 1..K-1 only, L - pn_0^2 = {rows} rows")
        got = _tensor(label, got, "the teacher input", (B, rows, c), torch.float32,
                      " = (B, L - pn_0^2, Cv): scales 1..K-1, raster order, channels last")
        close = lambda a: torch.allclose(got, a, rtol=1e-4, atol=1e-5)  # noqa: E731
        if close(want):
            continue
        hint = _first([
            (lambda: _teacher(q, idx, upto="after"), "that is f_hat AFTER scale k: it already holds scale k's own "
             "codes, so the model would read the answer it must predict; scale k's input is f_hat after the scales "
             "before k (j < k)"),
            (lambda: _teacher(q, idx, phi=False), "each scale's upsampled codes pass through its phi before they are "
             "added: q.upsample_phi(j, ...) (bicubic up, then q.phi(j, ...))"),
            (lambda: _teacher(q, idx, down="nearest"), "downsample f_hat with mode='area' (a token averages its "
             "patch), not nearest"),
            (lambda: _teacher(q, idx, down="bilinear"), "downsample f_hat with mode='area' (a token averages its "
             "patch), not bilinear"),
            (lambda: _teacher(q, idx, raster="columns"), "raster order is row by row: flatten the (pn, pn) map as "
             "it is, not its transpose"),
            (lambda: want.transpose(1, 2).reshape(B, rows, c), "reshaping (B, Cv, n) to (B, n, Cv) scrambles the "
             "numbers: transpose(1, 2) instead"),
        ], close)
        raise AssertionError(f"{label}: " + (hint or "differs from MultiScaleQuantizer.teacher_input by "
                                             f"{(got - want).abs().max().item():.3g}"))
    _ok(name, "matches MultiScaleQuantizer.teacher_input")


def check_scale_loss_acc(fn) -> None:
    """fn(logits_BLV, targets_BL, patch_nums) -> (loss_K, acc_K), a tuple of two float32 tensors of shape (K,):
    scale k's mean cross-entropy and its accuracy (the fraction of its tokens whose argmax is the target), both
    over all B x pn_k^2 tokens of the scale. logits are float32 (B, L, V), targets int64 (B, L). Checked against
    minivar.models.losses.next_scale_loss (refused in the answer, as is loss_stats)."""
    from ..models.losses import next_scale_loss
    name = "scale_loss_acc"
    _refuse_lookups(name, fn, {"next_scale_loss": "minivar's own models.losses.next_scale_loss",
                               "loss_stats": "minivar's own models.losses.loss_stats"},
                    "F.cross_entropy(..., reduction='none') and argmax == target per token, then a mean per scale")
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(15)
    cases = [(SCHEDULES[0], 2, 16), (SCHEDULES[2], 3, 10), (SCHEDULES[1], 1, 32)]
    for _ in range(3):
        cases.append((_random_schedule(rng, 6, 5), int(rng.integers(1, 5)), int(rng.integers(3, 40))))
    for pns, B, V in cases:
        L, K = scales.num_tokens(pns), len(pns)
        logits = torch.randn(B, L, V, generator=g, dtype=_F32) * 2
        targets = torch.randint(V, (B, L), generator=g)
        hit_some = torch.rand(B, L, generator=g, dtype=_F32) < 0.5  # about half the tokens hit
        targets = torch.where(hit_some, logits.argmax(-1), targets)
        label = f"{name}(patch_nums={pns}, B={B}, V={V})"
        out = _pair(label, _call(name, fn, logits.clone(), targets.clone(), pns), "(loss_K, acc_K)")
        ref = next_scale_loss(logits, targets, pns)
        want = [torch.tensor(ref[key], dtype=torch.float64) for key in ("scale_loss", "scale_acc")]
        ce = F.cross_entropy(logits.reshape(B * L, V), targets.reshape(B * L), reduction="none").view(B, L).double()
        hit = (logits.argmax(-1) == targets).double()
        offs = scales.offsets(pns)
        by_pn = [0, *itertools.accumulate(pns)]
        per = lambda x, red, o=offs: torch.stack([red(x[:, b:e]) for b, e in zip(o[:-1], o[1:])])  # noqa: E731
        for i, (what, x) in enumerate((("loss_K", ce), ("acc_K", hit))):
            meaning = " = (K,): one value per scale"
            v = out[i]
            if not (isinstance(v, torch.Tensor) and tuple(v.shape) == (K,)):
                _tensor(label, v, what, (K,), torch.float32, meaning)
            v = v.detach().double()
            if torch.allclose(v, want[i], rtol=1e-5, atol=1e-5):
                _tensor(label, out[i], what, (K,), torch.float32, meaning)
                continue
            kind = "loss" if i == 0 else "accuracy"
            summed = ("that is a count of hits; the accuracy is a fraction: hits / (B x pn^2)" if i else
                      "that is the summed cross-entropy; take the mean over the scale's B x pn^2 tokens")
            hint = _first([
                (lambda: per(x, torch.sum), summed),
                (lambda: 100 * want[i] if i else want[i], "that is a percentage; return a fraction in [0, 1]"),
                (lambda: x.mean().expand(K), f"one {kind} repeated K times; compute it per scale, over scale k's "
                 "tokens offsets[k]:offsets[k+1] only"),
                (lambda: per(x, torch.mean, by_pn), "scale k holds pn_k x pn_k tokens: split the sequence at [0, "
                 "n_0, n_0 + n_1, ...] with n_k = pn_k^2, not pn_k"),
                (lambda: per(x[:1], torch.mean), "average over the whole batch, not the first image only"),
            ], lambda c: torch.allclose(v, c.double(), rtol=1e-5, atol=1e-5))
            raise AssertionError(f"{label}: {what}: " + (hint if hint else f"got {[round(a, 4) for a in v.tolist()]},"
                                 f" expected {[round(a, 4) for a in want[i].tolist()]}"))
    _ok(name, "matches minivar.models.losses.next_scale_loss")


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


def _attend(q, k, v, scale, dim=-1, mask=None):
    """softmax(q k^T * scale) v in float64, the softmax over ``dim`` (for recognising mistakes)."""
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(dim) @ v.double()


def check_cached_attention(fn) -> None:
    """fn(q_BHnD, k_BHnD, v_BHnD, cache_k_BHlD, cache_v_BHlD) -> (out_BHnD, new_cache_k, new_cache_v), a tuple of
    three float32 tensors: one KV-cached sampling step of VAR's attention. The n queries, keys and values are
    the new scale's; the caches hold the keys and values of all earlier scales (l = 0 at the first scale). Append
    the new keys / values to the caches (new_cache_k = the cached keys, then the new ones: (B, H, l + n, D)) and
    let the new queries attend to all of them, softmax(q k^T / sqrt(D)) v.

    Checked by sampling whole schedules scale by scale, the caches the answer returned fed back into the next
    step: every step must equal the rows of that scale in full block-causal attention over the whole sequence
    (the cached step computes what the uncached model computes). F.scaled_dot_product_attention is fine;
    minivar's KVCache, SelfAttention and scale_attention are refused."""
    name = "cached_attention"
    _refuse_lookups(name, fn, {"KVCache": "minivar's own models.caches.KVCache",
                               "SelfAttention": "minivar's own models.blocks.SelfAttention",
                               "scale_attention": "minivar's own scale_attention",
                               "blocks_attention": "minivar's own models.attention.blocks_attention",
                               "scale_attention_ref": "minivar's own kernels.scale_attention.scale_attention_ref",
                               "scale_attention_forward": "minivar's own kernels.scale_attention."
                                                          "scale_attention_forward"},
                    "torch.cat the new keys / values after the cached ones, then softmax(q k^T / sqrt(D)) v")
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(16)
    cases = [(2, 2, 8, SCHEDULES[0]), (1, 3, 16, SCHEDULES[2])]
    for _ in range(3):
        cases.append((int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.choice([4, 8, 16, 32])),
                      _random_schedule(rng, 5, 4)))
    for B, H, D, pns in cases:
        L, offs = scales.num_tokens(pns), scales.offsets(pns)
        q, k, v = (torch.randn(B, H, L, D, generator=g, dtype=_F32) for _ in range(3))
        scale = 1 / D ** 0.5
        want = _attend(q, k, v, scale, mask=scales.block_causal_mask(pns))
        ck, cv = torch.zeros(B, H, 0, D, dtype=_F32), torch.zeros(B, H, 0, D, dtype=_F32)
        for s, (b, e) in enumerate(zip(offs[:-1], offs[1:])):
            label = f"{name}(patch_nums={pns}, scale {s}: n = {e - b} new, l = {b} cached, B={B}, H={H}, D={D})"
            qs, ks, vs = q[:, :, b:e], k[:, :, b:e], v[:, :, b:e]
            got = _call(name, fn, qs.clone(), ks.clone(), vs.clone(), ck.clone(), cv.clone())
            if not isinstance(got, tuple) or len(got) != 3:
                raise AssertionError(f"{label}: return a tuple (out, new_cache_k, new_cache_v), got {_describe(got)}")
            n = e - b
            out = _tensor(label, got[0], "out", (B, H, n, D), torch.float32, " = (B, H, n, D): one row per new query")
            if not torch.allclose(out.double(), want[:, :, b:e], rtol=1e-4, atol=1e-5):
                keys, vals = torch.cat((ck, ks), 2), torch.cat((cv, vs), 2)
                causal = torch.ones(n, b + n, dtype=torch.bool)
                hint = _first([
                    (lambda: _attend(qs, ck, cv, scale), "the new queries attend to the cache only; they also see "
                     "their own scale's keys: append k, v to the cache first, then attend to all of it"),
                    (lambda: _attend(qs, ks, vs, scale), "the new queries attend to their own scale only (that is "
                     "M-VAR's attention); VAR's also see every cached, earlier scale"),
                    (lambda: _attend(qs, keys, vals, 1.0), "scale the scores by 1/sqrt(D) before the softmax"),
                    (lambda: _attend(qs, keys, vals, 1 / D), "the scale is 1/sqrt(D), not 1/D"),
                    (lambda: _attend(qs, keys, vals, scale, dim=-2), "softmax over the keys (the last dim), so "
                     "each query's weights sum to 1 -- not over the queries"),
                    (lambda: _attend(qs, keys, vals, scale, mask=causal.tril()), "no causal mask: a query sees every "
                     "key of its own scale (and all cached ones) -- leave is_causal off"),
                    (lambda: _attend(qs, keys, vals, scale, mask=causal.tril(b)), "no causal mask: a query sees "
                     "every key of its own scale (and all cached ones) -- leave is_causal off"),
                ], lambda c: torch.allclose(out.double(), c, rtol=1e-4, atol=1e-5))
                raise AssertionError(f"{label}: " + (hint or "out differs from full block-causal attention by "
                                     f"{(out.double() - want[:, :, b:e]).abs().max().item():.3g}"))
            new = []
            for what, x, old, fresh, swapped in (("new_cache_k", got[1], ck, ks, torch.cat((cv, vs), 2)),
                                                 ("new_cache_v", got[2], cv, vs, torch.cat((ck, ks), 2))):
                kind = "keys" if what == "new_cache_k" else "values"
                if isinstance(x, torch.Tensor) and x.shape == old.shape and torch.equal(x.detach(), old):
                    raise AssertionError(f"{label}: {what} is the old cache; append this scale's {kind} to it "
                                         "(torch.cat((cache, new), dim=2)) so that the next scales see them")
                if b and isinstance(x, torch.Tensor) and x.shape == fresh.shape and torch.equal(x.detach(), fresh):
                    raise AssertionError(f"{label}: {what} holds this scale's {kind} only; keep the earlier scales' "
                                         "too: the cache grows to all the tokens fed so far")
                full = torch.cat((old, fresh), 2)
                x = _tensor(label, x, what, full.shape, torch.float32, " = (B, H, l + n, D): the cache, then this "
                            "scale")
                if not torch.equal(x, full):
                    hint = ("append the new ones after the cached ones (scale order)" if torch.equal(
                        x, torch.cat((fresh, old), 2)) else "it holds the other tensor: return (out, new_cache_k, "
                            "new_cache_v) in this order" if torch.equal(x, swapped) else
                            "it must be the cached entries followed by this scale's, unchanged")
                    raise AssertionError(f"{label}: {what} is wrong: {hint}")
                new.append(x)
            ck, cv = new  # the answer's own caches go into the next step
    _ok(name, "each cached step equals the uncached block-causal attention")


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


@torch.no_grad()
def _mvar_block(block, x, cond, layout="official", one_plus=True, order=((0, 0), (1, 1), (2, 2)), residual=True,
                gated=True, eps=None):
    """An M-VAR block with switchable parts (for recognising mistakes). order: (sub-layer, modulation) pairs."""
    C, n = x.shape[-1], 3
    vecs = block.ada_lin(cond).view(-1, 1, 3 * n, C).unbind(2)
    if layout == "official":  # [gates | scales | shifts]
        mods = [(vecs[i], vecs[n + i], vecs[2 * n + i]) for i in range(n)]
    elif layout == "per_sublayer":  # (gate, scale, shift) of sub-layer 0, then of sub-layer 1, ...
        mods = [(vecs[3 * i], vecs[3 * i + 1], vecs[3 * i + 2]) for i in range(n)]
    else:  # "swapped": [gates | shifts | scales]
        mods = [(vecs[i], vecs[2 * n + i], vecs[n + i]) for i in range(n)]
    fns = (block.attn, block.mamba, block.ffn)
    for f, m in order:
        gate, scale, shift = mods[m]
        h = F.layer_norm(x, (C,), eps=block.eps if eps is None else eps) * ((1 + scale) if one_plus else scale) + shift
        y = fns[f](h) * (gate if gated else 1)
        x = x + y if residual else y
    return x


def check_mvar_block(fn) -> None:
    """fn(block, x_BLC, cond_BD) -> float32 tensor (B, L, C): what MVARBlock.forward(block, x, cond) computes
    without a sampling state. block.ada_lin(cond) gives 9 vectors of width C laid out [gates | scales | shifts]
    (3 each: attention, Mamba, FFN), and each sub-layer f = block.attn, block.mamba, block.ffn in this order does

        x = x + gate * f(LayerNorm(x, eps=block.eps) * (1 + scale) + shift)      (LayerNorm without affine)

    ``block`` is an M-VAR block of a tiny NextScaleTransformer (eval mode, random modulation weights) whose own
    forward / sublayer / modulations refuse to run; its modules and eps work as usual. Two blocks (one with an eps
    other than 1e-6), inputs with unit and with tiny variance (where eps matters)."""
    from ..models.transformer import ModelConfig, NextScaleTransformer
    name = "mvar_block"
    _refuse_lookups(name, fn, {"sublayer": "minivar's own AdaLNBlock.sublayer",
                               "modulations": "minivar's own AdaLNBlock.modulations"}, _MB_HINT)
    g = torch.Generator().manual_seed(0)
    base = dict(mixer="mvar", depth=1, width=32, heads=2, num_classes=3, vocab_size=16, z_channels=4, d_state=8,
                mamba_headdim=16, mamba_chunk=8, drop_path=0.0, attn_backend="blocks")
    for seed, (pns, norm_eps, sizes) in enumerate((((1, 2, 3), 1e-6, [(2, 1.0), (1, 1e-3)]),
                                                   ((1, 2, 4), 1e-4, [(3, 1.0), (2, 1e-3)]))):
        with _built_apart():
            torch.manual_seed(seed)
            real = NextScaleTransformer(ModelConfig(patch_nums=pns, norm_eps=norm_eps, **base)).blocks[0].eval()
        with torch.no_grad():  # non-trivial gates, scales and shifts; biases that start at zero made random
            C = real.ada_lin[1].in_features
            real.ada_lin[1].weight.copy_(torch.randn(real.ada_lin[1].weight.shape, generator=g, dtype=_F32) / C ** 0.5)
            for p in (real.ada_lin[1].bias, real.attn.q_bias, real.attn.v_bias, real.attn.proj.bias,
                      real.ffn.fc1.bias, real.ffn.fc2.bias):
                p.copy_(torch.randn(p.shape, generator=g, dtype=_F32) * 0.3)
        block = copy.deepcopy(real)
        block.__class__ = _ExerciseMVARBlock
        L = scales.num_tokens(pns)
        for B, spread in sizes:
            x = torch.randn(B, L, C, generator=g, dtype=_F32) * spread
            cond = torch.randn(B, C, generator=g, dtype=_F32)
            label = f"{name}(x {(B, L, C)}{', tiny variance' if spread < 1 else ''}, block.eps = {norm_eps:g})"
            got = _tensor(label, _call(name, fn, block, x.clone(), cond.clone()), "the output", (B, L, C),
                          torch.float32, " (x's shape)")
            with torch.no_grad():
                want = MVARBlock.forward(real, x, cond)
            close = lambda c: torch.allclose(got, c, rtol=1e-4, atol=1e-4)  # noqa: E731
            if close(want):
                continue
            hint = _first([
                (lambda: _mvar_block(real, x, cond, layout="per_sublayer"), "ada_lin's 9 vectors are laid out "
                 "[gates | scales | shifts]: sub-layer i's gate is chunk i, its scale chunk 3 + i, its shift chunk "
                 "6 + i -- not (gate, scale, shift) per sub-layer"),
                (lambda: _mvar_block(real, x, cond, layout="swapped"), "scale and shift are swapped: [gates | scales "
                 "| shifts], and LN(x) * (1 + scale) + shift"),
                (lambda: _mvar_block(real, x, cond, one_plus=False), "multiply by (1 + scale), not scale: a zero "
                 "scale must leave LN(x) unchanged"),
                (lambda: _mvar_block(real, x, cond, order=((0, 0), (2, 2), (1, 1))), "the sub-layers run attention, "
                 "then Mamba, then the FFN"),
                (lambda: _mvar_block(real, x, cond, order=((0, 0), (2, 1), (1, 2))), "the sub-layers run attention, "
                 "then Mamba, then the FFN"),
                (lambda: _mvar_block(real, x, cond, order=((1, 1), (0, 0), (2, 2))), "the sub-layers run attention, "
                 "then Mamba, then the FFN"),
                (lambda: _mvar_block(real, x, cond, residual=False), "each sub-layer adds to x: x = x + gate * "
                 "f(...) (the residual)"),
                (lambda: _mvar_block(real, x, cond, gated=False), "multiply each sub-layer's output by its gate"),
                (lambda: _mvar_block(real, x, cond, eps=1e-5), f"the layer norms use block.eps = {norm_eps:g}, not "
                 "F.layer_norm's default 1e-5"),
                (lambda: _mvar_block(real, x, cond, eps=1e-6), f"the layer norms use block.eps = {norm_eps:g}, not a "
                 "fixed 1e-6"),
            ], close)
            raise AssertionError(f"{label}: " + (hint or f"max |difference| {(got - want).abs().max().item():.3g} "
                                                 "from MVARBlock.forward"))
    _ok(name, "matches MVARBlock.forward")


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


def _is_jit(decorator) -> bool:
    """@triton.jit, @jit, @triton.jit(...)."""
    d = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(d, ast.Attribute) and d.attr == "jit") or (isinstance(d, ast.Name) and d.id == "jit")


def _writes_triton_kernel(fn, seen=None) -> bool | None:
    """Whether the answer holds a @triton.jit function: one defined in its source, or a kernel (or a helper next to
    the answer that holds one) that its source names. None when there is no source to look at."""
    tree = _parse(_answer_source(fn))
    if tree is None:
        return None
    if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(map(_is_jit, node.decorator_list))
           for node in ast.walk(tree)):
        return True
    seen = set() if seen is None else seen
    glb = getattr(fn, "__globals__", None)
    glb = glb if isinstance(glb, dict) else {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            obj = glb.get(node.id)
            if _is_triton_kernel(obj):
                return True
            if inspect.isfunction(obj) and obj.__module__ == getattr(fn, "__module__", None) and obj is not fn \
                    and obj not in seen and len(seen) < 20:
                seen.add(obj)
                if _writes_triton_kernel(obj, seen):
                    return True
    return False


def _row_ranges(offsets, mode, L):
    """Each query row's key range [lo, hi) (lo = 0 for "causal", the start of its scale for "intra")."""
    lo, hi = [], []
    for t in range(L):
        k = max(i for i in range(len(offsets) - 1) if offsets[i] <= t)
        lo.append(0 if mode == "causal" else offsets[k])
        hi.append(offsets[k + 1])
    return lo, hi


def _ranged_attention(q, k, v, lo, hi, scale):
    """Row t attends to keys lo[t]..hi[t]-1: dense masked softmax attention in float64."""
    cols = torch.arange(k.shape[0])
    mask = (cols[None, :] >= torch.tensor(lo)[:, None]) & (cols[None, :] < torch.tensor(hi)[:, None])
    return _attend(q, k, v, scale, mask=mask)


def _online_attention(q, k, v, lo, hi, scale, block_n, rescale_acc=True, rescale_sum=True, aligned=False):
    """The kernel's loop, row by row in float64: key tiles of block_n from lo (or from lo rounded down to a
    multiple of block_n), running max / sum / accumulator, optionally without the rescaling by exp(m_old - m_new)."""
    q, k, v = q.double(), k.double(), v.double()
    out = torch.empty_like(q)
    for t in range(q.shape[0]):
        m, total, acc = float("-inf"), 0.0, torch.zeros_like(q[t])
        start0 = lo[t] - lo[t] % block_n if aligned else lo[t]
        for start in range(start0, hi[t], block_n):
            cols = list(range(max(start, lo[t]), min(start + block_n, hi[t])))
            s = (k[cols] @ q[t]) * scale
            m_new = max(m, float(s.max()))
            alpha = float(np.exp(m - m_new))
            p = torch.exp(s - m_new)
            total = (total * alpha if rescale_sum else total) + float(p.sum())
            acc = (acc * alpha if rescale_acc else acc) + p @ v[cols]
            m = m_new
        out[t] = acc / total
    return out


def check_triton_row_attention(fn) -> None:
    """fn(q_LD, k_LD, v_LD, offsets, mode, block_n) -> float32 tensor (L, D): scale attention computed by a Triton
    kernel the answer writes, with one program per query row t. The program loops over the key tiles of t's range
    [lo, hi) (lo = 0 for mode "causal", the start of t's scale for "intra"; hi = the end of t's scale) in steps of
    block_n, with the online softmax: a running max m, a running sum and an accumulator, both rescaled by
    exp(m_old - m_new) when the max grows; scale 1/sqrt(D). q, k, v are float32 CPU tensors (L, D), offsets a list
    of Python ints [0, ..., L], block_n a power of two.

    On CPU the kernel runs in Triton's interpreter: TRITON_INTERPRET=1 must be set before the kernel is defined
    (notebook 07's first cell does it). Checked against masked softmax attention on small schedules, both modes
    and several block_n (one that does not divide the ranges). The answer must hold a @triton.jit function;
    minivar's kernels, scaled_dot_product_attention and ready-made softmaxes are refused."""
    name = "triton_row_attention"
    _refuse_lookups(name, fn, {
        "scale_attention": "minivar's own kernels.scale_attention.scale_attention",
        "scale_attention_forward": "minivar's own kernels.scale_attention.scale_attention_forward",
        "scale_attention_ref": "minivar's own kernels.scale_attention.scale_attention_ref",
        "ScaleAttention": "minivar's own kernels.scale_attention.ScaleAttention",
        "_fwd_kernel": "minivar's own kernels.scale_attention._fwd_kernel",
        "_scale_bounds": "minivar's own kernels.scale_attention._scale_bounds",
        "blocks_attention": "minivar's own models.attention.blocks_attention",
        "scaled_dot_product_attention": "torch's scaled_dot_product_attention",
        "softmax": "a ready-made softmax", "log_softmax": "a ready-made softmax (log_softmax)",
        "Softmax": "torch.nn.Softmax"},
        "running max, running sum and accumulator over the key tiles, rescaled by exp(m_old - m_new)",
        roots=_ROOTS + ("torch",))
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(17)
    # small: the interpreter runs every program in Python (about 0.5 s per call)
    cases = [((1, 2, 3), 8, "causal", 4), ((1, 2, 3), 16, "intra", 4), ((1, 3), 8, "causal", 2),
             (_random_schedule(rng, 4, 3), 16, "intra", 8)]
    for i, (pns, D, mode, block_n) in enumerate(cases):
        offs = scales.offsets(pns)
        L = offs[-1]
        q, k, v = (torch.randn(L, D, generator=g, dtype=_F32) for _ in range(3))
        label = f"{name}(patch_nums={pns}, D={D}, mode={mode!r}, block_n={block_n})"
        got = _call(name, fn, q.clone(), k.clone(), v.clone(), list(offs), mode, block_n)
        if i == 0 and _writes_triton_kernel(fn) is False:
            raise AssertionError(f"{name}: your answer holds no @triton.jit function -- write the loop as a Triton "
                                 "kernel (one program per query row) in the answer cell and launch it from the "
                                 "function, kernel[(L,)](...)")
        got = _tensor(label, got, "the output", (L, D), torch.float32, " = (L, D), one row per query").cpu()
        lo, hi = _row_ranges(offs, mode, L)
        scale = 1 / D ** 0.5
        want = _ranged_attention(q, k, v, lo, hi, scale)
        close = lambda c: torch.allclose(got.double(), c, rtol=1e-4, atol=1e-5, equal_nan=True)  # noqa: E731
        if close(want):
            continue
        other = "intra" if mode == "causal" else "causal"
        hint = _first([
            (lambda: _online_attention(q, k, v, lo, hi, scale, block_n, False, False), "the running sum and the "
             "accumulator must be rescaled by alpha = exp(m_old - m_new) whenever the running max grows"),
            (lambda: _online_attention(q, k, v, lo, hi, scale, block_n, False, False, aligned=True), "the running "
             "sum and the accumulator must be rescaled by alpha = exp(m_old - m_new) whenever the running max grows"),
            (lambda: _online_attention(q, k, v, lo, hi, scale, block_n, False, True), "rescale the accumulator by "
             "alpha = exp(m_old - m_new) too, not only the running sum"),
            (lambda: _online_attention(q, k, v, lo, hi, scale, block_n, True, False), "rescale the running sum by "
             "alpha = exp(m_old - m_new) too, not only the accumulator"),
            (lambda: _ranged_attention(q, k, v, lo, [h - 1 for h in hi], scale), "hi is exclusive: the keys are "
             "lo..hi-1, so the tile mask is cols < hi -- your answer leaves out key hi-1"),
            (lambda: _ranged_attention(q, k, v, lo, [min(h + 1, L) for h in hi], scale), "hi is exclusive: the keys "
             "are lo..hi-1, so the tile mask is cols < hi -- your answer also reads key hi"),
            (lambda: _ranged_attention(q, k, v, *_row_ranges(offs, other, L), scale),
             "'intra' (M-VAR) sees only t's own scale: lo = start of t's scale" if mode == "intra" else
             "'causal' (VAR) also sees every coarser scale: lo = 0"),
            (lambda: _ranged_attention(q, k, v, lo, hi, 1.0), "multiply the scores q.k by 1/sqrt(D)"),
            (lambda: _ranged_attention(q, k, v, lo, [t + 1 for t in range(L)], scale), "inside its scale a query "
             "sees every key, also the later ones: hi is the end of t's scale, not t + 1"),
        ], close)
        raise AssertionError(f"{label}: " + (hint or f"max |difference| {(got.double() - want).abs().max().item():.3g} "
                                             "from masked softmax attention"))
    _ok(name, "matches masked softmax attention in both modes")


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


# ----------------------------------------------------------------------------- predict, then check
# These take a VALUE the learner wrote down before running the cell that reveals it, e.g.
# check_predict_cfg_ramp(my_prediction). A number may be an int or a float (within 1e-6, relative). Under the
# grader the value arrives as a proxy of the answer cell: the checker reads the last `name = ...` of that cell
# (a literal, or plain arithmetic on numbers such as 1 + 16 + 81 + 256).
_ARITH = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
          ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a ** b}


def _plain_value(node):
    """The value of a literal or of +, -, *, /, //, ** on numbers (tuples and lists of them too)."""
    if isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis or (
            isinstance(node.value, (int, float)) and not isinstance(node.value, bool))):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_plain_value(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        x = _plain_value(node.operand)
        if isinstance(x, (int, float)):
            return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        a, b = _plain_value(node.left), _plain_value(node.right)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not (
                isinstance(node.op, ast.Pow) and abs(b) > 64):
            return _ARITH[type(node.op)](a, b)
    if isinstance(node, ast.Name) and node.id in ("NotImplemented", "NotImplementedError"):
        return None
    raise ValueError("not a plain value")


def _prediction(name: str, value):
    """The learner's prediction; AssertionError "not answered yet" for None, ..., NotImplemented(Error)."""
    if callable(value) and hasattr(value, "answer_source"):  # a grader's proxy: the value is in the cell's text
        var, tree, found = getattr(value, "__name__", None), _parse(value.answer_source), None
        for node in (tree.body if tree is not None else []):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
            if any(isinstance(t, ast.Name) and t.id == var for t in targets):
                found = node.value
        if found is None:
            value = None
        else:
            try:
                value = _plain_value(found)
            except (ValueError, ArithmeticError):
                raise AssertionError(f"{name}: write your prediction itself (a number, e.g. 0.5, or a tuple of "
                                     "numbers), not a computation that uses names or calls") from None
    if value is None or value is Ellipsis or value is NotImplemented or value is NotImplementedError or \
            isinstance(value, NotImplementedError):
        raise AssertionError(f"{name}: not answered yet -- write down your prediction, then run this cell (and only "
                             "then the cell that shows the answer)")
    return value


def _number(name: str, x, what: str = "your prediction") -> float:
    """An int or a float (Python, numpy or a 0-d tensor), not a bool."""
    ok = ((isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)))
          or (isinstance(x, torch.Tensor) and x.dim() == 0 and x.dtype != torch.bool and not x.is_complex()))
    if not ok:
        raise AssertionError(f"{name}: {what} must be a number, got {_describe(x)}")
    return float(x)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-12


def _check_number(name: str, value, want: float, mistakes, why: str, detail: str) -> None:
    got = _number(name, _prediction(name, value))
    if _same(got, want):
        _ok(name, detail)
        return
    hint = next((msg for v, msg in mistakes if _same(got, v)), None)
    raise AssertionError(f"{name}: you predicted {got:g}. " + (f"{hint}. " if hint else "") + why)


def check_predict_cfg_ramp(value) -> None:
    """value: (t_first, t_last), a tuple of two numbers -- VAR's guidance weight t_k = cfg * k / (K - 1) at the first
    and at the last scale, for cfg = 2.0 and K = 4 scales."""
    name = "predict_cfg_ramp"
    v = _prediction(name, value)
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise AssertionError(f"{name}: predict a pair (t_first, t_last), a tuple of two numbers; got {_describe(v)}")
    got = tuple(_number(name, x, w) for x, w in zip(v, ("t_first", "t_last")))
    if all(_same(a, b) for a, b in zip(got, (0.0, 2.0))):
        _ok(name, "t = 0 at the first scale, t = cfg at the last")
        return
    hint = next((msg for w, msg in [
        ((2.0, 2.0), "there is a ramp: t grows with the scale index k"),
        ((0.0, 1.5), "the last scale is k = K - 1 = 3, not K"),
        ((2.0, 0.0), "the ramp runs the other way: t grows with k"),
        ((0.5, 2.0), "k counts from 0: the first scale is k = 0"),
        ((1.0, 3.0), "1 + t is the weight of the conditional logits; the question asks for t"),
    ] if all(_same(a, b) for a, b in zip(got, w))), None)
    raise AssertionError(f"{name}: you predicted ({got[0]:g}, {got[1]:g}). " + (f"{hint}. " if hint else "") +
                         "With k = 0..K-1, t_first = 2.0 * 0 / 3 = 0 (the 1x1 scale is not guided at all) and "
                         "t_last = 2.0 * 3 / 3 = 2.0 = cfg: (0.0, 2.0)")


def check_predict_decay(value) -> None:
    """value: a number -- the fraction of an SSM state that survives one step, exp(dt * A), for A = -1 and
    dt = ln 2."""
    _check_number("predict_decay", value, 0.5, [
        (2.0, "A < 0 makes the step a decay"), (float(np.exp(-1.0)), "dt multiplies A: the decay is exp(dt * A), "
                                                                     "not exp(A)"),
        (float(np.log(2.0)), "dt is the step size, not the fraction kept")],
        "One step multiplies the state by exp(dt * A) = exp(-ln 2) = 1/2 = 0.5", "exp(dt * A) = exp(-ln 2) = 0.5")


def check_predict_cached_steps(value) -> None:
    """value: a number -- the Mamba token-steps of one M-VAR layer while sampling one 256 px image (schedule
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16) WITH the recurrent state cache."""
    pns = SCHEDULES[-1]
    L, rescan = scales.num_tokens(pns), sum(scales.offsets(pns)[1:])
    _check_number("predict_cached_steps", value, L, [
        (rescan, f"{rescan:,} is the re-scan count, without the cache: there scale k runs Mamba again over all "
                 "the tokens of scales 0..k"),
        (pns[-1] ** 2, "every scale is scanned, not only the last one"),
        (len(pns), "count token-steps, not calls: scale k scans its pn_k^2 tokens")],
        f"With the state cache each scale continues from the state the previous one left, so every token is "
        f"scanned once: 1 + 4 + 9 + ... + 256 = L = {L}", f"L = {L} token-steps, vs {rescan:,} re-scanning")


def check_predict_pairs(value) -> None:
    """value: a number -- the (query, key) pairs M-VAR's block-diagonal mask allows at the 16 px schedule
    (1, 2, 3, 4)."""
    pns = SCHEDULES[0]
    L = scales.num_tokens(pns)
    want = int(scales.block_diagonal_mask(pns).sum())
    _check_number("predict_pairs", value, want, [
        (L, f"{L} is L, the number of tokens; count (query, key) pairs"),
        (L * L, f"{L * L} = L^2 is the dense mask; M-VAR keeps only the pairs inside a scale"),
        (int(scales.block_causal_mask(pns).sum()), "that is VAR's block-causal count, where a query also sees the "
                                                   "coarser scales; M-VAR's mask keeps only the pairs inside a scale")],
        "Scale k is a full block of n_k x n_k pairs (n_k = pn_k^2) and nothing else is allowed: "
        f"1 + 16 + 81 + 256 = {want}", f"{want} of the {L * L} pairs of the dense {L} x {L} mask")


__all__ = [n for n in dir() if n.startswith("check_")]
