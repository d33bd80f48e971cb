"""minivar.models.mamba2: the chunked, sequential and cached (recurrent) paths are the same function."""
import math

import pytest
import torch

import torch.nn.functional as F

from minivar import fast
from minivar.fast.causal_conv import causal_depthwise_conv, shifted_views_conv
from minivar.models.mamba2 import Mamba2, Mamba2Cache, ssd_chunked, ssd_sequential
from minivar.models.mamba2 import causal_depthwise_conv as plain_conv
from tolerances import close, rel_close

SCHEDULE_16PX = (1, 2, 3, 4)            # pieces of 1, 4, 9, 16 tokens = 30 tokens


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These shapes are tiny: a second thread only adds sync cost, and when another process
    holds one of the 2 cores, 2 threads made the training test ~50x slower (13 s vs 0.26 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(d_model=32, ngroups=1, chunk_size=8, dtype=torch.float32, **kw):
    kw = {"d_state": 16, "headdim": 16, **kw}
    m = Mamba2(d_model, ngroups=ngroups, chunk_size=chunk_size, **kw).to(dtype)
    with torch.no_grad():  # move D and the norm off their trivial init so every term matters
        m.D.uniform_(0.5, 1.5)
        m.norm.weight.uniform_(0.5, 1.5)
    return m


# --- forward: three paths agree ----------------------------------------------------------------

@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("chunk_size", [8, 7, 30, 256])  # divides 32, does not divide 30, = L, > L
@pytest.mark.parametrize("L", [30, 32])
def test_chunked_equals_sequential_forward(ngroups, chunk_size, L):
    m = make(ngroups=ngroups, chunk_size=chunk_size)
    x = torch.randn(2, L, 32)
    close(m(x), m(x, path="sequential"), 1e-5)


def test_paths_exact_in_float64():
    m = make(ngroups=2, chunk_size=7, dtype=torch.float64)
    x = torch.randn(3, 30, 32, dtype=torch.float64)
    close(m(x), m(x, path="sequential"), 1e-12)


def test_ssd_functions_agree_with_initial_state():
    g = torch.Generator().manual_seed(1)
    Bsz, L, H, P, G, N = 2, 23, 4, 8, 2, 5
    x = torch.randn(Bsz, L, H, P, generator=g, dtype=torch.float64)
    dt = torch.rand(Bsz, L, H, generator=g, dtype=torch.float64) * 0.5
    A = -torch.rand(H, generator=g, dtype=torch.float64) * 4
    Bm, Cm = (torch.randn(Bsz, L, G, N, generator=g, dtype=torch.float64) for _ in range(2))
    h0 = torch.randn(Bsz, H, P, N, generator=g, dtype=torch.float64)
    y_s, h_s = ssd_sequential(x, dt, A, Bm, Cm, h_BHPN=h0)
    for Q in (1, 4, 23, 64):
        y_c, h_c = ssd_chunked(x, dt, A, Bm, Cm, Q, h_BHPN=h0)
        close(y_c, y_s, 1e-12)
        close(h_c, h_s, 1e-12)


@pytest.mark.parametrize("path", ["chunked", "sequential"])
def test_step_by_step_with_cache_equals_one_pass(path):
    m = make(ngroups=2, chunk_size=8)
    x = torch.randn(2, 30, 32)
    y_full = m(x, path=path)
    cache = m.allocate_cache(2)
    with torch.no_grad():
        y_steps = torch.stack([m.step(x_BD, cache) for x_BD in x.unbind(1)], dim=1)
    close(y_steps, y_full, 1e-5)
    assert cache.seqlen_offset == 30


@pytest.mark.parametrize("path", ["chunked", "sequential"])
@pytest.mark.parametrize("pieces", [[pn * pn for pn in SCHEDULE_16PX], [1, 1, 2, 5, 21], [30]])
def test_pieces_with_cache_equal_one_pass(path, pieces):
    m = make(chunk_size=8)
    x = torch.randn(2, 30, 32)
    y_full = m(x)
    cache = m.allocate_cache(2)
    ys, start = [], 0
    for n in pieces:
        ys.append(m(x[:, start:start + n], cache=cache, path=path))
        start += n
    close(torch.cat(ys, dim=1), y_full, 1e-5)
    # the state left in the cache is the state after the whole sequence
    _, h_ref = _ssm_final_state(m, x)
    close(cache.ssm_state, h_ref, 1e-5)


def _ssm_final_state(m, x):
    """Final SSM state recomputed by hand from the layer's parameters (sequential scan)."""
    E, G, N, H, P = m.d_inner, m.ngroups, m.d_state, m.nheads, m.headdim
    z, xBC, dt = m.in_proj(x).split([E, E + 2 * G * N, H], dim=-1)
    xBC = torch.nn.functional.silu(m.conv1d(xBC.transpose(1, 2))[..., :x.shape[1]]).transpose(1, 2)
    xs, Bm, Cm = xBC.split([E, G * N, G * N], dim=-1)
    dt = torch.nn.functional.softplus(dt + m.dt_bias)
    return ssd_sequential(xs.unflatten(-1, (H, P)), dt, -torch.exp(m.A_log),
                          Bm.unflatten(-1, (G, N)), Cm.unflatten(-1, (G, N)))


def test_zero_cache_equals_no_cache_and_cache_shapes():
    m = make(ngroups=2)
    cache = m.allocate_cache(3)
    assert isinstance(cache, Mamba2Cache)
    K = m.d_inner + 2 * m.ngroups * m.d_state
    assert cache.conv_state.shape == (3, K, m.d_conv - 1)
    assert cache.ssm_state.shape == (3, m.nheads, m.headdim, m.d_state)
    x = torch.randn(3, 9, 32)
    close(m(x, cache=cache), m(x), 1e-6)
    assert cache.seqlen_offset == 9


def test_tokens_scanned_counts_positions_per_call():
    m = make()
    x = torch.randn(4, 30, 32)
    m(x)
    m(x, path="sequential")
    assert m.tokens_scanned == 60           # +L per call, not B*L
    m.tokens_scanned = 0
    cache = m.allocate_cache(4)
    start = 0
    for pn in SCHEDULE_16PX:
        m(x[:, start:start + pn * pn], cache=cache)
        start += pn * pn
    assert m.tokens_scanned == 30           # cached sampling: each token scanned once
    m.step(x[:, 0], cache)
    assert m.tokens_scanned == 31


# --- backward: chunked == sequential for the input and every parameter ----------------------------

@pytest.mark.parametrize("ngroups,chunk_size", [(1, 8), (2, 7)])
def test_gradients_chunked_equal_sequential(ngroups, chunk_size):
    m = make(ngroups=ngroups, chunk_size=chunk_size)
    x = torch.randn(2, 30, 32)
    w = torch.randn(2, 30, 32)
    grads = {}
    for path in ("chunked", "sequential"):
        m.zero_grad()
        xi = x.clone().requires_grad_()
        (m(xi, path=path) * w).sum().backward()
        grads[path] = {"input": xi.grad, **{n: p.grad.clone() for n, p in m.named_parameters()}}
    assert set(grads["chunked"]) == {"input", "dt_bias", "A_log", "D", "in_proj.weight",
                                     "conv1d.weight", "conv1d.bias", "norm.weight", "out_proj.weight"}
    for name, g in grads["sequential"].items():
        assert g.abs().max() > 0, name
        rel_close(grads["chunked"][name], g, 1e-5)


def test_gradient_flows_through_cached_pieces():
    m = make(chunk_size=8)
    x = torch.randn(2, 30, 32)
    xa = x.clone().requires_grad_()
    m(xa).square().sum().backward()
    ga = xa.grad
    xb = x.clone().requires_grad_()
    cache, start, ys = m.allocate_cache(2), 0, []
    for pn in SCHEDULE_16PX:
        ys.append(m(xb[:, start:start + pn * pn], cache=cache))
        start += pn * pn
    torch.cat(ys, 1).square().sum().backward()
    rel_close(xb.grad, ga, 1e-5)


# --- causality ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["chunked", "sequential"])
def test_causal(path):
    m = make(chunk_size=8)
    x = torch.randn(2, 30, 32)
    t = 13                                        # inside a chunk
    x2 = x.clone()
    x2[:, t:] += torch.randn(2, 30 - t, 32)
    y, y2 = m(x, path=path), m(x2, path=path)
    assert torch.equal(y[:, :t], y2[:, :t])
    assert (y[:, t] - y2[:, t]).abs().max() > 1e-3
    # and by gradients: output t depends on no later input
    xg = x.clone().requires_grad_()
    m(xg, path=path)[:, t].sum().backward()
    assert xg.grad[:, t + 1:].abs().max() == 0
    assert xg.grad[:, :t + 1].abs().amax(dim=(0, 2)).min() > 0   # and on every earlier one


# --- init -----------------------------------------------------------------------------------------

def test_init_and_parameter_shapes():
    m = Mamba2(64, d_state=16, headdim=16, dt_min=0.001, dt_max=0.1)
    E, H = 128, 8
    shapes = {n: tuple(p.shape) for n, p in m.state_dict().items()}
    assert shapes == {"dt_bias": (H,), "A_log": (H,), "D": (H,),
                      "in_proj.weight": (2 * E + 2 * 16 + H, 64), "conv1d.weight": (E + 32, 1, 4),
                      "conv1d.bias": (E + 32,), "norm.weight": (E,), "out_proj.weight": (64, E)}
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    A = torch.exp(m.A_log)
    assert A.min() >= 1 and A.max() <= 16
    assert torch.equal(m.D, torch.ones(H)) and torch.equal(m.norm.weight, torch.ones(E))
    assert all(p._no_weight_decay for p in (m.dt_bias, m.A_log, m.D))


# --- learning ---------------------------------------------------------------------------------------

def test_training_loss_falls_on_running_average():
    """Toy task that needs memory: the target is an exponential moving average of past inputs,
    y*_t = 3 (1-a) sum_{s<=t} a^(t-s) x_s, a = 0.8 (variance 1). Predicting 0 scores 1.0; the best
    predictor that sees only x_t scores 0.64. Beating that needs the scan."""
    torch.manual_seed(0)
    m = make(d_model=32, chunk_size=8)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        x = torch.randn(8, 24, 32)
        h, target = torch.zeros(8, 32), []
        for x_BD in x.unbind(1):
            h = 0.8 * h + 0.6 * x_BD
            target.append(h)
        loss = (m(x) - torch.stack(target, 1)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert math.isfinite(last) and last < 0.58 and last < 0.55 * first, (first, last)


def test_cpu_chunk_choice_does_not_change_the_result():
    """The PyTorch path scans in chunks of 64 (faster on CPU) whatever chunk_size the fused kernel uses."""
    m = make(chunk_size=256)
    assert m.torch_chunk_size == 64
    x = torch.randn(2, 200, 32, requires_grad=True)
    y64 = m(x)
    g64, = torch.autograd.grad(y64.square().sum(), x)
    m.torch_chunk_size = 256
    y256 = m(x)
    g256, = torch.autograd.grad(y256.square().sum(), x)
    close(y64, y256, 1e-5)
    rel_close(g64, g256, 1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_causal_depthwise_conv_equals_conv1d_forward_and_backward(bias):
    """The hand-written conv (the fast CPU path) is F.conv1d with groups=K, and its plain-autograd
    twin: outputs and all gradients."""
    g = torch.Generator().manual_seed(0)
    B, L, K, W = 3, 11, 6, 4
    x = torch.randn(B, L + W - 1, K, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(K, W, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(K, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    gy = torch.randn(B, L, K, generator=g, dtype=torch.float64)
    leaves = [t for t in (x, w, b) if t is not None]
    ours = causal_depthwise_conv(x, w, b)
    assert ours.shape == (B, L, K)
    g_ours = torch.autograd.grad(ours, leaves, gy)
    with fast.disabled("causal_conv"):
        plain = plain_conv(x, w, b)  # what Mamba2 runs with the fast path off
    for ref in (F.conv1d(x.transpose(1, 2), w[:, None], b, groups=K).transpose(1, 2), plain,
                shifted_views_conv(x, w, b)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        for a, r in zip(g_ours, torch.autograd.grad(ref, leaves, gy)):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
