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
# # 03 · The VAR transformer
#
# **You will learn** how VAR's transformer (Tian et al. 2024, Sec. 3.2 and App.) predicts a whole
# token map at once from the coarser ones: the input sequence (start token + cumulative
# reconstructions), position and level embeddings, the AdaLN block that injects the class, the
# block-causal attention, and teacher-forced training with one cross-entropy over all L tokens.
# Each piece is recomputed by hand and compared with `minivar.models.transformer`; then a small VAR is
# trained on handwritten digits and samples a grid of digits.
#
# **This notebook needs** a CPU and about 2 minutes (40 s to train a tokenizer, 60 s for VAR).

# %% tags=["setup"]
import math
import time
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar import data, scales, viz
from minivar.models import ModelConfig, NextScaleTransformer, next_scale_loss
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
from minivar.training import TokenizerTrainConfig, train_tokenizer

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})

# %% [markdown]
# ## 1. Tokens to learn from
#
# The transformer never sees pixels. We train the tokenizer of notebook 02 (same recipe, 200
# steps), then encode the whole dataset **once**: the token indices are the targets and
# `vae.teacher_input` gives the inputs (the tokenizer is frozen from here on; encoding costs
# more than a training step on a CPU).

# %%
# NBVAL_IGNORE_OUTPUT
images, labels = data.digits(size=16)
(train_x, train_y), (val_x, val_y) = data.split(images, labels, val_fraction=0.1, seed=0)
torch.manual_seed(0)
vae = VQVAE(TOKENIZER_PRESETS["tiny16"])
t0 = time.time()
train_tokenizer(vae, train_x, TokenizerTrainConfig(steps=200, batch_size=32, lr=1e-3, warmup_steps=20,
                                                   reseed_every=50), progress=False)
vae.eval()
print(f"tokenizer trained in {time.time() - t0:.0f} s")

# %%
patch_nums = vae.patch_nums
L, offs = scales.num_tokens(patch_nums), scales.offsets(patch_nums)
with torch.no_grad():
    idx = [vae.encode(train_x[i:i + 256]) for i in range(0, len(train_x), 256)]
    idx = [torch.cat(per_scale) for per_scale in zip(*idx)]  # K tensors (N, pn^2)
    targets = torch.cat(idx, dim=1)                          # (N, L): what to predict
    inputs = vae.teacher_input(idx)                          # (N, L - 1, Cv): what to read
print("targets", tuple(targets.shape), "| teacher inputs", tuple(inputs.shape), "| labels", tuple(train_y.shape))

# %% [markdown]
# ## 2. A small VAR
#
# The papers' size rule is width = 64·depth, heads = depth; a depth-4 model (width 256) is still
# big for one CPU core, so we use depth 4 with width 128 and 4 heads. The vocabulary and latent
# width come from the tokenizer; class 10 is the "null" class used for classifier-free guidance.

# %%
torch.manual_seed(0)
cfg = ModelConfig(mixer="var", depth=4, width=128, heads=4, num_classes=10, vocab_size=256,
                  z_channels=16, patch_nums=patch_nums, drop_path=0.0, attn_backend="blocks")
model = NextScaleTransformer(cfg)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")
for name, child in model.named_children():
    print(f"  {name:11s} {type(child).__name__}")

# %% [markdown]
# ## 3. The input sequence
#
# Position 0 (the 1×1 scale) has nothing to read yet: it gets the **class embedding** plus a
# learned `pos_start` — the start-of-sequence token. Every later scale reads the teacher input
# through `word_embed`, a Linear(Cv → C). Every token then gets a learned absolute position and a
# learned **level embedding** (one per scale). Rebuilt by hand:

# %%
B = 4
lab, x_in = train_y[:B], inputs[:B]
with torch.no_grad():
    cond = model.class_emb(lab)                                           # (B, C)
    sos = cond[:, None] + model.pos_start                                 # (B, 1, C)
    seq = torch.cat([sos, model.word_embed(x_in)], dim=1)                 # (B, L, C)
    level = model.lvl_embed(scales.scale_ids(patch_nums))                 # (L, C)
    seq = seq + model.pos_1LC + level
    ref = torch.cat((model.sos(cond), model.word_embed(x_in)), 1) + model.lvl_pos()
print("input sequence", tuple(seq.shape), "== model's:", torch.allclose(seq, ref))

# %% [markdown]
# ## 4. The AdaLN block
#
# The class enters every block through *adaptive layer norm* (as in DiT): a Linear on
# SiLU(class embedding) produces six vectors per block — two gates γ, two scales, two shifts —
# and
#
# ```
# x = x + γ1 · Attn( LN(x) · (1 + scale1) + shift1 )
# x = x + γ2 · FFN ( LN(x) · (1 + scale2) + shift2 )
# ```
#
# (LN without learned affine, eps 1e-6; FFN = Linear → GELU(tanh) → Linear, 4× wide). Note the
# order of the chunks in the official checkpoints: γ1, γ2, scale1, scale2, shift1, shift2.

# %%
blk = model.blocks[0]
with torch.no_grad():
    g1, g2, s1, s2, b1, b2 = blk.ada_lin(cond).view(B, 1, 6, -1).unbind(2)
    ### BEGIN DERIVATION (exercise 1 asks for it; the student copy runs the #> line instead)
    mod = lambda x, s, b: F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + s) + b  # noqa: E731
    ### END DERIVATION
    #> mod = lambda x, s, b: blk.sublayer(x, lambda h: h, (torch.ones_like(s), s, b)) - x  # exercise 1
    h = seq + g1 * blk.attn(mod(seq, s1, b1))
    h = h + g2 * blk.ffn(mod(h, s2, b2))
    print("hand-made block == VARBlock.forward:", torch.allclose(h, blk(seq, cond), atol=1e-6))

# %% [markdown]
# ## 5. Block-causal attention
#
# Inside `blk.attn`: q, k, v per head (VAR normalises q and k and multiplies q by a learned
# per-head temperature — "cosine attention", softmax scale 1), then the mask of notebook 01: a
# token of scale k sees every token of scales ≤ k. By hand with an explicit (L, L) mask:

# %%
att = blk.attn
with torch.no_grad():
    u = mod(seq, s1, b1)
    q, k, v = att.qkv(u)                                            # each (B, heads, L, c)
    scores = (q @ k.transpose(-1, -2)) * att.scale
    scores = scores.masked_fill(~scales.block_causal_mask(patch_nums), float("-inf"))
    o = scores.softmax(-1) @ v
    o = att.proj(o.transpose(1, 2).reshape(B, L, -1))
print("hand-made masked attention == SelfAttention:", torch.allclose(o, att(u), atol=1e-5))

# %% [markdown]
# The mask is what makes the model autoregressive over scales. Rather than trust it, measure it:
# for every output position i, how strongly do its logits depend on every teacher-input position
# j (the norm of a gradient, `viz.influence`)? Input position j is the input of token j + 1, which
# was built from the scales *before* that token's. A blank entry means no dependence at all.

# %%
model.eval()
infl = viz.influence(model, lab, x_in)  # (L, L-1)
viz.show_influence({"VAR: block-causal attention": infl}, patch_nums)
sid = scales.scale_ids(patch_nums)
finer = sid[1:][None, :] > sid[:, None]  # input j belongs to a finer scale than output i
zero = infl <= infl.max() * 1e-9
print("no output depends on the input of a finer scale:", bool(zero[finer].all()))
print("every output depends on every input of its own and coarser scales:", bool((~zero[~finer]).all()))

# %% [markdown]
# ## 6. Teacher forcing and the loss
#
# One forward pass predicts **all L tokens** at once: logits (B, L, V). Because the inputs are
# the *true* cumulative reconstructions (teacher forcing), every scale can be trained in
# parallel; the loss is plain cross-entropy over the L tokens with weight 1/L. At
# initialisation the model is close to uniform over V = 256 codes, so the loss starts near
# ln 256 ≈ 5.55.

# %%
with torch.no_grad():
    out = next_scale_loss(model(lab, x_in), targets[:B], patch_nums)
print(f"initial loss {out['loss'].item():.1f}, ln 256 = {math.log(256):.1f}")

# %% [markdown]
# ## 7. Training on digits
#
# VAR's recipe, scaled down: AdamW (β = 0.9, 0.95, weight decay 0.05), a short warm-up, gradient
# clipping at 2, labels dropped to the null class 10% of the time (that is what makes
# classifier-free guidance possible later). 400 steps of 32 digits — about a minute.
# The loop is written out here once; later notebooks call `minivar.training.fit`, which runs the
# same recipe in one line.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
steps, batch, lr = 400, 32, 2e-3
opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * (1 - s / steps))
g = torch.Generator().manual_seed(0)
model.train()
log, t0 = [], time.time()
for step in range(steps):
    rows = torch.randint(len(targets), (batch,), generator=g)
    out = next_scale_loss(model(train_y[rows], inputs[rows]), targets[rows], patch_nums)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
    opt.step()
    sched.step()
    log.append(out["loss"].item())
    if (step + 1) % 100 == 0:
        print(f"step {step + 1}  loss {sum(log[-100:]) / 100:.3f}  token accuracy {out['acc']:.2f}  "
              f"per scale {[round(a, 2) for a in out['scale_acc']]}")
model.eval()
print(f"trained in {time.time() - t0:.0f} s")

# %%
smooth = torch.tensor(log).unfold(0, 20, 20).mean(1)
plt.figure(figsize=(5, 2.4))
plt.plot(torch.arange(len(smooth)) * 20 + 10, smooth)
plt.xlabel("step"), plt.ylabel("cross-entropy")
plt.title("VAR on digits: training loss", fontsize=9)
plt.show()
print("loss fell below 3.5:", smooth[-1].item() < 3.5)

# %% [markdown]
# Per-scale loss on held-out digits tells where the difficulty is: the 1×1 scale has few
# plausible codes, the 4×4 scale carries the strokes (and, at this size, the most uncertainty).

# %%
with torch.no_grad():
    v_idx = vae.encode(val_x)
    val = next_scale_loss(model(val_y, vae.teacher_input(v_idx)), torch.cat(v_idx, 1), patch_nums)
plt.figure(figsize=(4, 2.2))
plt.bar(range(len(patch_nums)), val["scale_loss"])
plt.xticks(range(len(patch_nums)), [f"{p}×{p}" for p in patch_nums])
plt.title("held-out cross-entropy per scale", fontsize=9)
plt.show()

# %% [markdown]
# ## 8. Samples
#
# Sampling runs the same model K = 4 times, one scale per step, feeding back its own tokens
# (notebook 04 takes this apart: KV cache, guidance, top-k / top-p). One row per class, 0 to 9:

# %%
torch.manual_seed(0)
classes = torch.arange(10).repeat_interleave(6)
samples = model.generate(classes, cfg=2.0, top_k=20, top_p=0.9, seed=0, vae=vae)  # in [0, 1]
pic = viz.grid([(samples[c::6] * 2 - 1) for c in range(6)], upscale=2)
plt.figure(figsize=(3.2, 5))
plt.imshow(pic)
plt.axis("off")
plt.title("VAR samples, classes 0-9 (rows)", fontsize=9)
plt.show()

# %% [markdown]
# ## 9. Exercises
#
# Write AdaLN's modulation: `my_adaln_modulate(x, scale, shift)` returns
# LayerNorm(x)·(1 + scale) + shift, with a layer norm over the last dim, no learned affine,
# eps = 1e-6. x is (B, L, C); scale and shift are (B, 1, C).

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb03-adaln-modulate", "locked": false, "schema_version": 3, "solution": true}
def my_adaln_modulate(x, scale, shift):
    ### BEGIN SOLUTION
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale) + shift
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb03-adaln-modulate-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_adaln_modulate

check_adaln_modulate(my_adaln_modulate)

# %% [markdown]
# **Exercise 2: the per-scale loss and accuracy.** `my_scale_loss_acc(logits, targets, patch_nums)`
# returns `(loss_K, acc_K)`, two float32 tensors of shape (K,): for each scale, the mean
# cross-entropy and the accuracy (the fraction of tokens whose argmax is the target) over the
# batch and the scale's pn² tokens — the per-scale curves the trainer logs. `next_scale_loss` and
# `loss_stats` are off limits.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb03-scale-loss-acc", "locked": false, "schema_version": 3, "solution": true}
def my_scale_loss_acc(logits, targets, patch_nums):
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb03-scale-loss-acc-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_scale_loss_acc

check_scale_loss_acc(my_scale_loss_acc)

# %% [markdown]
# ## Summary
#
# * The input is [class embedding + pos_start, word_embed(teacher input)] + position + level
#   embeddings; the teacher input is the cumulative reconstruction (notebook 02).
# * Each block: AdaLN-modulated attention and FFN, gated by γ; six vectors per block from the
#   class embedding.
# * Block-causal attention: changing scale 3's input leaves the logits of scales 0–2 untouched.
# * Teacher forcing trains all scales in one pass with cross-entropy over L tokens; 10% label
#   dropout prepares classifier-free guidance.
#
# **Read next:** `04_sampling.ipynb` — how the trained model generates: KV cache, why training
# and sampling differ, the CFG ramp, top-k / top-p.
