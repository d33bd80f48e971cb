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
# # 04 · Sampling: KV cache, guidance, top-k / top-p
#
# **You will learn** how a trained VAR generates an image in K steps (Tian et al. 2024, Sec. 3.2
# and Fig. 4): why sampling differs from teacher-forced training, how a KV cache makes each step
# process only the new scale's tokens, how classifier-free guidance (CFG) is ramped over the
# scales, and what top-k and top-p sampling cut away. You will write a sampler by hand twice
# (without and with a cache) and check both against `minivar.sample.generate`.
#
# **This notebook needs** a CPU and about a minute. It samples from the committed demo VAR
# (`weights/digits16`: depth 6, width 96, trained on digits like the VAR of notebook 03, longer).

# %% tags=["setup"]
import time
import warnings

import matplotlib.pyplot as plt
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a notebook without ipywidgets

from minivar import data, sample, scales, viz
from minivar.teaching import tutorial

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
plt.rcParams.update({"figure.dpi": 72, "image.interpolation": "nearest"})


show = viz.show  # columns of image batches in [0, 1] as one picture

# %% [markdown]
# ## 0. A trained VAR
#
# The demo weights of notebook 00: the tokenizer and the VAR, trained with the recipe of notebooks
# 02 and 03 (training is their lesson; here we only sample).

# %%
vae, model, _ = tutorial.demo_models()  # tokenizer, VAR (depth 6, width 96), M-VAR (unused here)
patch_nums = vae.patch_nums
K, L, offs = len(patch_nums), scales.num_tokens(patch_nums), scales.offsets(patch_nums)
print(f"VAR: depth {model.config.depth}, width {model.config.width}, {sum(p.numel() for p in model.parameters()):,} "
      f"parameters; K = {K} scales, L = {L} tokens")

# %% [markdown]
# ## 1. Training and sampling are different computations
#
# In training, the input of scale k+1 is the *true* cumulative reconstruction of the data
# (teacher forcing), so all scales are computed in one pass. In sampling there is no data: the
# model must pick scale k's tokens, add them into f_hat, build scale k+1's input from **its own**
# choices, and only then run again — K passes, one per scale.
#
# The simplest correct sampler re-runs the *full* teacher-forced forward at every step, with
# zeros where later scales' inputs will go: thanks to the block-causal mask, scale k's logits
# never look at them. Greedy (argmax) and no guidance, so it is deterministic:

# %%
@torch.no_grad()
def sample_no_cache(labels):
    B = len(labels)
    x_in = torch.zeros(B, L - 1, vae.config.z_channels)   # teacher input, filled in as we go
    f_hat, out = vae.empty_fhat(B), []
    for k in range(K):
        logits = model(labels, x_in)[:, offs[k]:offs[k + 1]]  # a full pass; keep scale k only
        idx_k = logits.argmax(-1)
        out.append(idx_k)
        f_hat, nxt = vae.next_input(f_hat, k, idx_k)          # add scale k into f_hat
        if nxt is not None:                                    # input of scale k+1, (B, pn², Cv)
            x_in[:, offs[k + 1] - 1:offs[k + 2] - 1] = nxt
    return out


classes = torch.arange(10)
ours = sample_no_cache(classes)
_, ref = model.generate(classes, cfg=0, top_k=1, return_indices=True, vae=vae)
print("hand-made sampler == minivar.sample.generate:", all(torch.equal(a, b) for a, b in zip(ours, ref)))

# %% [markdown]
# ## 2. The KV cache
#
# That sampler wastes work: at step k it recomputes every earlier token in every block, K·L token
# computations in all. But in a block-causal model the keys and values of scales < k do not change
# once computed. So each block keeps them (the **KV cache**), and step k feeds only scale k's
# tokens: the queries are the new tokens, the keys/values are the cache plus the new ones. Each
# token is computed exactly once — L in all. By hand:

# %%
@torch.no_grad()
def sample_with_cache(labels, verbose=False):
    B = len(labels)
    cond = model.class_emb(labels)
    lvl_pos = model.lvl_pos()
    x = model.sos(cond) + lvl_pos[:, :offs[1]]          # scale 0's input: the start token
    states = [blk.new_state() for blk in model.blocks]  # one KVCache per block (.kv)
    f_hat, out = vae.empty_fhat(B), []
    for k in range(K):
        for blk, state in zip(model.blocks, states):
            x = blk(x, cond, state)                      # attends to cached keys + its own
        idx_k = model.logits(x, cond).argmax(-1)
        out.append(idx_k)
        if verbose:
            print(f"step {k}: fed {x.shape[1]:2d} tokens, block 0 caches keys of shape {tuple(states[0].kv.k.shape)}")
        f_hat, nxt = vae.next_input(f_hat, k, idx_k)
        if nxt is not None:
            x = model.word_embed(nxt) + lvl_pos[:, offs[k + 1]:offs[k + 2]]
    return out


cached = sample_with_cache(classes, verbose=True)
print("cached sampler == no-cache sampler:", all(torch.equal(a, b) for a, b in zip(cached, ours)))

# %% [markdown]
# Token computations per block, per image:

# %%
for name, pns in [("16px", patch_nums), ("256", scales.PRESETS["256"])]:
    o = scales.offsets(pns)
    print(f"{name:>5}: KV cache {o[-1]:5d} | re-run the prefix {sum(o[1:]):5d} | full pass per step {len(pns) * o[-1]:5d}")

# %%
# NBVAL_IGNORE_OUTPUT
many = torch.arange(10).repeat(4)
for name, fn in [("no cache", lambda: sample_no_cache(many)), ("KV cache", lambda: sample_with_cache(many))]:
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    print(f"{name}: {(time.perf_counter() - t0) / 3 * 1000:.0f} ms for 40 images")

# %% [markdown]
# **Predict, then check.** Before reading section 3: VAR does not guide every scale equally.
# With guidance strength cfg = 2.0 and K = 4 scales, what guidance weight t do you expect at the
# first scale and at the last? Write your guess as a tuple `(t_first, t_last)`, then read on.

# %% tags=["solution", "prediction"] nbgrader={"grade": false, "grade_id": "nb04-predict-cfg-ramp", "locked": false, "schema_version": 3, "solution": true}
my_cfg_prediction = ...  # (t at the first scale, t at the last scale)
### BEGIN SOLUTION
my_cfg_prediction = (0.0, 2.0)
### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb04-predict-cfg-ramp-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_predict_cfg_ramp

check_predict_cfg_ramp(my_cfg_prediction)

# %% [markdown]
# ## 3. Classifier-free guidance, ramped over scales
#
# Training dropped the label 10% of the time, so the same model also predicts *unconditionally*
# (class 10 = null). CFG runs both and pushes the logits away from the unconditional ones:
# logits = (1 + t)·cond − t·uncond. VAR ramps t linearly over the scales, t_k = cfg·k/(K−1):
# the coarse layout is sampled almost without guidance (diversity), the fine scales with full
# guidance (fidelity). `generate` doubles the batch to get both in one pass.

# %%
fig, ax = plt.subplots(figsize=(4.5, 2.2))
for KK in (4, 10):
    ax.plot(range(KK), [1.5 * k / (KK - 1) for k in range(KK)], "o-", label=f"K = {KK}")
ax.set_xlabel("scale k"), ax.set_ylabel("guidance t_k")
ax.set_title("CFG ramp, cfg = 1.5", fontsize=9)
ax.legend(fontsize=8)
plt.show()

trace = []
sample.generate(model, vae, classes, cfg=3.0, top_k=20, top_p=0.9, seed=0, trace=trace)
for k, tr in enumerate(trace):
    t = 3.0 * k / (K - 1)
    ok = torch.allclose(tr["guided"], (1 + t) * tr["cond"] - t * tr["uncond"])
    print(f"scale {k}: t = {t:.1f}, guided == (1 + t) cond - t uncond: {ok}")

# %% [markdown]
# What guidance does to the pictures: the same random seed, one digit per class (rows), with
# cfg = 0, 1, 3 and 6 (columns). Stronger guidance gives more typical, bolder digits and less
# variety.

# %%
cols = [model.generate(classes, cfg=c, top_k=20, top_p=0.9, seed=1, vae=vae) for c in (0.0, 1.0, 3.0, 6.0)]
show(cols, "cfg 0 | 1 | 3 | 6", upscale=3, height=6)

# %% [markdown]
# **Watching one generation.** The K steps of `generate` for eight digits, one frame per scale:
# the token map just sampled (one colour per codebook index), the picture decoded from all
# scales so far (f̂ after step k), and the guidance weight t_k used at that step. Press play:
# the layout is settled at 1×1 and 2×2, with almost no guidance; the last scales add strokes.

# %%
# NBVAL_IGNORE_OUTPUT
from IPython.display import HTML

steps = viz.generation_steps(model, vae, torch.arange(8), cfg=1.5, seed=3, top_k=0, top_p=0.0)
HTML(viz.animate_generation(steps, vae.config.vocab_size))

# %% [markdown]
# ## 4. Top-k and top-p
#
# Sampling from the full softmax lets rare, bad codes through. **Top-k** keeps the k most likely
# codes; **top-p** (nucleus) keeps the smallest set of most likely codes whose probability
# reaches p. Here is one token's distribution (the most uncertain token of the first image's
# last scale, conditional logits), sorted, with both cuts:

# %%
cond = trace[-1]["cond"][0]                             # (16 tokens, V) of the last scale
entropy = -(cond.softmax(-1) * cond.log_softmax(-1)).sum(-1)
logits = cond[entropy.argmax()]                         # one token: (V,)
probs = logits.softmax(-1).sort(descending=True).values
vals, cand = sample.top_k_top_p_candidates(logits[None], top_k=20, top_p=0.9)
kept = int(torch.isfinite(vals).sum())
plt.figure(figsize=(6, 2.2))
plt.bar(range(40), probs[:40], color=["tab:blue" if i < kept else "tab:gray" for i in range(40)])
plt.axvline(19.5, color="k", ls=":", label="top-k = 20")
plt.title(f"40 most likely of 256 codes; blue: kept by top-k 20 then top-p 0.9 ({kept} codes)", fontsize=9)
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# Greedy decoding (top-k = 1) gives one image per class — no variety at all; unfiltered sampling
# gives variety and some broken strokes; top-k/top-p sits between. Eight samples of the digit 3:

# %%
threes = torch.full((8,), 3)
settings = [("greedy", dict(top_k=1)), ("top-k 20, top-p 0.9", dict(top_k=20, top_p=0.9)),
            ("no filter", dict(top_k=0, top_p=0.0))]
cols = []
for name, kw in settings:
    imgs, idx = model.generate(threes, cfg=1.5, seed=2, return_indices=True, vae=vae, **kw)
    cols.append(imgs)
    distinct = len({tuple(torch.cat(idx, 1)[i].tolist()) for i in range(8)})
    print(f"{name:>20}: {distinct} distinct token maps out of 8")
show(cols, "greedy | top-k/p | none", height=4)

# %% [markdown]
# ## 5. Exercises
#
# **Exercise 1.** `my_cfg_mix(cond, uncond, cfg, k, K)` returns the guided logits of scale k out
# of K with VAR's linear ramp.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb04-cfg-mix", "locked": false, "schema_version": 3, "solution": true}
def my_cfg_mix(cond, uncond, cfg, k, K):
    ### BEGIN SOLUTION
    t = cfg * k / (K - 1)
    return (1 + t) * cond - t * uncond
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb04-cfg-mix-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_cfg_mix, check_top_p_keep

check_cfg_mix(my_cfg_mix)


# %% [markdown]
# **Exercise 2.** `my_top_p_keep(probs, top_p)` takes a probability vector (V,) and returns a
# `torch.bool` mask (V,) of the tokens that top-p keeps: sort by probability and keep a token when the
# total probability of the tokens *more likely than it* is still below top_p (so the most likely
# token is always kept).

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb04-top-p-keep", "locked": false, "schema_version": 3, "solution": true}
def my_top_p_keep(probs, top_p):
    ### BEGIN SOLUTION
    vals, order = probs.sort(descending=True)
    keep_sorted = (vals.cumsum(0) - vals) < top_p
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb04-top-p-keep-check", "locked": true, "points": 2, "schema_version": 3, "solution": false}
check_top_p_keep(my_top_p_keep)

# %% [markdown]
# **Exercise 3: one KV-cached step.** While sampling, VAR feeds one scale at a time and keeps the
# keys and values of the earlier scales. `my_cached_attention(q, k, v, cache_k, cache_v)` gets the
# new scale's q, k, v (B, H, n, D) and the cache (B, H, l, D) (l = 0 at the first scale): append
# the new keys and values to the cache, let the new queries attend to all of them
# (softmax(q kᵀ / √D) v), and return `(out, new_cache_k, new_cache_v)`. The checker feeds your
# own caches forward scale by scale and compares every step with the uncached block-causal
# attention over the whole sequence.

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb04-cached-attention", "locked": false, "schema_version": 3, "solution": true}
def my_cached_attention(q, k, v, cache_k, cache_v):
    ### BEGIN SOLUTION
    keys = torch.cat((cache_k, k), dim=2)  # the earlier scales, then this one
    values = torch.cat((cache_v, v), dim=2)
    weights = (q @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
    return weights @ values, keys, values
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb04-cached-attention-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_cached_attention

check_cached_attention(my_cached_attention)

# %% [markdown]
# ## Summary
#
# * Training is one teacher-forced pass; sampling is K passes, each fed with the model's own
#   choices (through f_hat).
# * Block-causal attention makes a KV cache exact: each step feeds only the new scale's tokens,
#   L token computations instead of K·L (680 vs 6,800 at 256 px).
# * CFG mixes conditional and unconditional logits, (1 + t)·cond − t·uncond, with t ramped from 0
#   at the first scale to cfg at the last.
# * Top-k / top-p trade diversity for clean samples; greedy has no diversity at all.
#
# **Read next:** `05_mamba_from_scratch.ipynb` — the state space layer M-VAR adds, then
# `06_mvar.ipynb`.
