# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10 · ImageNet-256 reproduction on a GPU
#
# **You will learn** every step of reproducing the papers' ImageNet-256 results with minivar:
# which files you need, the official training recipes as preset files, how the official VAR and
# M-VAR checkpoints load, the 50-per-class sampling protocol, and how FID / IS / precision /
# recall are computed from an npz of samples. Expected numbers (papers): VAR-d16 FID 3.55,
# M-VAR-d16 FID 3.07 (cfg 1.5, top-k 900, top-p 0.96, 50,000 samples).
#
# **This notebook needs** a CPU and about a minute: on a CPU it runs a *miniature* of every step
# on generated images and toy model sizes, and skips the cells that need a GPU and the real files.
# With CUDA and the files in place (set the environment variables below), those cells run for real:
# sampling 50,000 images from VAR-d16 takes on the order of an hour on one A100 (not measured by
# us), training d16 takes days on 16 GPUs.

# %% tags=["setup"]
import glob
import json
import os
import shutil
import warnings

import numpy as np
import torch
from PIL import Image

warnings.filterwarnings("ignore", message="IProgress not found")

from minivar import data, official
from minivar.evaluation import fid, inception
from minivar.cli.main import main
from minivar.config import read_json
from minivar.teaching import resources
from minivar.training import TrainConfig

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine

# %%
CONFIGS = resources.path("configs/imagenet")  # the official recipes (section 2), found from any folder
WORK = resources.work_dir("notebook10")  # the miniature's files, in runs/ of this course folder (not committed)
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# %% [markdown]
# ## 1. The files you need
#
# minivar downloads nothing. Put the files anywhere and point these variables at them:
#
# | variable | file | where from |
# |---|---|---|
# | `IMAGENET_DIR` | ImageNet-1k `train/` and `val/` as `<wnid>/*.JPEG` folders | image-net.org |
# | `VAR_CKPT_DIR` | `vae_ch160v4096z32.pth`, `var_d16.pth` (… `var_d30.pth`) | huggingface.co/FoundationVision/var |
# | `MVAR_CKPT_DIR` | M-VAR `d16.pth` (… `d24.pth`) | the M-VAR release (huggingface.co/OliverRen/M-VAR) |
# | `FID_REF` | `VIRTUAL_imagenet256_labeled.npz` (10,000 reference images + statistics) | OpenAI's guided-diffusion evaluation batches |
# | `FID_INCEPTION` | `pt_inception-2015-12-05-6726825d.pth` (hash checked) | pytorch-fid's release |

# %%
FILES = {k: os.environ.get(k, "") for k in ("IMAGENET_DIR", "VAR_CKPT_DIR", "MVAR_CKPT_DIR", "FID_REF", "FID_INCEPTION")}
ON_GPU = torch.cuda.is_available()
have = {k: bool(v) and os.path.exists(v) for k, v in FILES.items()}
print("CUDA:", ON_GPU)
for k, ok in have.items():
    print(f"  {k:14s} {'found' if ok else 'not set / missing'}")
REAL = ON_GPU and all(have.values())
print("the real-file cells will", "run" if REAL else "be skipped; the miniature runs instead")

# %% [markdown]
# ## 2. The official recipes, as preset files
#
# `configs/imagenet/*.json` hold `TrainConfig` fields taken from the official training commands
# (VAR's README and `utils/arg_util.py`; M-VAR says it uses VAR's). The global batch is fixed;
# fewer GPUs accumulate more micro-batches, so the recipe does not change with the hardware.

# %%
N_TRAIN = 1_281_167
print(f"{'preset':10s} {'model':6s} {'depth':>5s} {'batch':>6s} {'epochs':>6s} {'steps':>8s} {'peak lr':>9s} "
      f"{'AdaLN γ':>8s} {'l2 attn':>7s} amp")
for path in sorted(glob.glob(f"{CONFIGS}/*.json")):
    c = TrainConfig.from_dict(read_json(path))
    epochs = c.steps / -(-N_TRAIN // c.batch_size)
    print(f"{os.path.basename(path)[:-5]:10s} {c.model.mixer:6s} {c.model.depth:5d} {c.batch_size:6d} {epochs:6.0f} {c.steps:8d} "
          f"{c.lr:9.2e} {c.model.init_adaln_gamma:8.0e} {str(c.model.attn_l2_norm):>7s} {c.amp}")

# %% [markdown]
# ## 3. Official checkpoints
#
# `minivar.official` reads the official files (key names, derived buffers, the schedule from the
# `lvl_1L` buffer) and checks every key strictly. Here a toy model in the official layout — the
# real 256 px schedule, tiny width — is written as the official code would store it and loaded
# back; on a GPU the same call loads `var_d16.pth`.

# %%
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.tokenizer import TokenizerConfig, VQVAE

vae = VQVAE(TokenizerConfig(image_size=32, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8,
                            vocab_size=64)).eval()  # 256 px schedule 1..16 on a 16x16 latent
toy = NextScaleTransformer(ModelConfig(mixer="var", depth=2, width=64, heads=2, num_classes=1000, vocab_size=64,
                                       z_channels=8, patch_nums=vae.patch_nums)).eval()
torch.save(official.model_state_dict_to_official(toy), f"{WORK}/var_toy.pth")
loaded = official.load_var(f"{WORK}/var_toy.pth", vae=vae)
print("schedule read from lvl_1L:", loaded.config.patch_nums, " L =", loaded.L)
with torch.no_grad():
    a = toy.generate(torch.tensor([1, 207]), cfg=1.5, top_k=1, seed=0, vae=vae, return_indices=True)[1]
    b = loaded.generate(torch.tensor([1, 207]), cfg=1.5, top_k=1, seed=0, return_indices=True)[1]
print("greedy samples identical after the round trip:", all(torch.equal(x, y) for x, y in zip(a, b)))

# %% [markdown]
# ## 4. Training, in miniature
#
# The real command (every node of a 2 × 8-GPU job; `--resume` continues after a stop):
#
# ```
# torchrun --nnodes 2 --nproc_per_node 8 --node_rank $NODE_RANK --master_addr $MASTER --master_port 29500 \
#     -m minivar train --config configs/imagenet/var_d16.json --tokenizer vae_ch160v4096z32.pth \
#     --data_path $IMAGENET_DIR/train --out /shared/runs/var_d16
# ```
#
# The first start encodes the training set once with the frozen tokenizer (VAR's centre crop);
# training then reads cached token indices. Below: the same path on an ImageFolder of generated
# pictures (3 classes, odd sizes to exercise the resize + centre crop), a tokenizer trained for a
# few steps, and the M-VAR-d16 preset shrunk to a toy by command-line overrides.

# %%
x, y = data.synthetic(n=60, size=24, num_classes=3, seed=1)
u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
for i, (im, c) in enumerate(zip(u8, y.tolist())):
    os.makedirs(f"{WORK}/train/n{c:08d}", exist_ok=True)
    Image.fromarray(im).resize((24 + 4 * (i % 3), 24)).save(f"{WORK}/train/n{c:08d}/img_{i:03d}.png")
print("ImageFolder:", sorted(os.listdir(f"{WORK}/train")), len(glob.glob(f"{WORK}/train/*/*.png")), "images")

# %%
# NBVAL_IGNORE_OUTPUT
main(["train-tokenizer", "--data", "imagefolder", "--data-path", f"{WORK}/train", "--preset", "tiny16",
      "--steps", "30", "--batch-size", "8", "--out", f"{WORK}/tok", "--quiet", "--overwrite"])
main(["train", "--out", f"{WORK}/run", "--config", f"{CONFIGS}/mvar_d16.json",
      "--tokenizer", f"{WORK}/tok/tokenizer.pt", "--data_path", f"{WORK}/train", "--num_classes", "0",
      "--depth", "2", "--width", "64", "--heads", "2", "--d_state", "8", "--mamba_headdim", "16",
      "--steps", "20", "--batch_size", "12", "--micro_batch", "6", "--log_every", "5", "--ckpt_every", "20",
      "--base_lr", "0.05"])  # the preset's 1e-4 x 12 / 256 would barely move a toy in 20 steps

# %%
recs = [json.loads(r) for r in open(f"{WORK}/run/metrics.jsonl")]
cfg = json.load(open(f"{WORK}/run/config.json"))["train"]
cfg = {**cfg, **cfg["model"]}  # the model's fields sit in their own object
print("kept from the preset:", {k: cfg[k] for k in ("lr_schedule", "init_adaln_gamma", "attn_l2_norm",
                                                    "mvar_gamma3_init", "amp", "weight_decay", "grad_clip")})
print("logged steps:", [r["step"] for r in recs], "| each record has img/s and ETA:",
      all("img_per_s" in r and "eta_s" in r for r in recs))
print("loss fell by more than 0.1:", recs[-1]["loss"] < recs[0]["loss"] - 0.1)

# %% [markdown]
# ## 5. Sampling: 50 per class, PNGs, one npz
#
# The FID protocol: 50 images of each of the 1000 classes (cfg 1.5, top-k 900, top-p 0.96),
# written as PNGs (`{class:04d}_{i:03d}.png`) and packed into an npz whose `arr_0` is uint8
# (N, 256, 256, 3). Under `torchrun` the ranks share the batches; a stopped run skips finished ones.

# %%
# NBVAL_IGNORE_OUTPUT
main(["sample", "--run", f"{WORK}/run", "--per-class", "4", "--cfg", "1.5", "--top-k", "900", "--top-p", "0.96",
      "--png-dir", f"{WORK}/samples", "--npz", f"{WORK}/samples.npz", "--batch-size", "6"])
main(["reconstruct", "--tokenizer", f"{WORK}/tok/tokenizer.pt", "--data-path", f"{WORK}/train",
      "--png-dir", f"{WORK}/rec", "--npz", f"{WORK}/rec.npz", "--orig-npz", f"{WORK}/orig.npz"])

# %%
with np.load(f"{WORK}/samples.npz") as z:
    print("samples.npz arr_0:", z["arr_0"].shape, z["arr_0"].dtype)
print("first files:", sorted(os.listdir(f"{WORK}/samples"))[:3])
print("settings recorded beside the npz:",
      {k: v for k, v in json.load(open(f"{WORK}/samples.json")).items() if k in ("N", "cfg", "top_k", "top_p", "seed")})

# %% [markdown]
# ## 6. FID, IS, precision / recall
#
# `minivar.evaluation.inception` is the FID Inception-v3 (pytorch-fid's port of the TensorFlow network) in
# plain PyTorch; `python -m minivar fid` feeds both npz files through it and computes the Fréchet
# distance of the 2048-d pool features (from eigenvalues), the Inception Score over 10 splits,
# and k = 3 precision / recall. Without the real weights we run the *same code* with a random
# network: the numbers mean nothing, the plumbing is checked. For the papers' numbers, also run
# OpenAI's evaluator on the same npz and never mix the two in one table.

# %%
torch.manual_seed(0)
net = inception.FIDInceptionV3().eval().requires_grad_(False)
inception.INPUT_SIDE = 139  # a smaller input for the miniature (299 for real)
r = fid.fid_report(f"{WORK}/samples.npz", f"{WORK}/orig.npz", "(random weights)", net=net, is_splits=2)
inception.INPUT_SIDE = 299
print("N samples:", r["N"], "| N reference images:", r["N_ref_images"])
print("FID finite:", np.isfinite(r["fid"]), "| IS >= 1:", r["inception_score"]["mean"] >= 1 - 1e-6,
      "| precision, recall in [0, 1]:", 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1)

# %%
if REAL:  # the real thing: 50,000 samples from the official VAR-d16, then FID against the ADM batch
    ck = FILES["VAR_CKPT_DIR"]
    main(["sample", "--official", f"{ck}/var_d16.pth", "--tokenizer", f"{ck}/vae_ch160v4096z32.pth",
          "--per-class", "50", "--cfg", "1.5", "--top-k", "900", "--top-p", "0.96", "--seed", "0",
          "--png-dir", "out/var_d16", "--npz", "out/var_d16.npz"])
    main(["fid", "--samples", "out/var_d16.npz", "--ref", FILES["FID_REF"], "--inception", FILES["FID_INCEPTION"],
          "--out", "out/var_d16_fid.json"])  # expected FID ~ 3.55 (paper)
else:
    print("skipped: needs CUDA, the official checkpoints, the reference npz and the Inception weights")

# %% [markdown]
# ## Exercise: fitting the recipe on your GPUs
#
# The d16 recipe uses a global batch of 768. Write `accumulation(global_batch, gpus, max_micro)`
# returning `(micro, accum)`: each GPU runs `accum` micro-batches of `micro` images per step,
# `micro * accum * gpus == global_batch`, with the largest `micro <= max_micro` (what fits in
# memory). Raise `ValueError` when the global batch does not split evenly over the GPUs.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb10-accumulation", "locked": false, "schema_version": 3, "solution": true}
def accumulation(global_batch, gpus, max_micro):
    ### BEGIN SOLUTION
    if global_batch % gpus:
        raise ValueError(f"{global_batch} images do not split over {gpus} GPUs")
    per_gpu = global_batch // gpus
    micro = max(m for m in range(1, max_micro + 1) if per_gpu % m == 0)
    return micro, per_gpu // micro
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb10-accumulation-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_accumulation

check_accumulation(accumulation)

# %%
print("8 GPUs, 48 images fit:", accumulation(768, 8, 48))

# %% [markdown]
# ## Summary
#
# * Files in, numbers out: checkpoints, ImageNet, the reference batch and the Inception weights
#   are supplied by you; every report records N, settings and file hashes.
# * The presets are the official recipes; the one known difference is that minivar encodes each
#   training image once (centre crop) where the official trainer re-crops every epoch.
# * GPU numbers appear in the README only where they were measured.
#
# **Read next:** 11 (zero-shot editing); the README section "Reproduce ImageNet-256".
