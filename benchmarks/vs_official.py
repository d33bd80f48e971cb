"""minivar side by side with the official VAR code, on the same weights, in one run.

    VAR_SRC=/path/to/FoundationVision-VAR python benchmarks/vs_official.py           # every row (minutes)
    VAR_SRC=/path/to/FoundationVision-VAR python benchmarks/vs_official.py --quick   # d4 only, smoke test
    python benchmarks/vs_official.py --rows train,mvar-train --reps 7                # minivar alone

``VAR_SRC`` is an extracted checkout of github.com/FoundationVision/VAR that you fetched yourself
(e.g. ``git archive HEAD | tar -x -C DIR``); it is never vendored and no test needs it. With it,
the script builds the official tokenizer and VAR models with fixed random weights, loads the very
same state dicts through ``minivar.official``, checks that

  * greedy samples (top-k 1, cfg 1.5) give identical token indices on every scale,
  * the tokenizer's encoded indices are identical,
  * the teacher-forced logits agree (the model of the training rows),

and then times both (a failed check is printed under the table and makes the exit status 1).
Without ``VAR_SRC`` only minivar is timed, so the script runs anywhere. ``--quick`` runs the d4
rows with 2 reps, a tokenizer of width 32 instead of 160 and a training batch of 4: a smoke test
of the identity checks, not a measurement. ``--threads N`` sets torch's threads (default: as is).

Rows (``--rows``, comma-separated; default: all, and all but ``sample-d16`` with ``--quick``):

  train            VAR-d4 training step, B16, 680 tokens, V 4096, tokenizer skipped (pre-tokenized)
  mvar-train       M-VAR-d4 training step, B16, against minivar's VAR-d4 step (official M-VAR: CUDA only)
  sample           d4 sampling, B1, cfg 1.5, top-k 900, top-p 0.96, with the tokenizer's decode
  sample-nodecode  the same without the decode (transformer + quantiser steps only)
  sample-d16       d16 sampling, B1, with decode
  encode           tokenizer encode of one 256 px image
  mvar-sample      minivar M-VAR against minivar VAR sampling at equal depth, B1, without decode

Environment. Run it on an idle machine with OpenMP's default wait policy: OMP_WAIT_POLICY=PASSIVE
(sleeping worker threads) made every small op slower here (d4 sampling 0.17 -> 0.23 s, M-VAR
0.25 -> 0.42 s). ``--malloc keep`` applies ``minivar.fast.cpu_memory.keep_freed_memory()`` to the whole
process first, so to both contenders alike.

Method. Every group of timed calls runs interleaved, in the order A B C, C B A, A B C, ... (each
call once as warm-up first, not counted), and the table reports medians, so that drifting machine
load hits every contender alike; compare the ratios of one run, not absolute times across runs.
Each training step does what the project's own trainer does per micro-batch, minus logging, AMP
and the tokenizer: the official one ``VAR.forward`` (label dropout and drop-path on, as in
training), ``trainer.py``'s loss (cross-entropy times the 1/L loss weight, summed, batch mean), the
argmax its trainer takes for logging, backward, clip 2.0 and its fused AdamW; minivar's
``model.loss`` (head and cross-entropy fused in chunks, with the accuracy, as ``minivar.training.trainer``
runs it), backward, clip 2.0 and ``minivar.training.trainer``'s AdamW. "Without decode" replaces the
tokenizer's ``fhat_to_img`` by the identity for both samplers.

FLOPs. The GFLOP/s column divides an analytic count by minivar's median step time. Per step
(forward + backward = 3 forwards, 2 FLOPs per multiply-add, matmuls only):

    6 * B * L * P_tok            linear layers every token goes through (per block: qkv 3C^2, proj C^2,
                                 FFN 8C^2, and for M-VAR Mamba2's in_proj / out_proj; word_embed Cv*C;
                                 head C*V)
  + 6 * B * P_ada                the AdaLN linears (once per image, not per token)
  + 12 * B * C * pairs * depth   attention, QK^T and AV over the (query, key) pairs the mask allows
                                 (block-causal 286,434 at 256 px; M-VAR intra-scale 110,468)

(VAR-d4, B16: 274 GFLOP of linear layers + 56 of attention = 330; 365 with dense
attention.) M-VAR's count leaves out the Mamba2 scan itself, so its GFLOP/s is a lower bound. The
matmul probe (a 2048 x 2048 fp32 GEMM, before and after the timings) says what these cores reach.

The official code is imported unchanged; ``models/var.py`` imports ``huggingface_hub`` only for its
Hub mix-in class, so when that package is missing a stand-in module is put into ``sys.modules``.
The rest of what it imports (``dist.py``, numpy, torch) works on CPU as is.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import time
import types
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from minivar import official, scales
from minivar.fast.cpu_memory import keep_freed_memory
from minivar.environment import describe
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.sample import generate
from minivar.tokenizer import VQVAE, TokenizerConfig
from minivar.training.recipe import param_groups

ROWS = ("train", "mvar-train", "sample", "sample-nodecode", "sample-d16", "encode", "mvar-sample")
SAMPLING = dict(cfg=1.5, top_k=900, top_p=0.96)  # the FID setting, for both samplers (top-k <= V)
GREEDY = dict(cfg=1.5, top_k=1, top_p=0.0)
LR, BETAS, WD, CLIP = 1e-4, (0.9, 0.95), 0.05, 2.0


@dataclass
class Setup:
    """Shapes of one benchmark run. The defaults are the rows of the README's table (256 px, V 4096)."""
    depth: int = 4  # the d4 rows
    big_depth: int = 16  # the sample-d16 row
    head_dim: int = 64  # width = head_dim * depth, heads = depth (the papers' size rule)
    vocab: int = 4096
    z_channels: int = 32
    patch_nums: tuple = field(default_factory=lambda: scales.PRESETS["256"])
    num_classes: int = 1000
    tok_ch: int = 160  # tokenizer base width; 160 is the released one (~109M parameters)
    train_batch: int = 16
    d_state: int = 64  # M-VAR's Mamba2
    mamba_headdim: int = 64

    @property
    def image_size(self) -> int:  # the official tokenizer downsamples 16x
        return 16 * self.patch_nums[-1]

    @property
    def L(self) -> int:
        return scales.num_tokens(self.patch_nums)

    def width(self, depth: int) -> int:
        return self.head_dim * depth

    @property
    def sampling(self) -> dict:  # the official sampler fails for top_k > V (tiny test vocabularies)
        return {**SAMPLING, "top_k": min(SAMPLING["top_k"], self.vocab)}


QUICK = dataclasses.replace(Setup(), tok_ch=32, train_batch=4)
# the project's first timings of the official code with the default Setup (2 cores, fp32, torch 2.13,
# OMP_WAIT_POLICY=PASSIVE as it later turned out)
FIRST_MEASURED = {"train": "3.1 s (5.2 img/s)", "mvar-train": "CUDA only", "sample": "2.5 s", "sample-nodecode": "0.31 s",
          "sample-d16": "7.1 s", "encode": "1.17 s", "mvar-sample": "—"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- timing
def interleaved(calls: dict, reps: int) -> dict:
    """Seconds per call of each named function: one warm-up each, then reps rounds A B C, C B A, ..."""
    names = list(calls)
    for n in names:
        calls[n]()
    times = {n: [] for n in names}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            calls[n]()
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(ts) for n, ts in times.items()}


def matmul_probe(n: int = 2048, reps: int = 5) -> list[float]:
    """GFLOP/s of an n x n fp32 GEMM, one number per call (after a warm-up call)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        out.append(2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return out


def train_step_flops(model: NextScaleTransformer, B: int) -> float:
    """Analytic FLOPs of one training step of a minivar model; the formula is in the module docstring."""
    cfg, L = model.config, model.L
    per_token = per_image = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            if "ada_lin" in name:
                per_image += m.weight.numel()
            else:
                per_token += m.weight.numel()
    mask = (scales.block_causal_mask if cfg.mixer == "var" else scales.block_diagonal_mask)(cfg.patch_nums)
    pairs = int(mask.sum())
    return 6.0 * B * L * per_token + 6.0 * B * per_image + 12.0 * B * cfg.width * pairs * cfg.depth


# ---------------------------------------------------------------------------- the official code
def import_official(var_src: str) -> types.SimpleNamespace:
    """The official ``models`` package from an extracted checkout, imported unchanged."""
    src = os.path.abspath(os.path.expanduser(var_src))
    if not os.path.isfile(os.path.join(src, "models", "var.py")):
        raise SystemExit(f"VAR_SRC={var_src} holds no models/var.py: point it at an extracted checkout of "
                         "github.com/FoundationVision/VAR")
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:  # models/var.py needs only the name PyTorchModelHubMixin (for its Hub class VARHF)
        stub = types.ModuleType("huggingface_hub")
        stub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
        sys.modules["huggingface_hub"] = stub
    if src not in sys.path:
        sys.path.insert(0, src)
    warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast", category=FutureWarning)
    import models.var  # noqa: E402  (the official code)
    import models.vqvae  # noqa: E402
    return types.SimpleNamespace(src=src, VAR=models.var.VAR, VQVAE=models.vqvae.VQVAE, var_module=models.var)


@contextlib.contextmanager
def quiet():
    """The official constructors print their configuration: send it to stderr, keep stdout for the table."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def skip_linear_init():
    """Leave nn.Linear weights uninitialised while a VAR is built (its init_weights sets every one),
    as the official builder does; unlike it, put the default back afterwards."""
    saved = nn.Linear.reset_parameters
    nn.Linear.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters = saved


@torch.no_grad()
def sharpen_(model, width: int) -> None:
    """Class embeddings N(0, 1) and a head with std 3/sqrt(C): logits O(3), so that every greedy
    choice has a clear top-1 / top-2 margin and round-off cannot flip it. Same parameter names in
    the official VAR and in minivar. Timing does not depend on these values."""
    g = torch.Generator().manual_seed(1)
    model.class_emb.weight.copy_(torch.randn(model.class_emb.weight.shape, generator=g))
    model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g) * (3.0 / math.sqrt(width)))


def smooth_image(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Image-like input in [-1, 1]: upsampled noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


@torch.no_grad()
def spread_codebook_(embedding: torch.Tensor, f: torch.Tensor) -> None:
    """Codebook ~ N(0, std of the encoder output), so nearest-code search picks varied codes."""
    g = torch.Generator().manual_seed(2)
    embedding.copy_(torch.randn(embedding.shape, generator=g) * f.std())


def official_var(off, vae_or_standin, s: Setup, depth: int):
    torch.manual_seed(0)
    with quiet(), skip_linear_init():
        var = off.VAR(vae_local=vae_or_standin, num_classes=s.num_classes, depth=depth, embed_dim=s.width(depth),
                      num_heads=depth, mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0,
                      drop_path_rate=0.1 * depth / 24, norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
                      attn_l2_norm=True, patch_nums=tuple(s.patch_nums), flash_if_available=False,
                      fused_if_available=False)
        var.init_weights(init_adaln=0.5, init_adaln_gamma=0.5, init_head=0.02, init_std=-1)
    sharpen_(var, s.width(depth))
    return var


def minivar_model(s: Setup, depth: int, mixer: str = "var") -> NextScaleTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=depth, width=s.width(depth), heads=depth, num_classes=s.num_classes,
                      vocab_size=s.vocab, z_channels=s.z_channels, patch_nums=tuple(s.patch_nums),
                      attn_l2_norm=True, d_state=s.d_state, mamba_headdim=s.mamba_headdim, init_adaln_gamma=0.5)
    model = NextScaleTransformer(cfg)
    sharpen_(model, cfg.width)
    return model


def set_drop_path_(model: NextScaleTransformer, rate: float) -> None:
    """minivar.official loads with drop-path 0 (inference); training uses VAR's 0.1 * depth / 24 ramp."""
    n = len(model.blocks)
    for i, b in enumerate(model.blocks):
        b.drop_p = rate * i / max(1, n - 1)


class NoDecode:
    """A tokenizer whose fhat_to_img returns f_hat unchanged: a sampler then stops at the last
    quantiser step (both samplers end with ``vae.fhat_to_img(f_hat).add_(1).mul_(0.5)``)."""

    def __init__(self, vae):
        self._vae = vae

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def fhat_to_img(self, f_hat):
        return f_hat


# ---------------------------------------------------------------------------- checks
class Checks:
    def __init__(self):
        self.items = []  # (what, ok, detail)

    def add(self, what: str, ok: bool, detail: str) -> None:
        self.items.append((what, ok, detail))
        log(f"check: {what}: {'OK' if ok else 'FAILED'} ({detail})")

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.items)


def official_greedy(off, var, labels):
    """Images and per-scale indices of the official sampler with top-k 1 (indices captured by
    wrapping the sampling function that models/var.py calls, for this one call)."""
    got, orig = [], off.var_module.sample_with_top_k_top_p_

    def capture(logits_BlV, *a, **kw):
        idx = orig(logits_BlV, *a, **kw)
        got.append(idx[:, :, 0].clone())
        return idx

    off.var_module.sample_with_top_k_top_p_ = capture
    try:
        img = var.autoregressive_infer_cfg(B=labels.shape[0], label_B=labels.clone(), g_seed=0, more_smooth=False,
                                           **GREEDY)
    finally:
        off.var_module.sample_with_top_k_top_p_ = orig
    return img, got


def check_greedy(checks: Checks, off, var_off, model, vae, labels, what: str) -> None:
    img_off, idx_off = official_greedy(off, var_off, labels)
    trace = []
    img, idx = generate(model, vae, labels, seed=0, return_indices=True, trace=trace, **GREEDY)
    same = [torch.equal(a, b) for a, b in zip(idx_off, idx)]
    if all(same) and len(idx_off) == len(idx):
        checks.add(what, True, f"indices identical on all {len(idx)} scales, images max |diff| "
                               f"{(img - img_off).abs().max().item():.1e}")
        return
    k = same.index(False)
    top2 = trace[k]["guided"].float().topk(2, dim=-1).values
    margin = (top2[..., 0] - top2[..., 1]).min().item()
    checks.add(what, False, f"indices differ on {sum(not x for x in same)} of {len(same)} scales, first at scale {k}, "
                            f"where minivar's smallest top-1/top-2 logit margin is {margin:.2e}")


# ---------------------------------------------------------------------------- the groups of rows
def tokenizers(s: Setup, off):
    """(official VQVAE or None, minivar VQVAE) with the same weights, in eval mode."""
    img = smooth_image(1, s.image_size, seed=3)
    if off is None:
        torch.manual_seed(0)
        vae = VQVAE(TokenizerConfig(image_size=s.image_size, ch=s.tok_ch, z_channels=s.z_channels,
                                    vocab_size=s.vocab, patch_nums=tuple(s.patch_nums))).eval()
        with torch.no_grad():
            spread_codebook_(vae.quantize.embedding.weight, vae.img_to_f(img))
        return None, vae
    torch.manual_seed(0)
    with quiet():
        vae_off = off.VQVAE(vocab_size=s.vocab, z_channels=s.z_channels, ch=s.tok_ch, test_mode=True,
                            share_quant_resi=4, v_patch_nums=tuple(s.patch_nums))
    with torch.no_grad():
        spread_codebook_(vae_off.quantize.embedding.weight, vae_off.quant_conv(vae_off.encoder(img)))
    vae = official.load_vae(vae_off.state_dict(), patch_nums=tuple(s.patch_nums))
    return vae_off.eval(), vae


def group_train(s: Setup, rows, off, reps, checks: Checks) -> dict:
    B, L, V, Cv = s.train_batch, s.L, s.vocab, s.z_channels
    g = torch.Generator().manual_seed(0)
    y = torch.randint(s.num_classes, (B,), generator=g)
    x_in = torch.randn(B, L - s.patch_nums[0] ** 2, Cv, generator=g)
    tgt = torch.randint(V, (B, L), generator=g)
    calls, models = {}, {}
    if off is not None:  # VAR reads only Cvae, vocab_size and quantize from its tokenizer: a stand-in will do
        var_off = official_var(off, types.SimpleNamespace(Cvae=Cv, vocab_size=V, quantize=None), s, s.depth)
        model = official.load_var(var_off.state_dict())
        with torch.no_grad():  # the same model? (the official forward drops labels even in eval: rate 0 here)
            rate = var_off.cond_drop_rate
            var_off.eval().cond_drop_rate = 0.0
            a, b = var_off(y[:2], x_in[:2]), model(y[:2], x_in[:2])
            var_off.cond_drop_rate = rate
            err, scale = (a - b).abs().max().item(), a.abs().max().item()
        checks.add(f"teacher-forced logits, VAR-d{s.depth}", err <= 1e-4 * max(1.0, scale),
                   f"max |diff| {err:.1e}, max |logit| {scale:.1f}")
        var_off.train()
        opt_off = torch.optim.AdamW(var_off.parameters(), lr=LR, betas=BETAS, weight_decay=WD, fused=True)
        loss_w = torch.full((1, L), 1.0 / L)

        def official_step():
            logits = var_off(y, x_in)
            loss = F.cross_entropy(logits.view(-1, V), tgt.view(-1), reduction="none").view(B, -1)
            loss = loss.mul(loss_w).sum(-1).mean()
            logits.data.argmax(-1)  # trainer.py takes pred_BL every step
            opt_off.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(var_off.parameters(), CLIP)
            opt_off.step()
        calls["official VAR"] = official_step
    else:
        model = minivar_model(s, s.depth)
    set_drop_path_(model, 0.1 * s.depth / 24)
    models["var"] = model.train()
    if "mvar-train" in rows:
        models["mvar"] = minivar_model(s, s.depth, "mvar").train()

    def minivar_step(m, opt):
        def step():
            out = m.loss(y, x_in, tgt)  # what minivar.training.trainer runs: head + loss fused
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), CLIP)
            opt.step()
        return step
    for k, m in models.items():
        opt = torch.optim.AdamW(param_groups(m, WD), lr=LR, betas=BETAS)
        calls[f"minivar {'VAR' if k == 'var' else 'M-VAR'}"] = minivar_step(m, opt)
    log(f"timing training steps: {', '.join(calls)}")
    t = interleaved(calls, reps)
    t["flops VAR"] = train_step_flops(models["var"], B)
    if "mvar" in models:
        t["flops M-VAR"] = train_step_flops(models["mvar"], B)
    return t


def group_sample(s: Setup, rows, off, vae_off, vae, reps, checks: Checks, depth: int) -> dict:
    big = depth != s.depth
    label = torch.tensor([min(7, s.num_classes - 1)])
    calls = {}
    if off is not None:
        var_off = official_var(off, vae_off, s, depth).eval()
        model = official.load_var(var_off.state_dict(), vae=vae)
        labels = torch.tensor([3, s.num_classes - 1])
        check_greedy(checks, off, var_off, model, vae, labels, f"greedy samples, VAR-d{depth}, B2, cfg 1.5, top-k 1")
        no_dec = NoDecode(vae_off)

        def off_sample(decode: bool):
            def run():
                if not decode:
                    var_off.vae_proxy = (no_dec,)
                try:
                    var_off.autoregressive_infer_cfg(B=1, label_B=label.clone(), g_seed=0, more_smooth=False,
                                                     **s.sampling)
                finally:
                    var_off.vae_proxy = (vae_off,)
            return run
    else:
        model = minivar_model(s, depth).eval()
    minivar_nodec = NoDecode(vae)

    def mini_sample(m, decode: bool, bf16: bool = False):
        def run():
            vae.decode_dtype = torch.bfloat16 if bf16 else None  # the opt-in approximate decode
            try:
                return generate(m, vae if decode else minivar_nodec, label, seed=0, **s.sampling)
            finally:
                vae.decode_dtype = None
        return run
    want_dec = "sample-d16" in rows if big else "sample" in rows
    extra = {}
    if want_dec:
        if off is not None:
            calls["official"] = off_sample(True)
        calls["minivar"] = mini_sample(model, True)
        calls["minivar bf16 decode"] = mini_sample(model, True, bf16=True)
        # the same tokens decoded both ways (sampling does not depend on the decode)
        mse = (calls["minivar"]() - calls["minivar bf16 decode"]()).square().mean().item()
        extra["bf16 psnr"] = 10 * math.log10(1.0 / max(mse, 1e-20))  # images in [0, 1]
    if not big and ("sample-nodecode" in rows or "mvar-sample" in rows):
        if off is not None and "sample-nodecode" in rows:
            calls["official no decode"] = off_sample(False)
        calls["minivar no decode"] = mini_sample(model, False)
        if "mvar-sample" in rows:
            calls["minivar M-VAR no decode"] = mini_sample(minivar_model(s, depth, "mvar").eval(), False)
    log(f"timing d{depth} sampling: {', '.join(calls)}")
    return {**interleaved(calls, reps), **extra}


def group_encode(s: Setup, off, vae_off, vae, reps, checks: Checks) -> dict:
    img = smooth_image(1, s.image_size, seed=4)
    calls = {}
    if off is not None:
        with torch.no_grad():
            a, b = vae_off.img_to_idxBl(img), vae.encode(img)
        same = sum(int((x == y).sum()) for x, y in zip(a, b))
        checks.add(f"encoded indices, one {s.image_size} px image", same == s.L and len(a) == len(b),
                   f"{same} of {s.L} tokens identical")

        def off_encode():
            with torch.no_grad():
                vae_off.img_to_idxBl(img)
        calls["official"] = off_encode
    calls["minivar"] = lambda: vae.encode(img)
    log(f"timing encode: {', '.join(calls)}")
    return interleaved(calls, reps)


# ---------------------------------------------------------------------------- the run and its table
def run(s: Setup, rows, reps: int, var_src: str | None = None, probe_n: int = 2048, probe_reps: int = 5) -> dict:
    """Build, check and time the requested rows; returns everything ``format_table`` needs."""
    rows = list(rows)
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise ValueError(f"unknown rows {bad}; choose from {', '.join(ROWS)}")
    off = import_official(var_src) if var_src else None
    checks = Checks()
    log(f"matmul probe ({probe_n}x{probe_n} fp32)")
    probe = matmul_probe(probe_n, probe_reps)
    res = {}
    if "train" in rows or "mvar-train" in rows:
        res["train"] = group_train(s, rows, off, reps, checks)
        gc.collect()
    if any(r in rows for r in ("sample", "sample-nodecode", "sample-d16", "encode", "mvar-sample")):
        log(f"building the tokenizer (width {s.tok_ch}, {s.image_size} px)")
        vae_off, vae = tokenizers(s, off)
        if "encode" in rows:
            res["encode"] = group_encode(s, off, vae_off, vae, reps, checks)
        if any(r in rows for r in ("sample", "sample-nodecode", "mvar-sample")):
            res["sample"] = group_sample(s, rows, off, vae_off, vae, reps, checks, s.depth)
            gc.collect()
        if "sample-d16" in rows:
            res["sample-d16"] = group_sample(s, rows, off, vae_off, vae, reps, checks, s.big_depth)
        del vae_off, vae
        gc.collect()
    probe += matmul_probe(probe_n, probe_reps)
    return {"setup": s, "rows": rows, "reps": reps, "official": off.src if off is not None else None, "times": res,
            "checks": checks, "probe": statistics.median(probe), "probe_all": probe, "probe_n": probe_n}


def _row(key, what, off_s, mini_s, ratio, ratio_text, target, better, extra="", first=""):
    met = None if ratio is None else (ratio >= target if better == "up" else ratio <= target)
    return {"key": key, "what": what, "official_s": off_s, "minivar_s": mini_s, "ratio": ratio,
            "ratio_text": ratio_text, "target": f"{'≥' if better == 'up' else '≤'} {target:g}×", "met": met,
            "gflops": extra, "first": first}


def table_rows(rep: dict) -> list[dict]:
    s, T, out = rep["setup"], rep["times"], []
    d, B, probe = s.depth, s.train_batch, rep["probe"]
    default_setup = rep["setup"] == Setup()
    w = "" if s.tok_ch == 160 else f" (tokenizer width {s.tok_ch})"
    kw = s.sampling

    def gf(flops, sec):
        return f"{flops / sec / 1e9:.0f} ({100 * flops / sec / 1e9 / probe:.0f}% of GEMM)"
    for key in rep["rows"]:
        sp = FIRST_MEASURED[key] if default_setup else ""
        if key == "train":
            t = T["train"]
            o, m = t.get("official VAR"), t["minivar VAR"]
            out.append(_row(key, f"VAR-d{d} train step, B{B}, {s.L} tokens, V {s.vocab} (tokenizer skipped)", o, m,
                            o / m if o else None, "speed-up {}", 1.25, "up", gf(t["flops VAR"], m), sp))
        elif key == "mvar-train":
            t = T["train"]
            v, m = t["minivar VAR"], t["minivar M-VAR"]
            out.append(_row(key, f"M-VAR-d{d} train step, B{B}", None, m, m / v, f"{{}} minivar VAR-d{d}", 1.3, "down",
                            gf(t["flops M-VAR"], m) + ", scan not counted", sp))
        elif key in ("sample", "sample-d16"):
            t = T[key]
            dd = d if key == "sample" else s.big_depth
            o, m = t.get("official"), t["minivar"]
            what = f"sample d{dd} B1, with decode{w}"
            if key == "sample":
                what = f"sample d{dd} B1, cfg {kw['cfg']}, top-k {kw['top_k']}, top-p {kw['top_p']}, with decode{w}"
            target = 2.0 if key == "sample" else 1.2
            out.append(_row(key, what, o, m, o / m if o else None, "speed-up {}", target, "up", first=sp))
            if "minivar bf16 decode" in t:  # opt-in, approximate: not the exact default path
                mb = t["minivar bf16 decode"]
                out.append(_row(key + "-bf16", f"the same, minivar with the opt-in bf16 decode (approximate: "
                                f"{t['bf16 psnr']:.1f} dB PSNR against its fp32 decode)", o, mb,
                                o / mb if o else None, "speed-up {}", target, "up"))
        elif key == "sample-nodecode":
            t = T["sample"]
            o, m = t.get("official no decode"), t["minivar no decode"]
            out.append(_row(key, f"sample d{d} B1, without decode", o, m, o / m if o else None, "speed-up {}", 1.5,
                            "up", first=sp))
        elif key == "encode":
            t = T["encode"]
            o, m = t.get("official"), t["minivar"]
            out.append(_row(key, f"tokenizer encode, one {s.image_size} px image{w}", o, m, o / m if o else None,
                            "speed-up {}", 1.5, "up", first=sp))
        elif key == "mvar-sample":
            t = T["sample"]
            v, m = t["minivar no decode"], t["minivar M-VAR no decode"]
            out.append(_row(key, f"M-VAR vs VAR sampling d{d} B1, without decode", None, m, m / v,
                            f"{{}} minivar VAR-d{d} ({v:.3f} s)", 1.15, "down", first=sp))
    return out


def _secs(x, B=None):
    if x is None:
        return None
    return f"{x:.3f} s" + (f" ({B / x:.1f} img/s)" if B else "")


def format_table(rep: dict) -> str:
    s, rows = rep["setup"], table_rows(rep)
    default_setup = rep["setup"] == Setup()
    head = ["what", "official", "minivar", "ratio", "target", "met", "minivar GFLOP/s"]
    if default_setup:
        head.insert(1, "official, first measured")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        B = s.train_batch if r["key"] in ("train", "mvar-train") else None
        if r["official_s"] is not None:
            o = _secs(r["official_s"], B) if not r["key"].endswith("-bf16") else "(as above)"
        elif r["key"] == "mvar-train":
            o = "CUDA only"
        elif r["key"] == "mvar-sample":
            o = "—"
        else:
            o = "not run (no VAR_SRC)"
        ratio = "—" if r["ratio"] is None else r["ratio_text"].format(f"{r['ratio']:.2f}×")
        met = "—" if r["met"] is None else ("yes" if r["met"] else "**no**")
        cells = [r["what"], o, _secs(r["minivar_s"], B), ratio, r["target"], met, r["gflops"] or "—"]
        if default_setup:
            cells.insert(1, r["first"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rep: dict, argv) -> str:
    s = rep["setup"]
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MALLOC_MMAP_MAX_",
                                                           "MALLOC_TRIM_THRESHOLD_") if k in os.environ]
    if rep["official"] and not any(a.startswith("--var-src") for a in argv):
        env.append(f"VAR_SRC={shlex.quote(rep['official'])}")
    out = [f"command: {' '.join(env + ['python'] + [shlex.quote(a) for a in argv])}",
           f"{describe()}, fp32; {os.cpu_count()} logical cores; Python {platform.python_version()}",
           f"official code: {rep['official'] or 'not run (no VAR_SRC)'}; medians of {rep['reps']} interleaved "
           f"reps (warm-up excluded); {s.image_size} px, schedule {tuple(s.patch_nums)} (L {s.L}), V {s.vocab}, "
           f"tokenizer width {s.tok_ch}; sampling cfg {s.sampling['cfg']}, top-k {s.sampling['top_k']}, "
           f"top-p {s.sampling['top_p']}",
           f"matmul probe: {rep['probe_n']}x{rep['probe_n']} fp32 GEMM {rep['probe']:.0f} GFLOP/s (median of "
           f"{len(rep['probe_all'])}: {min(rep['probe_all']):.0f}–{max(rep['probe_all']):.0f})", "",
           format_table(rep), ""]
    if "train" in rep["times"]:
        t = rep["times"]["train"]
        line = f"training step FLOPs (analytic, see the docstring): VAR-d{s.depth} {t['flops VAR'] / 1e9:.3g} GFLOP"
        if "official VAR" in t:
            line += f" (official: {t['flops VAR'] / t['official VAR'] / 1e9:.0f} GFLOP/s)"
        if "flops M-VAR" in t:
            line += f", M-VAR-d{s.depth} {t['flops M-VAR'] / 1e9:.3g} GFLOP without the scan"
        out.append(line)
    if rep["official"]:
        checks = rep["checks"].items
        out.append("identity checks (official vs minivar, same weights): " + (
            "; ".join(f"{w}: {'OK' if ok else 'FAILED'} ({d})" for w, ok, d in checks) if checks else "none run"))
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="d4 only, 2 reps, tokenizer width 32, train batch 4")
    p.add_argument("--rows", default="", help=f"comma-separated, from {','.join(ROWS)} (default: all)")
    p.add_argument("--reps", type=int, default=0, help="timed reps per call (default 5, --quick 2)")
    p.add_argument("--train-batch", type=int, default=0, help="micro-batch of the training rows (default 16)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--var-src", default=os.environ.get("VAR_SRC", ""),
                   help="extracted official VAR checkout (default: $VAR_SRC; empty: minivar alone)")
    p.add_argument("--probe-n", type=int, default=2048)
    p.add_argument("--malloc", choices=("default", "keep"), default="default",
                   help="keep: minivar.fast.cpu_memory.keep_freed_memory() first, for both contenders (what "
                        "`python -m minivar train` does on CPU); default: glibc as is, as the first measurement ran")
    a = p.parse_args(argv[1:])
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.malloc == "keep" and not keep_freed_memory():
        p.error("--malloc keep needs glibc (Linux) and MINIVAR_MALLOC unset")
    s = QUICK if a.quick else Setup()
    if a.train_batch:
        s = dataclasses.replace(s, train_batch=a.train_batch)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    rows = rows or [r for r in ROWS if not (a.quick and r == "sample-d16")]
    reps = a.reps or (2 if a.quick else 5)
    rep = run(s, rows, reps, a.var_src or None, a.probe_n, 3 if a.quick else 5)
    print(report(rep, argv))
    if not rep["checks"].ok:
        print("\nIDENTITY CHECK FAILED: the two implementations disagree on the same weights (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
