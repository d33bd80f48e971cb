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
# # 05 · Mamba from scratch
#
# **You will learn** the state space layer that M-VAR (Ren et al., arXiv 2411.10433, Sec. 3.3)
# uses to carry information from coarse to fine scales: Mamba-2's selective scan (Dao & Gu,
# *Transformers are SSMs*, ICML 2024). You will write the scan three ways — a per-token loop, a
# lower-triangular matrix that looks like attention, and the chunked "SSD" algorithm that mixes
# the two — check that all three agree with `minivar.models.mamba2`, and then see why the recurrent form
# makes sampling cheap: a state you can carry from one call to the next.
#
# **This notebook needs** a CPU and about 20 seconds. No training.

# %% tags=["setup"]
import time

import matplotlib.pyplot as plt
import torch

from minivar.models import mamba2
from minivar import scales

torch.manual_seed(0)
torch.set_num_threads(1)  # one thread: the same numbers on every machine
torch.set_default_dtype(torch.float64)  # float64 for the equality checks (the layer runs in fp32)
plt.rcParams.update({"figure.dpi": 72})

# %% [markdown]
# ## 1. The recurrence
#
# Mamba-2's state space model, per head (Mamba-2 paper, Sec. 3 and eq. (2)), with a state h of
# size P × N (P channels of x, N state dimensions):
#
# $$h_t = e^{\Delta_t A}\, h_{t-1} + \Delta_t\, x_t B_t^\top, \qquad y_t = h_t\, C_t$$
#
# * A < 0 is one scalar per head: $e^{\Delta_t A}\in(0,1)$ is how much of the state survives a step;
# * $\Delta_t > 0$ (dt) is computed from the input, so the model decides per token how much to
#   forget and how much to write — this input dependence is what "selective" means;
# * $B_t$ (what to write) and $C_t$ (what to read) also come from the input, like keys and queries.
#
# Here it is as a loop, on tensors shaped like the package's: x (batch, L, heads, P),
# dt (batch, L, heads), A (heads), B and C (batch, L, groups, N) — one group shared by all heads.

# %%
Bsz, L, H, P, N = 2, 30, 3, 4, 5
x = torch.randn(Bsz, L, H, P)
dt = torch.nn.functional.softplus(torch.randn(Bsz, L, H) - 1)  # > 0
A = -torch.rand(H) - 0.5                                        # < 0
Bm, Cm = torch.randn(Bsz, L, 1, N), torch.randn(Bsz, L, 1, N)


def scan_loop(x, dt, A, B, C):
    ### BEGIN DERIVATION (exercise 1 writes one step of this loop; the student copy runs the #> line)
    h = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1])  # (batch, H, P, N)
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]               # (batch, H, 1, 1)
        write = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]   # dt x B^T: (batch, H, P, N)
        h = decay * h + write
        ys.append((h @ C[:, t, :, :, None]).squeeze(-1))               # h C: (batch, H, P)
    return torch.stack(ys, 1), h
    ### END DERIVATION
    #> return mamba2.ssd_sequential(x, dt, A, B, C)  # exercise 1 writes one step of this loop


y_loop, h_loop = scan_loop(x, dt, A, Bm, Cm)
y_ref, h_ref = mamba2.ssd_sequential(x, dt, A, Bm, Cm)
print("y:", tuple(y_loop.shape), " final state:", tuple(h_loop.shape))
print("loop == mamba2.ssd_sequential:", torch.allclose(y_loop, y_ref), torch.allclose(h_loop, h_ref))

# %% [markdown]
# ### Seeing selectivity
#
# One head, one channel, one state dimension, B = C = 1: h is a leaky running sum of the input,
# and dt is the knob. Below, the same input (a pulse at t = 5 and one at t = 25) goes through
# three dt schedules: small dt barely writes and barely forgets; large dt writes strongly and
# forgets fast; a dt that is large only at t = 5 *selects* the first pulse and keeps it.

# %%
T = 40
u = torch.zeros(T)
u[5], u[25] = 1.0, 1.0
schedules = {"dt = 0.1": torch.full((T,), 0.1), "dt = 1.0": torch.full((T,), 1.0),
             "dt = 3 at t=5, else 0.02": torch.where(torch.arange(T) == 5, 3.0, 0.02)}
plt.figure(figsize=(8, 2.4))
for name, d in schedules.items():
    y, _ = scan_loop(u.view(1, T, 1, 1), d.view(1, T, 1), torch.tensor([-1.0]),
                     torch.ones(1, T, 1, 1), torch.ones(1, T, 1, 1))
    plt.plot(y.flatten(), label=name)
plt.stem([5, 25], [1, 1], linefmt="k:", markerfmt="k.", basefmt=" ", label="input")
plt.legend(fontsize=8)
plt.xlabel("t")
plt.title("state h_t of a one-dimensional selective SSM (A = -1)", fontsize=9)
plt.show()

# %% [markdown]
# **Predict, then check.** With A = −1 and a step Δ = ln 2, what fraction of the state h survives
# one step (with no new input)? Write the number, then check.

# %% tags=["solution", "prediction"] nbgrader={"grade": false, "grade_id": "nb05-predict-decay", "locked": false, "schema_version": 3, "solution": true}
my_decay_prediction = ...  # a number between 0 and 1
### BEGIN SOLUTION
my_decay_prediction = 0.5
### END SOLUTION

# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb05-predict-decay-check", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_predict_decay

check_predict_decay(my_decay_prediction)

# %% [markdown]
# ## 2. The same thing as a matrix (the "duality")
#
# Unroll the recurrence: $y_t = \sum_{s \le t} (C_t \cdot B_s)\; e^{A \sum_{r=s+1}^{t} \Delta_r}\;
# \Delta_s\, x_s$. So y = M x with a **lower-triangular** L × L matrix per head,
#
# $$M_{ts} = (C_t \cdot B_s)\; \exp\big(a_t^{cum} - a_s^{cum}\big)\; \Delta_s, \quad s \le t,
# \qquad a^{cum}_t = \sum_{r \le t} \Delta_r A,$$
#
# which is attention with "scores" $C_t\cdot B_s$ and a causal, decaying mask instead of a softmax
# (Mamba-2 paper, Sec. 4: state space *duality*). Quadratic in L, but all matrix products.

# %%
def scan_matrix(x, dt, A, B, C):
    a_cum = torch.cumsum(dt * A, dim=1)                                     # (batch, L, H)
    decay = torch.exp(a_cum[:, :, None, :] - a_cum[:, None, :, :])          # (batch, t, s, H)
    causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).tril()
    decay = decay.masked_fill(~causal[None, :, :, None], 0.0)
    CB = torch.einsum("btn,bsn->bts", C[:, :, 0], B[:, :, 0])                # one group
    M = CB[..., None] * decay * dt[:, None, :, :]                          # (batch, t, s, H)
    return torch.einsum("btsh,bshp->bthp", M, x), M


y_mat, M = scan_matrix(x, dt, A, Bm, Cm)
print("matrix form == loop:", torch.allclose(y_mat, y_loop))

plt.figure(figsize=(3, 3))
plt.imshow(M[0, :, :, 0].abs().log10().clamp(min=-4), cmap="viridis")
plt.title("log10 |M| of head 0 (30 tokens)", fontsize=9)
plt.xlabel("s (source)"), plt.ylabel("t (target)")
plt.show()

# %% [markdown]
# ## 3. Chunks: the best of both (SSD)
#
# The loop does L small sequential steps; the matrix does L² work. The chunked algorithm
# (Mamba-2 paper, Sec. 6 and its Listing 1) cuts the sequence into chunks of Q tokens, uses the
# matrix form **inside** each chunk, and passes the state **between** chunks with the recurrence:
#
# 1. inside chunk c: y = M_c x_c, with h = 0 at the chunk start;
# 2. the state a chunk leaves behind: h_c = decay(whole chunk) · h_{c−1} + Σ_s decay(s → end) Δ_s x_s B_sᵀ;
# 3. add the contribution of the incoming state: y_t += decay(start → t) · h_{c−1} C_t.
#
# Written plainly, chunk by chunk:

# %%
def scan_chunked(x, dt, A, B, C, Q):
    h = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1])
    ys = []
    for c0 in range(0, x.shape[1], Q):
        xs, ds, Bs, Cs = (t[:, c0:c0 + Q] for t in (x, dt, B, C))
        y_in, _ = scan_matrix(xs, ds, A, Bs, Cs)                                   # 1
        a_cum = torch.cumsum(ds * A, dim=1)                                        # (batch, Q, H)
        y_state = torch.einsum("bhpn,btn->bthp", h, Cs[:, :, 0]) * torch.exp(a_cum)[..., None]   # 3
        to_end = torch.exp(a_cum[:, -1:] - a_cum)                                   # decay s -> chunk end
        h = torch.exp(a_cum[:, -1])[..., None, None] * h + torch.einsum(
            "bsh,bshp,bsn->bhpn", to_end * ds, xs, Bs[:, :, 0])                      # 2
        ys.append(y_in + y_state)
    return torch.cat(ys, 1), h


for Q in (1, 4, 7, 30):
    y_c, h_c = scan_chunked(x, dt, A, Bm, Cm, Q)
    y_pkg, h_pkg = mamba2.ssd_chunked(x, dt, A, Bm, Cm, chunk_size=Q)
    print(f"Q = {Q:2d}: ours == loop {torch.allclose(y_c, y_loop) and torch.allclose(h_c, h_loop)}, "
          f"mamba2.ssd_chunked == loop {torch.allclose(y_pkg, y_loop) and torch.allclose(h_pkg, h_loop)}")

# %% [markdown]
# Why bother? On a CPU the loop pays Python overhead per token and the matrix pays L² memory;
# chunks of a few dozen tokens are fastest. Timing one sequence of M-VAR's length at 256 px
# (L = 680 tokens, in float32):

# %%
# NBVAL_IGNORE_OUTPUT
L2 = scales.num_tokens(scales.PRESETS["256"])
args = (torch.randn(4, L2, 8, 32), torch.rand(4, L2, 8) * 0.1, -torch.rand(8) - 0.5,
        torch.randn(4, L2, 1, 16), torch.randn(4, L2, 1, 16))
args = tuple(a.float() for a in args)
for name, fn in [("sequential", lambda: mamba2.ssd_sequential(*args)),
                 ("chunked Q=64", lambda: mamba2.ssd_chunked(*args, chunk_size=64)),
                 ("one chunk (matrix)", lambda: mamba2.ssd_chunked(*args, chunk_size=L2))]:
    fn()
    t0 = time.perf_counter()
    for _ in range(3):
        fn()
    print(f"{name:>20s}: {(time.perf_counter() - t0) / 3 * 1000:6.1f} ms")

# %% [markdown]
# ## 4. The whole layer, and the recurrent step
#
# A Mamba2 layer wraps the scan (parameter names as in `mamba_ssm`):
#
# ```
# u --in_proj--> [z | xBC | dt];  xBC --causal depthwise conv (width 4) + SiLU--> [x | B | C]
# dt = softplus(dt + dt_bias);  A = -exp(A_log);  y = scan(x, dt, A, B, C) + D x
# out = out_proj(RMSNorm(y * silu(z)))
# ```
#
# Everything before the scan looks at most 3 tokens back (the conv), and the scan only needs
# h_{t−1}. So a **cache** of (the last 3 conv inputs, the state h) lets us feed a sequence in
# pieces — one scale at a time, as M-VAR's sampler does — and get exactly the outputs of one
# call on the whole sequence. Below: whole, scale by scale for the schedule (1, 2, 3, 4), and
# token by token with `step`.

# %%
torch.set_default_dtype(torch.float32)
torch.manual_seed(0)
layer = mamba2.Mamba2(d_model=32, d_state=8, headdim=16, chunk_size=8).eval()
pns = scales.PRESETS["16px"]
offs = scales.offsets(pns)
u = torch.randn(2, offs[-1], 32)

with torch.no_grad():
    whole = layer(u)
    cache = layer.allocate_cache(2)
    by_scale = torch.cat([layer(u[:, b:e], cache=cache) for b, e in zip(offs[:-1], offs[1:])], 1)
    cache = layer.allocate_cache(2)
    by_token = torch.stack([layer.step(u[:, t], cache) for t in range(offs[-1])], 1)
print("whole sequence:", tuple(whole.shape))
print("scale by scale (cached) == whole:", torch.allclose(by_scale, whole, atol=1e-5))
print("token by token (step)   == whole:", torch.allclose(by_token, whole, atol=1e-5))
print("cache holds: conv_state", tuple(cache.conv_state.shape), "ssm_state", tuple(cache.ssm_state.shape),
      "after", cache.seqlen_offset, "tokens")

# %% [markdown]
# The official M-VAR sampler keeps no such cache: at every scale it re-runs Mamba over the whole
# prefix. Counting the token positions each way (`Mamba2.tokens_scanned`):

# %%
with torch.no_grad():
    layer.tokens_scanned = 0
    cache = layer.allocate_cache(2)
    for b, e in zip(offs[:-1], offs[1:]):
        layer(u[:, b:e], cache=cache)
    cached = layer.tokens_scanned
    layer.tokens_scanned = 0
    for e in offs[1:]:
        layer(u[:, :e])  # re-scan the prefix
    rescan = layer.tokens_scanned
print(f"schedule {pns}: cached {cached} token-steps, re-scan {rescan}")
p256 = scales.PRESETS["256"]
print(f"at 256 px: cached {scales.num_tokens(p256)}, re-scan {sum(scales.offsets(p256)[1:])} per block")

# %% [markdown]
# ## 5. Exercise
#
# Write one step of the recurrence, the heart of `Mamba2.step`:
# `my_ssd_step(h, x, dt, A, B, C)` with h (batch, H, P, N), x (batch, H, P), dt (batch, H),
# A (H), B and C (batch, N) returns `(y, h_new)` with h_new = exp(dt·A)·h + dt·x Bᵀ and
# y = h_new C (leave out the D·x skip term).

# %% tags=["solution"] nbgrader={"grade": false, "grade_id": "nb05-ssd-step", "locked": false, "schema_version": 3, "solution": true}
def my_ssd_step(h, x, dt, A, B, C):
    ### BEGIN SOLUTION
    decay = torch.exp(dt * A)[..., None, None]
    h_new = decay * h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
    y = (h_new @ C[:, None, :, None]).squeeze(-1)
    return y, h_new
    ### END SOLUTION


# %% tags=["check"] nbgrader={"grade": true, "grade_id": "nb05-ssd-step-check", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from minivar.teaching.exercises import check_ssd_step

check_ssd_step(my_ssd_step)

# %% [markdown]
# ## Summary
#
# * Mamba-2's SSM: h_t = exp(Δ_t A) h_{t−1} + Δ_t x_t B_tᵀ, y_t = h_t C_t; Δ, B, C depend on the
#   input ("selective"), A < 0 is a scalar per head.
# * Unrolled, it is y = M x with a lower-triangular, decaying, attention-like matrix (the duality).
# * Chunked SSD uses the matrix inside chunks and the recurrence between them — fastest on CPU
#   (`mamba2.ssd_chunked`); the loop (`ssd_sequential`) is the readable reference.
# * A cache of the conv inputs and the state makes piecewise feeding exact: M-VAR's sampler runs
#   L token-steps per block instead of re-scanning the prefix (680 vs 1,710 at 256 px).
#
# **Read next:** `06_mvar.ipynb` — M-VAR: intra-scale attention plus this Mamba layer, trained on
# digits and compared with VAR (notebook 03 first if you have not met the VAR transformer).
