"""VAR and M-VAR transformers: cached sampling == teacher forcing, backends agree, training works."""
import math

import pytest
import torch

from minivar import data, scales
from minivar.models import ModelConfig, NextScaleTransformer, next_scale_loss
from minivar.sample import generate, sample_top_k_top_p, top_k_top_p_candidates
from minivar.tokenizer import VQVAE, TokenizerConfig

PNS = (1, 2, 3, 4)
VAE_CFG = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=PNS)


def tiny(mixer, l2=True, **kw):
    # large AdaLN gates so that every block changes the output (a near-identity model tests little)
    cfg = ModelConfig(mixer=mixer, depth=2, width=64, heads=2, num_classes=4, vocab_size=64, z_channels=8,
                      patch_nums=PNS, d_state=16, mamba_headdim=32, init_adaln_gamma=0.5,
                      attn_l2_norm=l2, drop_path=0.0, **kw)
    return NextScaleTransformer(cfg).eval()


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VQVAE(VAE_CFG).eval()


@pytest.fixture(scope="module")
def batch(vae):
    x, y = data.synthetic(4, size=16, seed=3)
    return x, y, vae.encode(x)


@pytest.mark.parametrize("mixer,l2", [("var", True), ("var", False), ("mvar", True), ("mvar", False)])
def test_cached_generation_equals_teacher_forced_recomputation(vae, batch, mixer, l2):
    model = tiny(mixer, l2)
    _, y, _ = batch
    trace = []
    _, idx = generate(model, vae, y, cfg=1.5, top_k=20, top_p=0.9, seed=0, return_indices=True, trace=trace)
    x_in = vae.teacher_input(idx)
    cond, uncond = model(y, x_in), model(torch.full_like(y, 4), x_in)
    offs = scales.offsets(PNS)
    for k in range(len(PNS)):
        b, e = offs[k], offs[k + 1]
        assert (trace[k]["cond"] - cond[:, b:e]).abs().max() < 1e-5
        assert (trace[k]["uncond"] - uncond[:, b:e]).abs().max() < 1e-5
        t = 1.5 * k / (len(PNS) - 1)
        assert torch.allclose(trace[k]["guided"], (1 + t) * cond[:, b:e] - t * uncond[:, b:e], atol=1e-5)


def test_mvar_state_cache_equals_the_official_rescan_sampler_and_scans_L_tokens(vae, batch):
    model = tiny("mvar")
    _, y, _ = batch
    t1, t2 = [], []
    _, a = generate(model, vae, y, cfg=1.5, top_k=20, top_p=0.9, seed=1, return_indices=True, trace=t1)
    cached = [b.mamba.tokens_scanned for b in model.blocks]
    _, b = generate(model, vae, y, cfg=1.5, top_k=20, top_p=0.9, seed=1, return_indices=True, trace=t2,
                    rescan_mamba=True)
    rescanned = [blk.mamba.tokens_scanned for blk in model.blocks]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert max((p["guided"] - q["guided"]).abs().max().item() for p, q in zip(t1, t2)) < 1e-5
    L = scales.num_tokens(PNS)
    assert cached == [L, L]  # 30 token-steps per block
    assert rescanned == [sum(scales.offsets(PNS)[1:])] * 2  # 1 + 5 + 14 + 30 = 50


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_attention_backends_agree_in_the_model(vae, batch, mixer):
    _, y, idx = batch
    x_in = vae.teacher_input(idx)
    model = tiny(mixer)
    outs = {}
    for backend in ("sdpa", "blocks", "triton"):
        if backend == "triton":
            pytest.importorskip("triton")
        for blk in model.blocks:
            blk.attn.backend = backend
        outs[backend] = model(y, x_in)
    assert (outs["sdpa"] - outs["blocks"]).abs().max() < 1e-5
    assert (outs["sdpa"] - outs["triton"]).abs().max() < 1e-5


def test_logits_do_not_see_the_future(vae, batch):
    """Changing scale-k inputs changes no logit of scales < k (VAR and M-VAR)."""
    _, y, idx = batch
    x_in = vae.teacher_input(idx)
    for mixer in ("var", "mvar"):
        model = tiny(mixer)
        x2 = x_in.clone()
        x2[:, 13:] += 1.0  # inputs of the last scale (tokens 14..29 of the sequence)
        a, b = model(y, x_in), model(y, x2)
        assert torch.equal(a[:, :14], b[:, :14]) or (a[:, :14] - b[:, :14]).abs().max() < 1e-6
        assert (a[:, 14:] - b[:, 14:]).abs().max() > 1e-3


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_tiny_model_overfits_a_batch(vae, mixer):
    torch.manual_seed(0)
    x, y = data.synthetic(8, size=16, seed=5)
    idx = vae.encode(x)
    x_in, target = vae.teacher_input(idx), torch.cat(idx, 1)
    cfg = ModelConfig(mixer=mixer, depth=2, width=64, heads=2, num_classes=4, vocab_size=64, z_channels=8,
                      patch_nums=PNS, d_state=16, mamba_headdim=32, init_adaln_gamma=1e-3, cond_drop=0.0,
                      drop_path=0.0)
    model = NextScaleTransformer(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(120):
        out = next_scale_loss(model(y, x_in), target, PNS)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert first > 0.8 * math.log(64)
    assert out["loss"].item() < 0.25 * math.log(64), out["loss"].item()
    assert out["acc"] > 0.8 and len(out["scale_loss"]) == len(PNS)


def test_seeded_generation_is_bit_reproducible(vae, batch):
    model = tiny("mvar")
    _, y, _ = batch
    a = model.generate(y, cfg=1.5, top_k=20, top_p=0.9, seed=7, vae=vae)
    b = model.generate(y, cfg=1.5, top_k=20, top_p=0.9, seed=7, vae=vae)
    c = model.generate(y, cfg=1.5, top_k=20, top_p=0.9, seed=8, vae=vae)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (4, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    smooth = model.generate(y, seed=7, vae=vae, more_smooth=True)
    assert smooth.shape == a.shape and torch.isfinite(smooth).all()


def test_top_k_top_p_keep_the_same_set_as_the_official_rule():
    torch.manual_seed(0)
    logits = torch.randn(50, 64) * 3
    for top_k, top_p in [(10, 0.0), (10, 0.8), (0, 0.9), (64, 0.5), (5, 1.0)]:
        # official rule: mask below the k-th largest, then drop tokens whose ascending cumulative
        # probability is <= 1 - top_p (keeping the largest)
        ref = logits.clone()
        if top_k:
            ref[ref < ref.topk(top_k, dim=-1)[0].amin(-1, keepdim=True)] = -float("inf")
        if top_p:
            s, order = ref.sort(-1)
            drop = s.softmax(-1).cumsum(-1) <= 1 - top_p
            drop[:, -1] = False
            ref[drop.scatter(1, order, drop)] = -float("inf")
        vals, cand = top_k_top_p_candidates(logits, top_k, top_p)
        ours = torch.full_like(logits, -float("inf"))
        ours.scatter_(1, cand if cand is not None else torch.arange(64).expand(50, -1), vals)
        assert torch.equal(torch.isfinite(ours), torch.isfinite(ref)), (top_k, top_p)
    greedy = sample_top_k_top_p(logits[None], top_k=1)
    assert torch.equal(greedy[0], logits.argmax(-1))


def test_edit_keeps_unmasked_tokens_exactly(vae, batch):
    x, y, idx = batch
    model = tiny("var")
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1  # regenerate the centre
    out, new = model.edit(x, mask, y, vae=vae, seed=0, top_k=20, return_indices=True)
    from minivar.sample import scale_masks
    changed_any = False
    for k, m in enumerate(scale_masks(mask, PNS)):
        m = m.expand_as(new[k])
        assert torch.equal(new[k][~m], idx[k][~m])
        changed_any |= bool((new[k][m] != idx[k][m]).any())
    assert changed_any and out.shape == x.shape


def test_gamma3_init_choice():
    small = tiny("mvar", init_adaln=0.5)
    C = 64
    for mode, expect_small in [("small", True), ("official", False)]:
        cfg = ModelConfig(mixer="mvar", depth=2, width=C, heads=2, num_classes=4, vocab_size=64, z_channels=8,
                          patch_nums=PNS, d_state=16, mamba_headdim=32, init_adaln_gamma=1e-5, mvar_gamma3_init=mode)
        w = NextScaleTransformer(cfg).blocks[0].ada_lin[1].weight
        g3, s1 = w[2 * C:3 * C].abs().mean(), w[3 * C:4 * C].abs().mean()
        assert (g3 < 1e-3 * s1) == expect_small
    assert small.blocks[0].ada_lin[1].weight.shape == (9 * C, C)


def test_bad_inputs_raise_clear_errors(vae, batch):
    _, y, idx = batch
    model = tiny("var")
    x_in = vae.teacher_input(idx)
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 4\]"):
        model(torch.tensor([0, 1, 2, 5]), x_in)
    with pytest.raises(ValueError, match="1-D LongTensor"):
        model(y.float(), x_in)
    with pytest.raises(ValueError, match="teacher input must be"):
        model(y[:3], x_in)  # batch / label mismatch
    with pytest.raises(ValueError, match="teacher input must be"):
        model(y, x_in[:, :-1])  # wrong length
    with pytest.raises(ValueError, match="teacher input must be"):
        model(y, x_in[..., :4])  # wrong width
    for kw, match in [({"cfg": -1}, "cfg must be"), ({"top_p": 1.5}, "top_p must be"),
                      ({"top_k": -3}, "top_k must be")]:
        with pytest.raises(ValueError, match=match):
            model.generate(y, vae=vae, **kw)
    with pytest.raises(ValueError, match="class ids"):
        model.generate(torch.tensor([-1]), vae=vae)
    with pytest.raises(ValueError, match="no tokenizer"):
        tiny("var").generate(y)
    other = VQVAE(TokenizerConfig(**{**VAE_CFG.__dict__, "vocab_size": 32}))
    with pytest.raises(ValueError, match="vocabulary"):
        model.attach_tokenizer(other)
    with pytest.raises(ValueError, match="mixer"):
        ModelConfig(mixer="mamba")


def test_next_scale_loss_fast_layout_equals_the_transposed_reference():
    """The loss runs the softmax over contiguous (B*L, V) rows; it must equal cross-entropy over (B, V, L)."""
    from minivar.models import next_scale_loss
    g = torch.Generator().manual_seed(0)
    pns = (1, 2, 3)
    logits = torch.randn(3, 14, 50, generator=g, requires_grad=True)
    tgt = torch.randint(50, (3, 14), generator=g)
    out = next_scale_loss(logits, tgt, pns)
    ref = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")
    torch.testing.assert_close(out["loss"], ref.mean(), rtol=1e-6, atol=1e-7)
    g1, = torch.autograd.grad(out["loss"], logits)
    g2, = torch.autograd.grad(ref.mean(), logits)
    torch.testing.assert_close(g1, g2, rtol=1e-6, atol=1e-8)
    assert out["scale_loss"][1] == pytest.approx(ref[:, 1:5].mean().item(), rel=1e-6)


@pytest.mark.parametrize("mode", ["causal", "intra"])
def test_cpu_blocks_attention_equals_its_autograd_twin(mode):
    """The hand-written backward of the CPU "blocks" backend equals plain autograd through the
    same per-scale SDPA calls, and the masked reference ("sdpa")."""
    from minivar.fast import attention as fast_attention
    from minivar.models import attention as A
    g = torch.Generator().manual_seed(0)
    pns = (1, 2, 3, 4)
    L = sum(p * p for p in pns)
    # q, k, v as the model makes them: permuted views of one (B, L, 3, H, c) tensor
    qkv = torch.randn(2, L, 3, 2, 8, generator=g, requires_grad=True)
    go = torch.randn(2, 2, L, 8, generator=g)
    spans = A._spans(pns, mode)
    outs, grads = [], []
    for fn in (lambda q, k, v: fast_attention.blocks_attention_cpu(q, k, v, spans, 0.5),
               lambda q, k, v: A.blocks_attention(q, k, v, spans, 0.5),
               lambda q, k, v: A.scale_attention(q, k, v, pns, mode, 0.5, backend="sdpa")):
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = fn(q, k, v)
        outs.append(out)
        grads.append(torch.autograd.grad(out, qkv, go)[0])
    assert fast_attention._cpu_flash_ops() is not None  # the pinned torch has them: the fast path is tested
    for o, gr in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(outs[0], o, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[0], gr, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_t", [True, False])
def test_scaled_l2_normalize_equals_f_normalize_times_temperature(with_t):
    from minivar import fast
    from minivar.fast.l2norm import scaled_l2_normalize
    from minivar.models.attention import l2_normalize
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    x[0, 0, 0] = 0.0  # a zero row: below eps, the output is 0 and so is its gradient
    x.requires_grad_(True)
    t = (torch.rand(1, 3, 1, 1, generator=g, dtype=torch.float64) + 1).requires_grad_(True) if with_t else None
    dy = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    leaves = [x] + ([t] if with_t else [])
    with fast.disabled("l2_normalize"):
        ref = l2_normalize(x, t)  # the plain path: F.normalize(x) * t
    ours = scaled_l2_normalize(x, t)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    for a, r in zip(torch.autograd.grad(ours, leaves, dy), torch.autograd.grad(ref, leaves, dy)):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_every_fast_path_off_gives_the_same_training_loss_gradients_and_samples(vae, batch, mixer):
    """The readable paths (F.normalize, plain per-scale SDPA, logits + cross-entropy, F.conv1d, NCHW
    decode) compute what the default fast ones do: one training step's loss and gradients, and a
    seeded sample, agree to float rounding."""
    from minivar import fast
    _, y, idx = batch
    model = tiny(mixer).train()
    x_in, targets = vae.teacher_input(idx), torch.cat(idx, 1)

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(0)  # the same label dropout on both paths
        loss = model.loss(y, x_in, targets)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    def sample():
        return model.generate(y, cfg=1.5, top_k=0, top_p=0.0, seed=0, vae=vae)

    fast_loss, fast_grads = loss_and_grads()
    fast_img = sample()
    with fast.disabled():
        assert not any(vars(fast.enabled).values())
        plain_loss, plain_grads = loss_and_grads()
        plain_img = sample()
    assert fast.enabled.head_loss and fast.enabled.attention_backward  # switched back on
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast_img, plain_img, rtol=0, atol=1e-4)
