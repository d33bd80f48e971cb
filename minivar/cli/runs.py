"""Run folders: what the CLI verbs `train`, `sample`, `eval` and `demo` do around the library
(``minivar.training.trainer``, ``minivar.sample``, ``minivar.evaluation``).

A run folder holds config.json, metrics.jsonl, ckpt/step_*.pt (keep-last-N), model.pt, tokens.pt
(the dataset encoded once by the frozen tokenizer), samples/*.png and eval.json. ``sample`` also takes
an official VAR / M-VAR checkpoint instead of a run, and shares its batches over torchrun ranks.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from PIL import Image
import torch.distributed as dist

from .. import data, environment, viz
from ..evaluation import fid, metrics
from ..models.transformer import NextScaleTransformer
from ..loading import load_tokenizer
from ..tokenizer.vqvae import VQVAE
from ..checkpoints import CheckpointError, atomic_json
from ..training.recipe import TrainConfig, TrainingDiverged, model_config_for
from ..training.tokenizer_trainer import evaluate_tokenizer
from ..training.trainer import train
from . import sources
from .sources import RunError

# fields that may differ when a run is resumed (``steps`` also moves the end of the lr schedule)
# (the model's two settings that do not change its results: attention backend, scan chunk; and
# base_lr, the way to continue a diverged run, with a note that the run is no longer a replay)
RESUME_MAY_CHANGE = {"steps", "minutes", "log_every", "ckpt_every", "keep_last", "sample_every", "base_lr",
                     "model.attn_backend", "model.mamba_chunk"}


def write_json(path: str, obj) -> None:
    atomic_json(obj, path)


def init_distributed() -> tuple[int, int]:
    """Join the torchrun group (gloo on CPU, NCCL on GPU) when WORLD_SIZE > 1; -> (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def check_train_inputs(cfg: TrainConfig) -> None:
    """What a TrainConfig cannot check by itself (the tokenizer, the data, the ranks), before the
    run folder is touched; the model's settings are checked where they are bound to the data."""
    if not cfg.tokenizer:
        raise RunError("no tokenizer: pass --tokenizer runs/tok/tokenizer.pt (train one with "
                       "`python -m minivar train-tokenizer --out runs/tok`)")
    try:
        vae = load_tokenizer(cfg.tokenizer)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.batch_size % world:
        raise RunError(f"batch_size {cfg.batch_size} is not a multiple of the {world} ranks")
    try:
        if cfg.data == "imagefolder":  # list the files only: ImageNet does not fit in memory
            y = torch.tensor(data.image_folder_files(cfg.data_path or None)[1])
        else:
            _, y = data.load(cfg.data, vae.config.image_size, cfg.data_path or None)
        model_config_for(cfg, vae, data_classes=int(y.max()) + 1)
    except ValueError as e:
        raise RunError(str(e)) from None


def _sampler_callback(out: str, vae: VQVAE, per_class: int = 4):
    def on_sample(model, step):
        path = os.path.join(out, "samples", f"step_{step:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        vae.to(model.pos_1LC.device)  # the trainer's model may be on CUDA
        save_class_grid(model, vae, path, per_class, cfg=1.5, top_k=0, top_p=0.0, seed=0)
    return on_sample


def train_in_folder(cfg: TrainConfig, out: str, resume: bool = False, progress: bool = True) -> dict:
    init_distributed()
    vae = load_tokenizer(cfg.tokenizer)
    try:
        return train(cfg, out, resume=resume, progress=progress, on_sample=_sampler_callback(out, vae))
    except TrainingDiverged as e:
        raise RunError(str(e)) from None


def seconds_per_step(cfg: TrainConfig, vae: VQVAE, num_classes: int, repeats: int = 3) -> float:
    """Wall seconds of one optimizer step of ``cfg`` here (best of ``repeats`` after a warm-up, on
    random tokens): a speed measurement for ETAs, never an input to the recipe."""
    model = NextScaleTransformer(model_config_for(cfg, vae, num_classes)).train()
    opt = torch.optim.AdamW(model.parameters())
    mc, n = model.config, cfg.micro_batch
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(mc.vocab_size, (n, model.L), generator=g)
    x_in = vae.teacher_input(idx)
    y = torch.randint(num_classes, (n,), generator=g)
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        for _ in range(max(1, cfg.batch_size // n)):
            model.loss(y, x_in, idx)["loss"].backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return min(times[1:])


# ---------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_classes(model, vae, per_class: int, cfg: float, top_k: int, top_p: float, seed: int,
                   num_classes: int = 0):
    """per_class samples of the first num_classes (0: all) classes -> (images (N, 3, H, W) in [-1, 1],
    labels (N,)), class-major."""
    labels = torch.arange(num_classes or model.num_classes).repeat_interleave(per_class)
    x = model.generate(labels, cfg=cfg, top_k=top_k, top_p=top_p, seed=seed, vae=vae)
    return x * 2 - 1, labels


def save_class_grid(model, vae, path, per_class, cfg, top_k, top_p, seed, max_classes: int = 16) -> str:
    """A PNG with one column per class (the first ``max_classes`` classes)."""
    n_cls = min(model.num_classes, max_classes)
    x, _ = sample_classes(model, vae, per_class, cfg, top_k, top_p, seed, n_cls)
    viz.save_grid(path, list(x.view(n_cls, per_class, *x.shape[1:])), [str(c) for c in range(n_cls)])
    return path


def _autocast(amp: str, device: torch.device):
    if amp == "none" or device.type != "cuda":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


@torch.no_grad()
def sample_to_folder(model, vae, folder: str, per_class: int, cfg: float, top_k: int, top_p: float, seed: int,
                     batch_size: int = 250, npz: str | None = None, info: dict | None = None,
                     amp: str = "none") -> int:
    """per_class PNGs of every class (ImageNet protocol: 50 x 1000), ``{class:04d}_{i:03d}.png``, optionally
    packed into an ``arr_0`` npz. Batch b uses seed ``seed + b``; the file order is class-major.

    Under torchrun every rank takes batches b = rank, rank + W, ... (same images as one process); a
    batch whose PNGs all read back whole is skipped, so a stopped run continues. The settings go to
    ``folder/sampling.json`` and beside the npz (``samples.json``), where ``fid`` picks them up.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    os.makedirs(folder, exist_ok=True)
    device = model.pos_1LC.device
    labels = torch.arange(model.num_classes).repeat_interleave(per_class)
    name = lambda i: os.path.join(folder, f"{i // per_class:04d}_{i % per_class:03d}.png")  # noqa: E731
    t0, done = time.time(), 0
    for b, start in enumerate(range(0, len(labels), batch_size)):
        idx = range(start, min(start + batch_size, len(labels)))
        if b % world != rank or all(png_ok(name(i)) for i in idx):
            continue
        with _autocast(amp, device):
            x = model.generate(labels[start:idx.stop], cfg=cfg, top_k=top_k, top_p=top_p, seed=seed + b, vae=vae)
        for i, im in zip(idx, viz.to_uint8(x * 2 - 1)):
            Image.fromarray(im).save(name(i))
        done += len(idx)
        if rank == 0 and len(labels) > batch_size:
            print(f"  batch {b + 1}/{-(-len(labels) // batch_size)}: {done * world / (time.time() - t0):.1f} img/s "
                  "(all ranks)", flush=True)
    if world > 1:
        dist.barrier()
    if rank == 0:
        settings = {"N": len(labels), "per_class": per_class, "cfg": cfg, "top_k": top_k, "top_p": top_p,
                    "seed": seed, "seed_rule": "batch b uses seed + b", "batch_size": batch_size, "amp": amp,
                    "device": str(device), "ranks": world, "environment": environment.record(), **(info or {})}
        write_json(os.path.join(folder, "sampling.json"), settings)
        if npz:
            fid.pack_npz(folder, npz)
            write_json(os.path.splitext(npz)[0] + ".json", settings)
    return len(labels)


def png_ok(path: str) -> bool:
    """The PNG exists and reads back whole (a batch cut short by a crash or a full disk is redone)."""
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def sample_target(args) -> tuple[str | None, str]:
    """The folder `sample` writes into and locks: --png-dir, or the run folder for the default grid
    (an explicit --png is one file, written atomically, and locks nothing)."""
    _check_run_folder(args)
    if getattr(args, "png_dir", None):
        return args.png_dir, "minivar sample"
    return (args.run if args.run and not args.png else None), "minivar sample"


def eval_target(args) -> tuple[str | None, str]:
    """The run folder `eval` writes eval.json into (None with --out)."""
    _check_run_folder(args)
    return (None if args.out else args.run), "minivar eval"


def _check_run_folder(args) -> None:
    if args.run and not os.path.isdir(args.run):
        what = "is a file" if os.path.exists(args.run) else "does not exist"
        raise RunError(f"--run {args.run} {what}; give the run folder of `minivar train`")


def sample_grid(args) -> str:
    if getattr(args, "npz", None) and not args.png_dir:
        raise RunError("--npz goes with --png-dir (it packs the PNGs written there)")
    model, vae, files = sources.load_for_sampling(args)
    info = {k: sources.file_info(f) for k, f in files.items()}
    rank, _ = init_distributed()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model, vae = model.to(device), vae.to(device)
    if getattr(args, "decode_bf16", False):
        vae.decode_dtype = torch.bfloat16
    info.update(mixer=model.config.mixer, depth=model.config.depth, attn_backend=model.config.attn_backend,
                decode_dtype=str(vae.decode_dtype or torch.float32))
    if getattr(args, "png_dir", None):
        n = sample_to_folder(model, vae, args.png_dir, args.per_class, args.cfg, args.top_k, args.top_p,
                             args.seed, args.batch_size, npz=args.npz, info=info, amp=args.amp)
        if rank == 0:
            print(f"wrote {n} PNGs to {args.png_dir}" + (f" and packed them into {args.npz}" if args.npz else "")
                  + f" (cfg {args.cfg}, top_k {args.top_k}, top_p {args.top_p}, seed {args.seed})")
        return args.png_dir
    if rank:
        return ""
    png = args.png or os.path.join(args.run or ".", "samples", f"sample_cfg{args.cfg:g}_seed{args.seed}.png")
    os.makedirs(os.path.dirname(os.path.abspath(png)), exist_ok=True)
    save_class_grid(model, vae, png, args.per_class, args.cfg, args.top_k, args.top_p, args.seed)
    print(f"wrote {png}: one column per class, {args.per_class} samples each "
          f"(cfg {args.cfg}, top_k {args.top_k}, top_p {args.top_p}, seed {args.seed})")
    return png


# ---------------------------------------------------------------------- evaluation
def get_classifier(name: str, size: int, path: str | None, seed: int = 0, epochs: int = 10, data_path=None):
    """The frozen feature network of a dataset: loaded from ``path`` or trained once and cached."""
    path = path or os.path.join("runs", "classifiers", f"{name}-{size}px-seed{seed}.pt")
    if os.path.exists(path):
        try:
            clf, info = metrics.load_classifier(path)
        except CheckpointError as e:
            raise RunError(str(e)) from None
        return clf, {**info, "path": path}
    (tx, ty), (vx, vy) = data.splits(name, size, 0.1, seed, data_path)
    t0 = time.time()
    clf = metrics.train_classifier(tx, ty, int(ty.max()) + 1, epochs=epochs, seed=seed)
    acc = (metrics.classify(clf, vx)[1] == vy).double().mean().item()
    info = {"arch": "SmallCNN(width 32, 128-d features)", "data": name, "size": size, "seed": seed,
            "epochs": epochs, "test_acc": acc, "n_test": len(vx), "sha256": metrics.state_sha256(clf)}
    metrics.save_classifier(clf, path, **info)
    print(f"trained the feature classifier for {name} ({time.time() - t0:.0f} s): test accuracy "
          f"{acc * 100:.1f}% on {len(vx)} held-out images -> {path}")
    return clf, {**info, "path": path}


def evaluate(args) -> dict:
    if args.model and not args.out:
        raise RunError("eval --model needs --out REPORT.json (a pretrained folder is not a run folder)")
    model, vae, files = sources.load_for_sampling(args)
    d = sources.data_of(args)
    size = vae.config.image_size
    (tx, ty), (vx, vy) = data.splits(d["data"], size, d["val_fraction"], d["split_seed"], d["data_path"] or None)
    clf, clf_info = get_classifier(d["data"], size, args.classifier, data_path=d["data_path"] or None)
    seeds = args.seeds if isinstance(args.seeds, list) else [int(s) for s in str(args.seeds).split(",")]
    # N = per_class x classes held-out images (or all), taken class by class in turn; the samples get
    # exactly their labels, so real and generated sets share one class histogram even when the data
    # are imbalanced (emoji), and equal per-class counts where they are balanced
    keep = metrics.round_robin(vy)[:args.per_class * model.num_classes]
    vx, vy = vx[keep], vy[keep]
    sampling = {"cfg": args.cfg, "top_k": args.top_k, "top_p": args.top_p, "per_class": args.per_class,
                "labels": "those of the N held-out images"}
    runs_ = []
    for s in seeds:
        with torch.no_grad():
            fake = model.generate(vy, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, seed=s, vae=vae) * 2 - 1
        runs_.append(metrics.evaluate_samples(clf, fake, vy, vx, tx))
    keys = ("fd_cls", "kid", "kid_e3", "precision", "recall", "cond_acc")
    summary = {k: (float(np.mean([r[k] for r in runs_])), float(np.std([r[k] for r in runs_])))
               for k in keys if all(r[k] is not None for r in runs_)}
    rec_tok = vae_report(vae, vx, clf)
    report = {"N": runs_[0]["N"], "seeds": seeds, "sampling": sampling, "model": files["model"],
              "feature_net": clf_info, "summary_mean_std": summary, "per_seed": runs_, "tokenizer": rec_tok,
              "note": "FD-cls is a Fréchet distance in the features of our frozen classifier, not FID",
              "environment": environment.record()}
    write_json(args.out or os.path.join(args.run, "eval.json"), report)
    print_report(report)
    return report


def vae_report(vae, images, clf) -> dict:
    """Tokenizer: PSNR, per-scale codebook usage / perplexity, rFD-cls (reconstructions vs originals)."""
    ev = evaluate_tokenizer(vae, images)
    rec = torch.cat([vae.decode(vae.encode(images[i:i + 128])) for i in range(0, len(images), 128)])
    ev["rfd_cls"] = metrics.fd_features(metrics.classify(clf, rec)[0], metrics.classify(clf, images)[0])
    ev["N"] = len(images)
    return ev


def print_report(r: dict) -> None:
    fi, s = r["feature_net"], r["summary_mean_std"]
    print(f"\nevaluation: N = {r['N']} samples vs N real held-out images, seeds {r['seeds']}, sampling {r['sampling']}")
    print(f"feature network: {fi['arch']} trained on {fi['data']} {fi['size']} px, test accuracy "
          f"{fi['test_acc'] * 100:.1f}%, sha256 {fi['sha256'][:12]}")
    fl = r["per_seed"][0]["floor"]
    print(f"  FD-cls      {s['fd_cls'][0]:9.3f} ± {s['fd_cls'][1]:.3f}   (real-vs-real floor {fl['fd_cls']:.3f})")
    if "kid_e3" in s:
        d = r["per_seed"][0]
        print(f"  KID ×10³    {s['kid_e3'][0]:9.2f} ± {d['kid_e3_std']:.2f}   (floor {fl['kid_e3']:.2f} ± "
              f"{fl['kid_e3_std']:.2f}; standardised features, 100 subsets of N/2; unbiased, so values near "
              "the floor, negative ones included, mean indistinguishable at this N)")
    else:
        print(f"  KID         not reported: N = {r['N']} is below {metrics.KID_MIN_N}, too few for subsets")
    print(f"  precision   {s['precision'][0]:9.3f}   recall {s['recall'][0]:.3f}   (floor {fl['precision']:.3f} / "
          f"{fl['recall']:.3f}, k=3)")
    print(f"  cond. acc.  {s['cond_acc'][0] * 100:8.1f}%")
    m = r["per_seed"][0]["memorisation_pixels"]
    print(f"  memorisation: median pixel distance to the nearest training image {m['median_nn_sample_to_train']:.2f} "
          f"(held-out reals: {m['median_nn_test_to_train']:.2f}, ratio {m['ratio']:.2f})")
    t = r["tokenizer"]
    print(f"  tokenizer: PSNR {t['psnr']:.2f} dB, rFD-cls {t['rfd_cls']:.3f}, code usage per scale "
          f"{[round(u, 2) for u in t['usage']]} (N = {t['N']})")
