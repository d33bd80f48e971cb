"""Parity of minivar.models.mamba2 with mamba-ssm's own pure-PyTorch reference functions, on CPU.

mamba-ssm 2.3.2.post1 installs without CUDA (MAMBA_SKIP_CUDA_BUILD=TRUE, ``make install`` does
it with ``--no-deps``). Only its modules and ops are imported here, never the package's
``__init__`` (which pulls in its language-model wrapper and, through it, ``transformers``):

* the package is registered as a bare namespace over its installed folder;
* the compiled extension ``selective_scan_cuda`` that is missing on CPU gets an empty stub;
* ``huggingface_hub``, when absent, gets a stub of the one mixin class ``Mamba2`` inherits from.

Its CUDA/Triton entry points are swapped (per test, with monkeypatch) for the pure-torch
references that ship beside them. The file skips cleanly when mamba_ssm is not installed.
"""
import importlib.util
import sys
import types

import pytest
import torch
import torch.nn.functional as F

_spec = importlib.util.find_spec("mamba_ssm")
if _spec is None:
    pytest.skip("mamba_ssm is not installed (make install adds it)", allow_module_level=True)
if "mamba_ssm" not in sys.modules:
    _pkg = types.ModuleType("mamba_ssm")
    _pkg.__path__ = list(_spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = _pkg
sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
if importlib.util.find_spec("huggingface_hub") is None:
    _hub = types.ModuleType("huggingface_hub")
    _hub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
    sys.modules["huggingface_hub"] = _hub

import mamba_ssm.modules.mamba2 as ref_mamba2_mod  # noqa: E402
import mamba_ssm.ops.selective_scan_interface as ref_scan_mod  # noqa: E402
import mamba_ssm.ops.triton.layernorm_gated as ref_norm_mod  # noqa: E402
import mamba_ssm.ops.triton.ssd_combined as ref_ssd_mod  # noqa: E402
from mamba_ssm.modules.mamba2 import Mamba2 as RefMamba2  # noqa: E402
from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete  # noqa: E402
from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref  # noqa: E402

from minivar.models.mamba2 import GatedRMSNorm, Mamba2, ssd_chunked, ssd_sequential  # noqa: E402
from tolerances import close, rel_close  # noqa: E402

KW = dict(d_state=16, headdim=16, chunk_size=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def ours_and_ref(d_model=32, ngroups=1, **kw):
    """Our layer and mamba_ssm.Mamba2 from the same seed (same creation order -> same weights)."""
    kw = {**KW, **kw}
    torch.manual_seed(123)
    ref = RefMamba2(d_model, ngroups=ngroups, use_mem_eff_path=False, layer_idx=0, **kw)
    torch.manual_seed(123)
    ours = Mamba2(d_model, ngroups=ngroups, **kw)
    return ours, ref


def ssm_inputs(Bsz=2, L=24, H=4, P=8, G=1, N=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(Bsz, L, H, P, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(Bsz, L, H, generator=g, dtype=dtype) - 1)
    A = -torch.exp(torch.rand(H, generator=g, dtype=dtype))
    Bm, Cm = (torch.randn(Bsz, L, G, N, generator=g, dtype=dtype) for _ in range(2))
    return x, dt, A, Bm, Cm


# --- state dicts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("ngroups", [1, 2])
def test_state_dict_keys_shapes_and_init_equal_mamba_ssm(ngroups):
    ours, ref = ours_and_ref(d_model=64, ngroups=ngroups)
    sd_ours, sd_ref = ours.state_dict(), ref.state_dict()
    assert list(sd_ours) == list(sd_ref)
    for k in sd_ref:
        assert sd_ours[k].shape == sd_ref[k].shape, k
        assert torch.equal(sd_ours[k], sd_ref[k]), f"{k}: same seed, different init"
    assert ours.norm.eps == ref.norm.eps and ours.norm.group_size == ref.norm.group_size


def test_state_dict_round_trip():
    ours, ref = ours_and_ref()
    fresh = Mamba2(32, **KW)
    fresh.load_state_dict(ref.state_dict(), strict=True)
    ref2 = RefMamba2(32, use_mem_eff_path=False, **KW)
    ref2.load_state_dict(fresh.state_dict(), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(ref2.state_dict()[k], v)


# --- SSD core ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [4, 8, 24, 5, 64])
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_matches_ssd_minimal_discrete(chunk_size, with_h0):
    """Listing 1 of the Mamba-2 paper, as shipped in mamba_ssm (block_len must divide L)."""
    x, dt, A, Bm, Cm = ssm_inputs(dtype=torch.float64)
    h0 = torch.randn(2, 4, 8, 16, dtype=torch.float64) if with_h0 else None
    y_ref, h_ref = ssd_minimal_discrete(x * dt[..., None], A * dt, Bm.expand(-1, -1, 4, -1),
                                        Cm.expand(-1, -1, 4, -1), block_len=8,
                                        initial_states=None if h0 is None else h0[:, None])
    for y, h in (ssd_chunked(x, dt, A, Bm, Cm, chunk_size, h_BHPN=h0),
                 ssd_sequential(x, dt, A, Bm, Cm, h_BHPN=h0)):
        close(y, y_ref, 1e-12)
        close(h, h_ref, 1e-12)


def test_scan_matches_ssd_minimal_discrete_fp32_long():
    x, dt, A, Bm, Cm = ssm_inputs(Bsz=1, L=256, H=2, P=16, N=32, seed=3)
    y_ref, h_ref = ssd_minimal_discrete(x * dt[..., None], A * dt, Bm.expand(-1, -1, 2, -1),
                                        Cm.expand(-1, -1, 2, -1), block_len=64)
    y, h = ssd_chunked(x, dt, A, Bm, Cm, 64)
    rel_close(y, y_ref, 1e-5)
    rel_close(h, h_ref, 1e-5)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_step_matches_selective_state_update_ref(ngroups):
    """One recurrent step (with D and softplus(dt + dt_bias)) against mamba_ssm's reference."""
    Bsz, H, P, N = 3, 4, 8, 16
    x, dt_raw, _, Bm, Cm = ssm_inputs(Bsz=Bsz, L=1, H=H, P=P, G=ngroups, N=N)
    A = -torch.exp(torch.rand(H) * 2)
    D, dt_bias = torch.randn(H), torch.randn(H) * 0.5
    h0 = torch.randn(Bsz, H, P, N)
    state = h0.clone()
    y_ref = selective_state_update_ref(
        state, x[:, 0], dt_raw[:, 0, :, None].expand(-1, -1, P), A[:, None, None].expand(H, P, N),
        Bm[:, 0], Cm[:, 0], D=D[:, None].expand(H, P), dt_bias=dt_bias[:, None].expand(H, P),
        dt_softplus=True)
    y, h = ssd_sequential(x, F.softplus(dt_raw + dt_bias), A, Bm, Cm, h_BHPN=h0)
    close(y[:, 0] + D[:, None] * x[:, 0], y_ref, 1e-5)
    close(h, state, 1e-5)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_norm_matches_rms_norm_ref(ngroups):
    E = 64
    norm = GatedRMSNorm(E, eps=1e-5, group_size=E // ngroups)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    y, z = torch.randn(2, 7, E), torch.randn(2, 7, E)
    ref = ref_norm_mod.rms_norm_ref(y, norm.weight, None, z=z, eps=1e-5, group_size=E // ngroups,
                                    norm_before_gate=False)
    close(norm(y, z), ref, 1e-5)


# --- whole layer ------------------------------------------------------------------------------------

def _causal_conv1d_torch(x, weight, bias=None, activation=None, **_):
    """Stand-in for the causal_conv1d package (absent here): (B, K, L), weight (K, W)."""
    out = F.conv1d(F.pad(x, (weight.shape[-1] - 1, 0)), weight[:, None], bias, groups=x.shape[1])
    return F.silu(out) if activation in ("silu", "swish") else out


def _chunk_scan_ref(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                    seq_idx=None, cu_seqlens=None, return_final_states=False,
                    return_varlen_states=False, **_):
    """mamba_chunk_scan_combined's signature, computed by mamba_ssm's pure-torch reference."""
    assert seq_idx is None and cu_seqlens is None and not return_final_states
    return ref_ssd_mod.ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk_size, D=D, z=z,
                                                   dt_bias=dt_bias, dt_softplus=dt_softplus)


@pytest.fixture
def pure_torch_mamba_ssm(monkeypatch):
    """Route mamba_ssm's CUDA/Triton entry points to its own pure-torch references."""
    monkeypatch.setattr(ref_ssd_mod, "causal_conv1d_fn", _causal_conv1d_torch)
    monkeypatch.setattr(ref_ssd_mod, "rmsnorm_fn", ref_norm_mod.rms_norm_ref)
    monkeypatch.setattr(ref_scan_mod, "selective_scan_fn", ref_scan_mod.selective_scan_ref)
    monkeypatch.setattr(ref_norm_mod, "rmsnorm_fn", ref_norm_mod.rms_norm_ref)
    monkeypatch.setattr(ref_mamba2_mod, "mamba_chunk_scan_combined", _chunk_scan_ref)
    monkeypatch.setattr(ref_mamba2_mod, "selective_state_update", selective_state_update_ref)


@pytest.mark.parametrize("path", ["chunked", "sequential"])
def test_layer_matches_mamba_split_conv1d_scan_ref(pure_torch_mamba_ssm, path):
    """The whole layer (conv, scan, D, gated norm, out_proj) given our weights, forward and
    gradients, against mamba_split_conv1d_scan_ref (selective_scan_ref underneath)."""
    ours, _ = ours_and_ref()
    with torch.no_grad():
        ours.D.uniform_(0.5, 1.5)
        ours.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 30, 32)
    w = torch.randn(2, 30, 32)

    def ref_fn(u):
        return ref_ssd_mod.mamba_split_conv1d_scan_ref(
            ours.in_proj(u), ours.conv1d.weight[:, 0], ours.conv1d.bias, ours.dt_bias,
            -torch.exp(ours.A_log), ours.D, chunk_size=8, rmsnorm_weight=ours.norm.weight,
            rmsnorm_eps=ours.norm.eps, outproj_weight=ours.out_proj.weight,
            outproj_bias=ours.out_proj.bias, headdim=ours.headdim, ngroups=1,
            norm_before_gate=False)

    grads = []
    for fn in (lambda u: ours(u, path=path), ref_fn):
        ours.zero_grad()
        xi = x.clone().requires_grad_()
        y = fn(xi)
        (y * w).sum().backward()
        grads.append((y.detach(), xi.grad, {n: p.grad.clone() for n, p in ours.named_parameters()}))
    (y_o, gx_o, gp_o), (y_r, gx_r, gp_r) = grads
    close(y_o, y_r, 1e-5)
    rel_close(gx_o, gx_r, 1e-5)
    for n in gp_r:
        rel_close(gp_o[n], gp_r[n], 1e-4)


@pytest.mark.parametrize("ngroups", [1, 2])
def test_layer_matches_mamba_ssm_module_forward_and_step(pure_torch_mamba_ssm, ngroups):
    """mamba_ssm.Mamba2 itself (its forward and its one-token step, Triton calls swapped for
    references) against ours, both holding the same weights."""
    ours, ref = ours_and_ref(ngroups=ngroups)
    with torch.no_grad():
        ours.D.uniform_(0.5, 1.5)
        ours.norm.weight.uniform_(0.5, 1.5)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 32)     # ssd_chunk_scan_combined_ref needs L % chunk_size == 0
    with torch.no_grad():
        y_ref = ref(x)
        close(ours(x), y_ref, 1e-5)
        conv_state, ssm_state = ref.allocate_inference_cache(2, 32)
        y_ref_steps = torch.cat([ref.step(x[:, t:t + 1], conv_state, ssm_state)[0]
                                 for t in range(32)], dim=1)
        cache = ours.allocate_cache(2)
        y_steps = torch.stack([ours.step(x[:, t], cache) for t in range(32)], dim=1)
    close(y_ref_steps, y_ref, 1e-5)
    close(y_steps, y_ref_steps, 1e-5)
    close(cache.ssm_state, ssm_state, 1e-5)
    close(cache.conv_state, conv_state[..., 1:], 0)   # mamba_ssm keeps W inputs, we keep W-1
