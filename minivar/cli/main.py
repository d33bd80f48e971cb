"""Command line: ``python -m minivar <command>`` (each also callable from Python: ``main([...])``).

    python -m minivar demo                        # tokenizer + M-VAR on digits, samples, metrics (~5 min)
    python -m minivar train-tokenizer --data digits --preset tiny16 --out runs/tok
    python -m minivar train --out runs/mvar --tokenizer runs/tok/tokenizer.pt --mixer mvar --steps 800
    python -m minivar train --out runs/mvar --resume          # continue a stopped / killed run exactly
    python -m minivar sample --run runs/mvar --per-class 8 --cfg 1.5
    python -m minivar eval --run runs/mvar --per-class 20 --seeds 0,1,2
    python -m minivar sample --official var_d16.pth --tokenizer vae_ch160v4096z32.pth --per-class 50 \
        --top-k 900 --top-p 0.96 --png-dir out/var_d16 --npz out/var_d16.npz      # ImageNet, 50,000 PNGs
    python -m minivar fid --samples out/var_d16.npz --ref VIRTUAL_imagenet256_labeled.npz \
        --inception pt_inception-2015-12-05-6726825d.pth --out out/var_d16_fid.json
    python -m minivar reconstruct --tokenizer vae_ch160v4096z32.pth --data-path imagenet/val \
        --png-dir out/rec --npz out/rec.npz --orig-npz out/val.npz                 # rFID: fid rec vs val

`train` takes every field of ``minivar.training.TrainConfig`` as ``--field value`` and a JSON file
with ``--config file.json`` (command line wins). A run folder holds config.json, metrics.jsonl,
ckpt/step_*.pt, model.pt, tokens.pt (the cached token indices) and PNG sample grids.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import time

import torch

from .. import data, viz
from ..fast.cpu_memory import keep_freed_memory
from ..evaluation.fid import EvalInputError
from ..tokenizer.vqvae import TOKENIZER_PRESETS, VQVAE
from ..training.tokenizer_trainer import TokenizerTrainConfig, evaluate_tokenizer, train_tokenizer


class ConfigError(ValueError):
    """A config file or override that names an unknown key or holds a value of the wrong type."""


# ---------------------------------------------------------------------- configs: file + overrides
def _convert(cls, name: str, value):
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    kind = kind if isinstance(kind, str) else kind.__name__
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[str(value).lower()]
        if isinstance(value, str) and kind == "tuple":
            return tuple(float(v) for v in value.split(","))
        if kind == "tuple":
            return tuple(value)
        return {"int": int, "float": float, "str": str}[kind](value)
    except (ValueError, TypeError, KeyError):
        raise ConfigError(f"config key {name!r} expects {kind}, got {value!r}") from None


def build_config(cls, file: str | None = None, overrides: dict | None = None, base=None):
    """cls() (or ``base``) updated from a JSON file, then from overrides; unknown keys are errors."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    if file:
        if not os.path.exists(file):
            raise ConfigError(f"config file {file} does not exist")
        try:
            with open(file) as f:
                values.update(json.load(f))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {file} is not valid JSON: {e}") from None
    values.update(overrides or {})
    for k in values:
        if k not in names:
            close = difflib.get_close_matches(k, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {k!r}{hint}")
    base = base or cls()
    return dataclasses.replace(base, **{k: _convert(cls, k, v) for k, v in values.items()})


def split_overrides(cls, extra: list[str]) -> dict:
    """['--steps', '10', '--mixer=var'] -> {'steps': '10', 'mixer': 'var'} (hyphens -> underscores)."""
    out, i = {}, 0
    while i < len(extra):
        tok = extra[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; options look like --steps 100")
        key, _, val = tok[2:].partition("=")
        if not val:
            if i + 1 >= len(extra):
                raise ConfigError(f"option {tok} needs a value")
            val, i = extra[i + 1], i + 1
        out[key.replace("-", "_")] = val
        i += 1
    return out


RUN_FILES = ("config.json", "metrics.jsonl", "model.pt", "tokens.pt", "ckpt", "samples", "eval.json")


def prepare_run_dir(out: str, kind: str, overwrite: bool, resume: bool = False) -> None:
    """Create ``out``; refuse a folder that already holds a run unless --resume / --overwrite."""
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path) and not (overwrite or resume):
        with open(cfg_path) as f:
            prev = json.load(f).get("kind")
        if prev != kind or kind != "demo":
            sys.exit(f"error: {out} already holds a run ({prev}); pass --resume to continue it, "
                     "--overwrite to replace it, or choose another --out")
    if overwrite and not resume:
        for name in RUN_FILES:
            p = os.path.join(out, name)
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)


# ---------------------------------------------------------------------- tokenizer (unchanged verb)
def report_tokenizer(vae: VQVAE, val_x: torch.Tensor, out: str, seconds: float) -> dict:
    ev = evaluate_tokenizer(vae, val_x)
    pns = vae.patch_nums
    print(f"\nreconstruction PSNR on {len(val_x)} held-out images: {ev['psnr']:.2f} dB")
    print("codebook use per scale (fraction of the V codes used / perplexity):")
    for pn, u, p in zip(pns, ev["usage"], ev["perplexity"]):
        print(f"  scale {pn:>2}x{pn:<2}  {u * 100:5.1f}% of {vae.config.vocab_size}   perplexity {p:7.1f}")
    x = val_x[:8]
    per_scale = vae.decode_per_scale(vae.encode(x))
    png = os.path.join(out, "reconstructions.png")
    viz.save_grid(png, per_scale + [x], [f"{p}x{p}" for p in pns] + ["input"])
    vae.save(os.path.join(out, "tokenizer.pt"))
    ev["train_seconds"] = seconds
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(ev, f, indent=1)
    print(f"wrote {png} (columns: decoded from scales up to k, then the input) and "
          f"{os.path.join(out, 'tokenizer.pt')}")
    return ev


def run_tokenizer_training(args, kind: str) -> list[dict]:
    minutes = check_minutes(args.minutes, zero_means_no_limit=True)
    torch.manual_seed(args.seed)
    cfg = TOKENIZER_PRESETS[args.preset]
    data_path = getattr(args, "data_path", None)
    (tx, _), (vx, _) = data.splits(args.data, cfg.image_size, 0.1, 0, data_path)  # same split as `train`'s
    prepare_run_dir(args.out, kind, getattr(args, "overwrite", False))
    tcfg = TokenizerTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                time_limit_s=minutes * 60 if minutes else None)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"kind": kind, "data": args.data, "data_path": data_path, "preset": args.preset,
                   "tokenizer": dataclasses.asdict(cfg), "train": dataclasses.asdict(tcfg)}, f, indent=1)
    vae = VQVAE(cfg)
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"tokenizer '{args.preset}': {n_params / 1e6:.2f}M parameters, {cfg.image_size} px images, "
          f"scales {cfg.patch_nums}, V={cfg.vocab_size}; data '{args.data}': {len(tx)} train / {len(vx)} val")
    log_path = os.path.join(args.out, "metrics.jsonl")
    open(log_path, "w").close()

    def log(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    t0 = time.time()
    hist = train_tokenizer(vae, tx, tcfg, progress=not args.quiet, log=log)
    secs = time.time() - t0
    print(f"trained {hist[-1]['step']} steps in {secs:.0f} s ({hist[-1]['img_per_s']:.0f} images/s)")
    report_tokenizer(vae, vx, args.out, secs)
    return hist


# ---------------------------------------------------------------------- the demo
@dataclasses.dataclass(frozen=True)
class DemoRecipe:
    """The demo's fixed, seeded recipe. Its result depends on these numbers, never on how fast the
    machine is: a slow or busy machine takes longer and gets the same model."""
    tok_steps: int = 300  # tokenizer: batch 32, lr 3e-4
    steps: int = 400  # M-VAR depth 4, width 128: batch 32, base lr 8e-3
    seed: int = 0
    eval_per_class: int = 18  # digits hold out 179 images: N = 179 samples vs 179 reals
    # what an idle 2-core machine took (AMD EPYC, AVX2, torch 2.13 CPU, 2 threads): the ETA's yardstick
    reference_seconds: float = 240.0


# The demo's pass mark, also stated in the README: the samples must show their class, and their
# feature statistics must sit near the real-vs-real floor.
DEMO_MIN_COND_ACC = 0.90
DEMO_MAX_FD_OVER_FLOOR = 2.0


def check_minutes(minutes, option: str = "--minutes", zero_means_no_limit: bool = False) -> float | None:
    """A time limit from the command line: None (no limit) or a positive, finite number of minutes."""
    if minutes is None or (zero_means_no_limit and minutes == 0):
        return None
    if not math.isfinite(minutes) or minutes <= 0:
        hint = "0 or leave it out for no limit" if zero_means_no_limit else "leave it out for no limit"
        raise ConfigError(f"{option} {minutes} is not a time limit: give a positive number of minutes ({hint})")
    return minutes


def _demo_estimate(recipe: DemoRecipe, cfg, vae_cfg) -> tuple[float, float]:
    """(tokenizer seconds, transformer seconds) the recipe will take here, from a few timed steps
    (the first ones excluded: they pay for warm-up)."""
    from . import runs
    with torch.random.fork_rng():
        vae = VQVAE(vae_cfg)
        x = torch.rand(64, 3, vae_cfg.image_size, vae_cfg.image_size) * 2 - 1
        stamps = []  # wall clock after each step
        train_tokenizer(vae, x, TokenizerTrainConfig(steps=5, batch_size=32, log_every=1), progress=False,
                        log=lambda r: stamps.append(time.perf_counter()))
        tok_step = (stamps[-1] - stamps[1]) / (len(stamps) - 2)
        tr_step = runs.seconds_per_step(cfg, vae.eval(), num_classes=10, repeats=2)
    return recipe.tok_steps * tok_step, recipe.steps * tr_step


def run_demo(args, recipe: DemoRecipe | None = None) -> dict:
    """Tokenizer + M-VAR on digits at 16 px, a sample grid and the metrics; returns the demo's verdict
    (also written to ``eval.json``). ``recipe`` replaces the fixed one (tests run a tiny one)."""
    from .. import environment
    from . import runs
    from ..training.recipe import TrainConfig
    recipe = recipe or DemoRecipe()
    cap = check_minutes(args.minutes)
    t0 = time.time()
    out = args.out
    prepare_run_dir(out, "demo", overwrite=True)
    tok_dir, run = os.path.join(out, "tokenizer"), os.path.join(out, "mvar")
    cfg = TrainConfig(data="digits", tokenizer=os.path.join(tok_dir, "tokenizer.pt"), mixer="mvar", depth=4,
                      width=128, heads=4, steps=recipe.steps, batch_size=32, micro_batch=32, base_lr=8e-3,
                      warmup_frac=0.05, drop_path=0.0, ema=0.0, log_every=20, ckpt_every=200, seed=recipe.seed)
    tok_s, tr_s = _demo_estimate(recipe, cfg, TOKENIZER_PRESETS["tiny16"])
    eta = (tok_s + tr_s) * 1.1 + 25  # + sampling, the feature classifier and the metrics
    print(f"minivar demo: a fixed recipe (tokenizer {recipe.tok_steps} steps, M-VAR {recipe.steps} steps, seed "
          f"{recipe.seed}) on {environment.describe()}")
    print(f"estimated time here: {eta / 60:.1f} min (an idle 2-core reference machine: "
          f"{recipe.reference_seconds / 60:.1f} min)")
    if eta > 1.5 * recipe.reference_seconds:
        print(f"this machine is running {eta / recipe.reference_seconds:.1f}x slower than the reference (busy "
              "cores or a slower CPU): the demo takes longer, and its result is the same")
    shares = (tok_s / (tok_s + tr_s), tr_s / (tok_s + tr_s))
    if cap is not None:
        print(f"time cap: {cap:g} min of training (--minutes); a capped run stops early and is reported as such")

    print("\n 1. a multi-scale residual VQ tokenizer on scikit-learn digits at 16 px (scales 1,2,3,4; V=256)")
    tok = argparse.Namespace(out=tok_dir, data="digits", preset="tiny16", steps=recipe.tok_steps, batch_size=32,
                             lr=3e-4, minutes=cap * shares[0] if cap else 0, seed=recipe.seed, quiet=args.quiet,
                             overwrite=True)
    tok_hist = run_tokenizer_training(tok, "train-tokenizer")
    print("\n 2. an M-VAR transformer (depth 4, width 128: intra-scale attention + Mamba2) on the "
          "token indices, encoded once")
    cfg = dataclasses.replace(cfg, minutes=cap * shares[1] if cap else 0.0)
    prepare_run_dir(run, "train", overwrite=True)
    runs.write_json(os.path.join(run, "config.json"), {"kind": "train", "train": dataclasses.asdict(cfg)})
    last = runs.train_in_folder(cfg, run, progress=not args.quiet)
    print(f"trained {last['step']} steps in {last['seconds']:.0f} s: loss {last.get('loss', float('nan')):.3f}, "
          f"token accuracy {last.get('acc', float('nan')) * 100:.1f}% (per scale "
          f"{[round(a, 2) for a in last.get('scale_acc', [])]})")
    print("\n 3. class-conditional samples and metrics")
    png = runs.sample_grid(argparse.Namespace(run=run, checkpoint=None, per_class=8, cfg=1.5, top_k=0,
                                              top_p=0.0, seed=0, png=os.path.join(out, "samples.png")))
    report = runs.evaluate(argparse.Namespace(run=run, checkpoint=None, per_class=recipe.eval_per_class, cfg=1.5,
                                              top_k=0, top_p=0.0, seeds="0",
                                              classifier=os.path.join(out, "classifier_digits16.pt")))
    verdict = demo_verdict(report, recipe, cap, tok_steps=tok_hist[-1]["step"], steps=last["step"])
    report["demo"] = verdict
    runs.write_json(os.path.join(run, "eval.json"), report)
    print(f"\ndemo finished in {(time.time() - t0) / 60:.1f} min; see {png} and {os.path.join(run, 'eval.json')}")
    for line in verdict["lines"]:
        print(line)
    return verdict


def demo_verdict(report: dict, recipe: DemoRecipe, cap, tok_steps: int, steps: int) -> dict:
    """Compare the demo's metrics with its pass mark; the last lines it prints say what happened."""
    acc, fd = report["summary_mean_std"]["cond_acc"][0], report["summary_mean_std"]["fd_cls"][0]
    floor = report["per_seed"][0]["floor"]["fd_cls"]
    capped = tok_steps < recipe.tok_steps or steps < recipe.steps
    ok_acc, ok_fd = acc >= DEMO_MIN_COND_ACC, fd <= DEMO_MAX_FD_OVER_FLOOR * floor
    lines = [f"  conditional accuracy {acc * 100:.1f}% (pass: >= {DEMO_MIN_COND_ACC * 100:.0f}%) "
             + ("ok" if ok_acc else "MISSED"),
             f"  FD-cls {fd:.2f} (pass: <= {DEMO_MAX_FD_OVER_FLOOR:g} x the real-vs-real floor {floor:.2f} = "
             f"{DEMO_MAX_FD_OVER_FLOOR * floor:.2f}) " + ("ok" if ok_fd else "MISSED")]
    if capped:
        lines.append(f"  the --minutes {cap:g} cap stopped training early: tokenizer {tok_steps}/{recipe.tok_steps} "
                     f"steps, M-VAR {steps}/{recipe.steps} steps")
    passed = ok_acc and ok_fd
    if passed:
        lines.append("demo PASSED: the model meets the demo's pass mark"
                     + (" (although the time cap cut its training short)" if capped else ""))
    else:
        lines.append("demo FAILED: the model misses the pass mark above"
                     + (" because the --minutes cap cut its training short; run without --minutes" if capped
                        else "; this is a bug worth reporting, with eval.json"))
    return {"passed": passed, "cond_acc": acc, "fd_cls": fd, "fd_cls_floor": floor,
            "pass_mark": {"cond_acc_min": DEMO_MIN_COND_ACC, "fd_cls_max_over_floor": DEMO_MAX_FD_OVER_FLOOR},
            "recipe": dataclasses.asdict(recipe), "time_cap_minutes": cap, "capped": capped,
            "steps_done": {"tokenizer": tok_steps, "mvar": steps}, "lines": lines}


# ---------------------------------------------------------------------- train / sample / eval
def run_train(args, extra: list[str]):
    from ..training.recipe import TrainConfig
    from . import runs
    overrides = split_overrides(TrainConfig, extra)
    stored = os.path.join(args.out, "config.json")
    if args.resume and os.path.exists(stored):
        with open(stored) as f:
            prev = json.load(f)
        if prev.get("kind") != "train":
            sys.exit(f"error: {args.out} holds a {prev.get('kind')} run, not a transformer run")
        old = build_config(TrainConfig, None, prev["train"])
        cfg = build_config(TrainConfig, args.config, overrides, base=old)
        changed = [k for k, v in dataclasses.asdict(cfg).items()
                   if v != getattr(old, k) and k not in runs.RESUME_MAY_CHANGE]
        if changed:
            sys.exit(f"error: --resume cannot change {changed} (an exact resume needs the same recipe); "
                     f"only {sorted(runs.RESUME_MAY_CHANGE)} may change")
    else:
        cfg = build_config(TrainConfig, args.config, overrides)
    rank, world = runs.init_distributed()  # under torchrun: gloo on CPU, NCCL on GPU
    runs.check_train_inputs(cfg)  # every bad input is reported before anything is written
    if rank == 0:
        prepare_run_dir(args.out, "train", args.overwrite, args.resume)
        runs.write_json(stored, {"kind": "train", "train": dataclasses.asdict(cfg)})
    if world > 1:
        torch.distributed.barrier()
    return runs.train_in_folder(cfg, args.out, resume=args.resume, progress=not args.quiet)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivar", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def tok_args(sp, steps, minutes):
        sp.add_argument("--data", default="digits", choices=sorted(data.DATASETS))
        sp.add_argument("--data-path", help="folder of the fashion / emoji / imagefolder files")
        sp.add_argument("--preset", default="tiny16", choices=sorted(TOKENIZER_PRESETS))
        sp.add_argument("--steps", type=int, default=steps)
        sp.add_argument("--batch-size", type=int, default=32)
        sp.add_argument("--lr", type=float, default=3e-4)
        sp.add_argument("--minutes", type=float, default=minutes, help="stop after this long (0: no limit)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("demo", help="tokenizer + M-VAR on digits, a sample grid and metrics (~5 min on 2 cores)")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--minutes", type=float, default=None,
                   help="optional cap on the training time (default: none; the recipe is fixed in steps, "
                   "and a capped run that misses the pass mark exits with an error)")
    d.add_argument("--quiet", action="store_true")
    t = sub.add_parser("train-tokenizer", help="train a multi-scale VQ tokenizer")
    t.add_argument("--out", required=True)
    t.add_argument("--overwrite", action="store_true")
    tok_args(t, steps=3000, minutes=0)
    from ..training.recipe import TrainConfig
    fields = "  ".join(f"--{f.name} {getattr(TrainConfig(), f.name)!r}" for f in dataclasses.fields(TrainConfig))
    tr = sub.add_parser("train", help="train a VAR / M-VAR transformer (any TrainConfig field as --field value)",
                        epilog=f"TrainConfig fields (defaults): {fields}")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--config", help="JSON file of TrainConfig fields")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    tr.add_argument("--quiet", action="store_true")
    for name, helptext in (("sample", "write a class-conditional sample grid"),
                           ("eval", "FD-cls, KID, precision/recall, conditional accuracy, memorisation")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--run", required=name == "eval", help="run folder of `train`")
        s.add_argument("--per-class", type=int, default=8 if name == "sample" else 20)
        s.add_argument("--cfg", type=float, default=1.5)
        s.add_argument("--top-k", type=int, default=0)
        s.add_argument("--top-p", type=float, default=0.0)
        s.add_argument("--checkpoint", help="model file (default: RUN/model.pt)")
        if name == "sample":
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--png", help="output PNG (default: RUN/samples/sample_cfg<cfg>_seed<seed>.png)")
            s.add_argument("--png-dir", help="write one PNG per sample here instead of a grid (ImageNet: "
                           "--per-class 50 --cfg 1.5 --top-k 900 --top-p 0.96)")
            s.add_argument("--npz", help="with --png-dir: also pack the PNGs into this arr_0 npz")
            s.add_argument("--official", help="an official VAR / M-VAR checkpoint instead of --run "
                           "(var_d16.pth, d16.pth, ...); needs --tokenizer")
            s.add_argument("--tokenizer", help="with --official: vae_ch160v4096z32.pth (or a minivar tokenizer.pt)")
            s.add_argument("--batch-size", type=int, default=250, help="images per sampling batch (seed + b)")
            s.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast on CUDA")
            s.add_argument("--decode-bf16", action="store_true", help="decode images in bf16 (approximate: "
                           "pixels move by ~1e-2; ~2.5x faster decode on CPUs with AMX / AVX512-BF16)")
        else:
            s.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
            s.add_argument("--classifier", help="frozen feature classifier (default: trained once, cached)")
    f = sub.add_parser("fid", help="FID / IS / precision / recall of an npz of samples (ImageNet protocol)")
    f.add_argument("--samples", required=True, help="npz with arr_0 uint8 (N, H, W, 3), e.g. from `sample --npz`")
    f.add_argument("--ref", required=True, help="reference batch, e.g. VIRTUAL_imagenet256_labeled.npz")
    f.add_argument("--inception", required=True, help="pt_inception-2015-12-05-6726825d.pth (hash-checked)")
    f.add_argument("--out", help="JSON report (N, files' SHA-256, every setting)")
    f.add_argument("--batch-size", type=int, default=200)
    f.add_argument("--device", help="default: cuda when available")
    r = sub.add_parser("reconstruct", help="tokenizer reconstructions of an image folder, for the rFID")
    r.add_argument("--tokenizer", required=True, help="minivar tokenizer.pt or the official vae_ch160v4096z32.pth")
    r.add_argument("--data", default="imagefolder", choices=("imagefolder",))
    r.add_argument("--data-path", required=True, help="DIR/<class>/<image> (ImageNet: val/n01440764/*.JPEG)")
    r.add_argument("--png-dir", required=True, help="one PNG per reconstruction")
    r.add_argument("--npz", help="also pack the reconstructions into this arr_0 npz")
    r.add_argument("--orig-npz", help="also write the centre-cropped originals (the rFID reference) here")
    r.add_argument("--batch-size", type=int, default=50)
    r.add_argument("--limit", type=int, default=0, help="first N images per class (0: all)")
    args, extra = p.parse_known_args(argv)
    if extra and args.command != "train":
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    from . import runs
    if args.command in ("demo", "train-tokenizer", "train") and not torch.cuda.is_available():
        keep_freed_memory()  # CPU training: reuse freed activations instead of page-faulting them in again
    try:
        if args.command == "demo":
            if not run_demo(args)["passed"]:
                sys.exit(1)
        elif args.command == "train-tokenizer":
            run_tokenizer_training(args, "train-tokenizer")
        elif args.command == "train":
            run_train(args, extra)
        elif args.command == "sample":
            runs.sample_grid(args)
        elif args.command == "eval":
            runs.evaluate(args)
        elif args.command == "fid":
            from ..evaluation.fid import run_fid
            run_fid(args)
        elif args.command == "reconstruct":
            from ..evaluation.fid import reconstruct
            reconstruct(args)
    except (ConfigError, data.DatasetMissingError, data.DatasetFormatError, runs.RunError, EvalInputError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
