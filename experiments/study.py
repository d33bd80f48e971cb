"""The small-data study: VAR vs M-VAR at matched parameter count, same tokenizer, recipe and budget.

    python experiments/study.py digits            # quick tier  (~25 min on 2 cores)
    python experiments/study.py fashion           # Fashion-MNIST 32 px, 3 seeds (~60 min)
    python experiments/study.py emoji             # colour emoji 32 px, one seed (~25 min)
    python experiments/study.py fashion --seeds 0 --steps 40 --out /tmp/smoke   # a smoke test

One tier = one tokenizer (trained once, seed 0) + for each seed a VAR and an M-VAR run through
``python -m minivar train`` (so every run checkpoints and resumes: re-running the command after a
kill continues where it stopped) + ``minivar.cli.runs.evaluate`` on each run + timings. It writes
``experiments/results/<tier>.json`` (every number, the commands, the settings) and PNG sample grids;
notebook 09 reads them. Run folders stay in ``runs/study/<tier>`` and are not committed.

The two models: M-VAR depth 4 (intra-scale attention + Mamba2 + FFN per block) and VAR depth 6
(block-causal attention + FFN), both width 128 (96 for digits) with 4 heads, which have nearly the same number of
parameters (the JSON states both counts). Same optimizer, lr, batch, steps and seeds for both; the
budget is matched in *images seen*, and each run's wall time is reported beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Sleeping (not spinning) OpenMP threads: on a 2-core machine shared with other work, spinning
# threads slow every process down many times over. Must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minivar import data, environment, viz  # noqa: E402
from minivar.cli import runs, sources
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE  # noqa: E402
from minivar.loading import load_model, load_tokenizer  # noqa: E402
from minivar.training import TrainConfig  # noqa: E402
from minivar.training import TokenizerTrainConfig, train_tokenizer  # noqa: E402

# tier -> dataset, tokenizer preset + steps, held-out fraction (Fashion-MNIST uses its official split),
# transformer steps (batch 32), eval samples per class.
TIERS = {
    "digits": dict(data="digits", preset="tiny16", tok_steps=1500, val_fraction=0.1, steps=1000, per_class=50,
                   width=96),
    "fashion": dict(data="fashion", preset="tiny32", tok_steps=1500, val_fraction=0.1, steps=700, per_class=100,
                    width=128),
    "emoji": dict(data="emoji", preset="tiny32", tok_steps=800, val_fraction=0.2, steps=300, per_class=100,
                  width=128),
}
MODELS = {"var": dict(mixer="var", depth=6, heads=4), "mvar": dict(mixer="mvar", depth=4, heads=4)}
RECIPE = dict(batch_size=32, micro_batch=16, base_lr=8e-3, warmup_frac=0.05, drop_path=0.0, ema=0.0,
              log_every=20, ckpt_every=100, keep_last=1)


def train_tier_tokenizer(tier: dict, out: str, steps: int) -> VQVAE:
    path = os.path.join(out, "tokenizer.pt")
    if os.path.exists(path):
        return VQVAE.load(path)
    torch.manual_seed(0)
    cfg = TOKENIZER_PRESETS[tier["preset"]]
    (tx, _), _ = data.splits(tier["data"], cfg.image_size, tier["val_fraction"], 0)
    vae = VQVAE(cfg)
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "metrics.jsonl")
    open(log_path, "w").close()

    def log(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    hist = train_tokenizer(vae, tx, TokenizerTrainConfig(steps=steps, batch_size=32, seed=0), progress=True,
                           log=log)
    runs.write_json(os.path.join(out, "train.json"), {"steps": steps, "seconds": time.time() - t0,
                                                      "last": hist[-1]})
    vae.save(path)
    return vae


def _flat(d: dict) -> dict:
    """A config dict with the model's fields beside the others (their names are unique)."""
    return {**{k: v for k, v in d.items() if k != "model"}, **d.get("model", {})}


def launch(run_dir: str, cfg: TrainConfig) -> subprocess.Popen | None:
    """`python -m minivar train` in its own process (resumes when the folder already holds the run);
    None when the run has finished already."""
    if os.path.exists(os.path.join(run_dir, "model.pt")):
        return None
    args = [sys.executable, "-m", "minivar", "train", "--out", run_dir, "--quiet"]
    if os.path.exists(os.path.join(run_dir, "config.json")):
        args.append("--resume")
    default = _flat(TrainConfig().to_dict())
    for k, v in _flat(cfg.to_dict()).items():
        if v != default[k]:
            args += [f"--{k}", *map(str, v)] if isinstance(v, list) else [f"--{k}", str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("STUDY_THREADS", "1")}
    log = open(os.path.join(os.path.dirname(run_dir), os.path.basename(run_dir) + ".log"), "a")
    print("  $ " + " ".join(args[1:]), flush=True)
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@torch.no_grad()
def sampling_speed(model, vae, batch: int, repeats: int) -> float:
    """Images per second of ``generate`` with decoding (cfg 1.5, top-k/top-p off), median of repeats."""
    labels = torch.arange(batch) % model.num_classes
    times = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        model.generate(labels, cfg=1.5, seed=r, vae=vae)
        times.append(time.perf_counter() - t)
    return batch / statistics.median(times[1:])


def train_speed(run_dir: str) -> tuple[float, float]:
    """(median images/s over the last 3/4 of the logged steps, training seconds of the whole run)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    # img_per_s is the running mean of the sitting, so steps * batch / img_per_s is its duration
    with open(os.path.join(run_dir, "config.json")) as f:
        batch = json.load(f)["train"]["batch_size"]
    return statistics.median(r["img_per_s"] for r in recs[len(recs) // 4:]), recs[-1]["step"] * batch / recs[-1]["img_per_s"]


def export_weights(out: str, dest: str) -> None:
    """The seed-0 tokenizer and models in float16 (the few-MB demo weights of notebook 00), with logs.
    The tokenizer path inside each model file and config is written relative to ``dest``."""
    import shutil
    from minivar.checkpoints import atomic_save, safe_load

    def half(sd):
        return {k: v.half() if v.dtype == torch.float32 else v for k, v in sd.items()}
    os.makedirs(dest, exist_ok=True)
    blob = safe_load(os.path.join(out, "tokenizer", "tokenizer.pt"))
    atomic_save({**blob, "state_dict": half(blob["state_dict"])}, os.path.join(dest, "tokenizer.pt"))
    shutil.copy(os.path.join(out, "tokenizer", "metrics.jsonl"), os.path.join(dest, "tokenizer_metrics.jsonl"))
    for name in MODELS:
        run = os.path.join(out, f"{name}_seed0")
        blob = safe_load(os.path.join(run, "model.pt"))
        atomic_save({**blob, "model": half(blob["model"]), "tokenizer": "tokenizer.pt"},
                    os.path.join(dest, f"{name}.pt"))
        shutil.copy(os.path.join(run, "metrics.jsonl"), os.path.join(dest, f"{name}_metrics.jsonl"))
        with open(os.path.join(run, "config.json")) as f:
            conf = json.load(f)
        conf["train"]["tokenizer"] = "tokenizer.pt"
        runs.write_json(os.path.join(dest, f"{name}_config.json"), conf)
    pretrained_copies(dest)
    print(f"wrote float16 demo weights and their training logs to {dest}")


def pretrained_copies(dest: str) -> None:
    """The same weights as save_pretrained folders (config.json + model.safetensors, still float16):
    dest/tokenizer, dest/var, dest/mvar; each model's config names ../tokenizer and its data."""
    load_tokenizer(os.path.join(dest, "tokenizer.pt")).half().save_pretrained(os.path.join(dest, "tokenizer"))
    for name in MODELS:
        with open(os.path.join(dest, f"{name}_config.json")) as f:
            tcfg = TrainConfig.from_dict(json.load(f)["train"])
        load_model(os.path.join(dest, f"{name}.pt")).half().save_pretrained(
            os.path.join(dest, name), tokenizer=os.path.join(dest, "tokenizer"),
            training={k: getattr(tcfg, k) for k in sources.TRAINING_DATA})


def mean_std(xs):
    return [statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tier", choices=sorted(TIERS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=0, help="transformer steps (0: the tier's)")
    p.add_argument("--tok-steps", type=int, default=0, help="tokenizer steps (0: the tier's)")
    p.add_argument("--jobs", type=int, default=2, help="training runs at once (each one thread)")
    p.add_argument("--out", default="", help="run folders (default runs/study/<tier>)")
    p.add_argument("--results", default="", help="results folder (default experiments/results)")
    p.add_argument("--export-weights", default="", help="also write the seed-0 weights in float16 here")
    a = p.parse_args(argv)
    tier, seeds = TIERS[a.tier], [int(s) for s in a.seeds.split(",")]
    out = a.out or os.path.join(ROOT, "runs", "study", a.tier)
    res_dir = a.results or os.path.join(ROOT, "experiments", "results")
    os.makedirs(res_dir, exist_ok=True)
    torch.set_num_threads(2)
    t_start = time.time()

    print(f"== {a.tier}: tokenizer ({tier['preset']})", flush=True)
    tok_dir = os.path.join(out, "tokenizer")
    vae = train_tier_tokenizer(tier, tok_dir, a.tok_steps or tier["tok_steps"]).eval()
    tok_path = os.path.join(tok_dir, "tokenizer.pt")

    jobs = []
    for seed in seeds:
        for name, m in MODELS.items():
            cfg = TrainConfig.from_dict(dict(data=tier["data"], tokenizer=tok_path, val_fraction=tier["val_fraction"],
                                             steps=a.steps or tier["steps"], seed=seed, width=tier["width"], **m,
                                             **RECIPE))
            jobs.append((name, seed, os.path.join(out, f"{name}_seed{seed}"), cfg))
    print(f"== {a.tier}: {len(jobs)} training runs, {a.jobs} at a time", flush=True)
    queue, running = list(jobs), []
    while queue or running:
        while queue and len(running) < a.jobs:
            name, seed, run_dir, cfg = queue.pop(0)
            proc = launch(run_dir, cfg)
            if proc is not None:
                running.append((run_dir, proc))
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                if item[1].returncode != 0:
                    sys.exit(f"training failed in {item[0]} (see {item[0]}.log)")
        time.sleep(2)

    print(f"== {a.tier}: evaluation", flush=True)
    clf_path = os.path.join(out, f"classifier_{tier['data']}.pt")
    rows, tok_report = [], None
    for name, seed, run_dir, cfg in jobs:
        ev_path = os.path.join(run_dir, "eval.json")
        if not os.path.exists(ev_path):
            runs.evaluate(argparse.Namespace(run=run_dir, model=None, tokenizer=None, checkpoint=None, per_class=tier["per_class"],
                                             cfg=1.5, top_k=0, top_p=0.0, seeds="0", classifier=clf_path, out=None))
        with open(ev_path) as f:
            ev = json.load(f)
        tok_report = ev["tokenizer"]
        model = load_model(os.path.join(run_dir, "model.pt"))
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
        r = ev["per_seed"][0]
        img_per_s, train_seconds = train_speed(run_dir)
        rows.append({"model": name, "seed": seed, "params": sum(q.numel() for q in model.parameters()),
                     "config": {**cfg.to_dict(), "tokenizer": os.path.relpath(cfg.tokenizer, ROOT)}, "final_loss": last["loss"], "final_acc": last["acc"],
                     "fd_cls": r["fd_cls"], "kid": r["kid"], "kid_e3": r["kid_e3"], "precision": r["precision"], "recall": r["recall"],
                     "cond_acc": r["cond_acc"], "floor": r["floor"], "N": r["N"],
                     "memorisation_ratio_pixels": r["memorisation_pixels"]["ratio"],
                     "memorisation_ratio_features": r["memorisation_features"]["ratio"],
                     "train_img_per_s": img_per_s, "train_seconds": train_seconds,
                     "sample_img_per_s_b1": sampling_speed(model, vae, 1, 5),
                     "sample_img_per_s_b64": sampling_speed(model, vae, 64, 2)})
        if seed == seeds[0]:
            png = os.path.join(res_dir, f"{a.tier}_{name}_samples.png")
            runs.save_class_grid(model, vae, png, per_class=8, cfg=1.5, top_k=0, top_p=0.0, seed=0)
        print(f"  {name} seed {seed}: FD-cls {r['fd_cls']:.3f}  KID {r['kid']:.4f}  P/R {r['precision']:.3f}/"
              f"{r['recall']:.3f}  cond.acc {r['cond_acc'] * 100:.1f}%", flush=True)
    (_, _), (vx, _) = data.splits(tier["data"], vae.config.image_size, tier["val_fraction"], 0)
    viz.save_grid(os.path.join(res_dir, f"{a.tier}_tokenizer.png"),
                  vae.decode_per_scale(vae.encode(vx[:8])) + [vx[:8]],
                  [f"{p}x{p}" for p in vae.patch_nums] + ["input"])
    keys = ("fd_cls", "kid", "kid_e3", "precision", "recall", "cond_acc", "final_loss", "memorisation_ratio_pixels",
            "train_img_per_s", "train_seconds", "sample_img_per_s_b1", "sample_img_per_s_b64")
    summary = {name: {"params": next(r["params"] for r in rows if r["model"] == name), "seeds": seeds,
                      **{k: mean_std([r[k] for r in rows if r["model"] == name]) for k in keys}}
               for name in MODELS}
    with open(os.path.join(tok_dir, "train.json")) as f:
        tok_train = json.load(f)
    result = {"tier": a.tier, "dataset": tier["data"], "tokenizer": {"preset": tier["preset"], **tok_report,
                                                                    "train_seconds": tok_train["seconds"],
                                                                    "train_steps": tok_train["steps"]},
              "models": MODELS, "recipe": RECIPE, "steps": a.steps or tier["steps"],
              "eval": {"per_class": tier["per_class"], "cfg": 1.5, "top_k": 0, "top_p": 0.0, "sampling_seed": 0,
                       "feature_net": "SmallCNN classifier trained once on the tier's training split"},
              "summary_mean_std": summary, "runs": rows, "this_invocation_seconds": time.time() - t_start,
              "timing_note": "training runs went 2 at a time with 1 thread each (--jobs 2) on a 2-core machine "
                             "that also ran other work; sampling speeds use 2 threads in the main process",
              "command": f"python experiments/study.py {' '.join(sys.argv[1:] if argv is None else argv)}",
              "machine": {"cpu_threads": os.cpu_count(), **environment.record()}}
    if a.export_weights:
        export_weights(out, a.export_weights)
    path = os.path.join(res_dir, f"{a.tier}.json")
    runs.write_json(path, result)
    print(f"\n== {a.tier} done in {(time.time() - t_start) / 60:.1f} min -> {path}")
    for name, s in summary.items():
        print(f"  {name:5s} {s['params'] / 1e6:.2f}M params  FD-cls {s['fd_cls'][0]:.3f} ± {s['fd_cls'][1]:.3f}  "
              f"KID {s['kid'][0]:.4f}  P {s['precision'][0]:.3f} R {s['recall'][0]:.3f}  "
              f"cond.acc {s['cond_acc'][0] * 100:.1f}%  train {s['train_img_per_s'][0]:.0f} img/s  "
              f"sample B1 {s['sample_img_per_s_b1'][0]:.1f} / B64 {s['sample_img_per_s_b64'][0]:.0f} img/s")


if __name__ == "__main__":
    main()
