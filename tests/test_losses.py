"""minivar.models.losses: the chunked head + cross-entropy equals F.cross_entropy on materialised logits."""
import pytest
import torch
import torch.nn.functional as F

from minivar.fast.head_loss import linear_cross_entropy
from minivar.models import ModelConfig, NextScaleTransformer, next_scale_loss


def _problem(N=37, C=12, V=50, bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, C, generator=g, dtype=dtype, requires_grad=True)
    W = torch.randn(V, C, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    t = torch.randint(V, (N,), generator=g)
    w = torch.rand(N, generator=g, dtype=dtype)  # an arbitrary upstream gradient per row
    return h, W, b, t, w


@pytest.mark.parametrize("chunk", [1, 8, 37, 512])  # one row, ragged last chunk, exact, one chunk
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("upstream", ["mean", "weighted"])  # forward's sums / recomputed in backward
def test_values_hits_and_gradients_equal_the_reference(chunk, bias, upstream):
    h, W, b, t, w = _problem(bias=bias)
    if upstream == "mean":
        w = torch.full_like(w, 1 / len(w))
    ce, hit = linear_cross_entropy(h, W, b, t, chunk=chunk)
    z = F.linear(h, W, b)
    ref = F.cross_entropy(z, t, reduction="none")
    torch.testing.assert_close(ce, ref, rtol=1e-12, atol=1e-12)
    assert hit.dtype == torch.bool and torch.equal(hit, z.argmax(1) == t)
    leaves = [x for x in (h, W, b) if x is not None]
    ours = torch.autograd.grad((ce * w).sum(), leaves)
    theirs = torch.autograd.grad((ref * w).sum(), leaves)
    for a, r in zip(ours, theirs):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_only_the_inputs_that_need_grad_get_one():
    h, W, b, t, _ = _problem()
    W.requires_grad_(False)
    ce, _ = linear_cross_entropy(h, W, b, t, chunk=8)
    gh, gb = torch.autograd.grad(ce.sum(), [h, b])
    assert gh.shape == h.shape and gb.shape == b.shape and W.grad is None
    with torch.no_grad():  # no gradient wanted: forward computes the loss only
        ce2, _ = linear_cross_entropy(h, W, b, t, chunk=8)
    torch.testing.assert_close(ce2, ce.detach())


def test_under_cpu_autocast_matches_the_autocast_reference():
    h, W, b, t, _ = _problem(dtype=torch.float32, N=64, C=32, V=40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ce, _ = linear_cross_entropy(h, W, b, t, chunk=16)
        ref = F.cross_entropy(F.linear(h, W, b).float(), t, reduction="none")
    torch.testing.assert_close(ce, ref, rtol=1e-5, atol=1e-5)
    w = torch.rand(64)
    ga = torch.autograd.grad(ce.mean(), [h, W], retain_graph=True) + torch.autograd.grad((ce * w).sum(), [h, W])
    gr = torch.autograd.grad(ref.mean(), [h, W], retain_graph=True) + torch.autograd.grad((ref * w).sum(), [h, W])
    for a, r in zip(ga, gr):  # both use bf16 logits; fp32 accumulation differs only in rounding
        assert (a - r).norm() <= 2e-2 * r.norm()


def test_bad_shapes_are_refused():
    h, W, b, t, _ = _problem()
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(h, W, b, t[:-1])


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_model_loss_equals_next_scale_loss_on_the_logits(mixer):
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=2, width=64, heads=2, num_classes=4, vocab_size=64, z_channels=8,
                      patch_nums=(1, 2, 3), d_state=16, mamba_headdim=32, init_adaln_gamma=0.5, drop_path=0.0)
    model = NextScaleTransformer(cfg).eval()
    g = torch.Generator().manual_seed(1)
    y = torch.randint(4, (3,), generator=g)
    x = torch.randn(3, model.L - 1, 8, generator=g)
    tgt = torch.randint(64, (3, model.L), generator=g)
    fused = model.loss(y, x, tgt)
    gf = torch.autograd.grad(fused["loss"], list(model.parameters()), allow_unused=True)
    ref = next_scale_loss(model(y, x), tgt, cfg.patch_nums)
    gr = torch.autograd.grad(ref["loss"], list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(fused["loss"], ref["loss"], rtol=1e-6, atol=1e-6)
    assert fused["acc"] == ref["acc"] and fused["scale_acc"] == ref["scale_acc"]
    assert fused["scale_loss"] == pytest.approx(ref["scale_loss"], rel=1e-6)
    for a, r in zip(gf, gr):
        if r is not None:
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="targets must be"):
        model.loss(y, x, tgt[:, :-1])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\).*vocabulary 64"):
        model.loss(y, x, tgt + 64)
