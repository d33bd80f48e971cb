"""GPU checks (``pytest -m gpu``; skipped without CUDA): every fast path gives the reference path's
loss (and gradients) on the same batch, and the trainer / sampler / Inception run on CUDA.

    fast path                          reference                       tolerance
    attn_backend "triton" (ours)       "sdpa" with the full mask       fp32 (TF32 tiles): 1e-3 relative
    attn_backend "flash" (M-VAR)       "sdpa"                          bf16 autocast: 2e-2 relative
    mamba-ssm's fused Mamba2 scan      our chunked PyTorch scan        fp32: 1e-3 relative
    bf16 / fp16 autocast               fp32                            2e-2 relative
    torch.compile                      eager                           1e-3 relative

Sizes are small (depth 2, width 128, the 256 px schedule: L = 680) so the file runs in about a minute
plus the compile test. Written without a GPU at hand: these have NOT been run yet.
"""
import os

import pytest
import torch

from minivar import scales
from minivar.models import ModelConfig, NextScaleTransformer, loss_stats

pytestmark = pytest.mark.gpu
DEV = "cuda"
PNS = scales.PRESETS["256"]


def build(mixer: str, backend: str, depth: int = 2, width: int = 128) -> NextScaleTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=depth, width=width, heads=2, num_classes=10, patch_nums=PNS,
                      attn_backend=backend, d_state=64, mamba_headdim=64, cond_drop=0.0, drop_path=0.0,
                      init_adaln_gamma=0.5)  # large gates: the blocks matter to the loss
    return NextScaleTransformer(cfg).to(DEV).train()


def batch(model, B: int = 4, seed: int = 0):
    g = torch.Generator(DEV).manual_seed(seed)
    L, cfg = model.L, model.config
    y = torch.randint(cfg.num_classes, (B,), generator=g, device=DEV)
    x = torch.randn(B, L - 1, cfg.z_channels, generator=g, device=DEV)
    t = torch.randint(cfg.vocab_size, (B, L), generator=g, device=DEV)
    return y, x, t


def loss_and_grads(model, b, amp=None, fwd=None):
    model.zero_grad(set_to_none=True)
    y, x, t = b
    with torch.autocast(DEV, dtype=amp, enabled=amp is not None):
        loss = loss_stats(*(fwd or model)(y, x, t), PNS)["loss"]  # fused head + loss, as the trainer
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def assert_close(a, b, rel):
    la, ga = a
    lb, gb = b
    assert abs(la - lb) <= rel * abs(lb), (la, lb)
    assert (ga - gb).norm() <= 10 * rel * gb.norm(), ((ga - gb).norm().item(), gb.norm().item())


def same_weights(model, backend):
    other = build(model.config.mixer, backend, model.config.depth, model.config.width)
    other.load_state_dict(model.state_dict())
    return other


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_triton_attention_gives_the_sdpa_loss_and_gradients(mixer):
    ref = build(mixer, "sdpa")
    b = batch(ref)
    want = loss_and_grads(ref, b)
    assert_close(loss_and_grads(same_weights(ref, "triton"), b), want, 1e-3)
    assert_close(loss_and_grads(same_weights(ref, "blocks"), b), want, 1e-4)


def test_flash_attention_gives_the_sdpa_loss_for_mvar():
    pytest.importorskip("flash_attn")
    ref = build("mvar", "sdpa")
    b = batch(ref)
    assert_close(loss_and_grads(same_weights(ref, "flash"), b, torch.bfloat16),
                 loss_and_grads(ref, b, torch.bfloat16), 2e-2)


def test_fused_mamba2_gives_the_pytorch_loss_and_gradients():
    from minivar.models.mamba2 import _fused_scan
    if _fused_scan() is None:
        pytest.skip("mamba-ssm (CUDA build) is not installed")
    model = build("mvar", "sdpa")
    b = batch(model)
    for blk in model.blocks:
        blk.mamba.use_fused = False
    want = loss_and_grads(model, b)
    for blk in model.blocks:
        blk.mamba.use_fused = True
    assert_close(loss_and_grads(model, b), want, 1e-3)


@pytest.mark.parametrize("mixer", ["var", "mvar"])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_autocast_loss_is_close_to_fp32(mixer, amp):
    model = build(mixer, "auto")
    b = batch(model)
    l32, _ = loss_and_grads(model, b)
    l16, g16 = loss_and_grads(model, b, amp)
    assert abs(l16 - l32) <= 2e-2 * l32 and torch.isfinite(g16).all()


def test_torch_compile_gives_the_eager_loss():
    model = build("var", "sdpa", depth=1)
    b = batch(model)
    want = loss_and_grads(model, b)
    assert_close(loss_and_grads(model, b, fwd=torch.compile(model)), want, 1e-3)


def test_trainer_runs_on_cuda_with_fp16_and_compile(tmp_path):
    from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
    from minivar.training import TrainConfig, train
    torch.manual_seed(0)
    tok = str(tmp_path / "tokenizer.pt")
    VQVAE(TOKENIZER_PRESETS["tiny16"]).save(tok)
    for amp, comp in (("fp16", False), ("bf16", True)):
        cfg = TrainConfig.from_dict(dict(data="synthetic", tokenizer=tok, mixer="mvar", depth=2, width=64, heads=2,
                                         d_state=16, mamba_headdim=32, steps=3, batch_size=16, micro_batch=8,
                                         amp=amp, compile=comp, ckpt_every=3, log_every=1))
        run = str(tmp_path / f"run_{amp}")
        os.makedirs(run)
        last = train(cfg, run, progress=False)
        assert last["step"] == 3 and torch.isfinite(torch.tensor(last["loss"]))


def test_sampling_on_cuda_is_reproducible_with_a_seed():
    from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
    torch.manual_seed(0)
    vae = VQVAE(TOKENIZER_PRESETS["tiny16"]).to(DEV).eval()
    for mixer in ("var", "mvar"):
        cfg = ModelConfig(mixer=mixer, depth=2, width=64, heads=2, num_classes=4, vocab_size=256, z_channels=16,
                          patch_nums=vae.patch_nums, d_state=16, mamba_headdim=32)
        model = NextScaleTransformer(cfg).to(DEV).eval()
        labels = torch.arange(4)
        a = model.generate(labels, cfg=1.5, top_k=900, top_p=0.96, seed=3, vae=vae)
        b = model.generate(labels, cfg=1.5, top_k=900, top_p=0.96, seed=3, vae=vae)
        assert a.is_cuda and torch.equal(a, b)


def test_inception_features_on_cuda_match_cpu():
    from minivar.evaluation.inception import FIDInceptionV3
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    x = torch.rand(4, 3, 256, 256)
    with torch.no_grad():
        f_cpu, _ = net(x)
        f_gpu, _ = net.to(DEV)(x.to(DEV))
    torch.testing.assert_close(f_gpu.cpu(), f_cpu, rtol=2e-2, atol=2e-3 * f_cpu.abs().max().item())
