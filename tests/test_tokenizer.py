"""The multi-scale residual tokenizer: identities, training, and every bad input."""

import pytest
import torch

from minivar import data, scales
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE, ImageInputError, TokenizerConfig
from minivar.checkpoints import CheckpointError
from minivar.training import TokenizerTrainConfig, train_tokenizer
from minivar.training.tokenizer_trainer import evaluate_tokenizer

# a very small tokenizer so that training tests run in seconds: 16 px, 4x4 latent, scales 1..4
SMALL = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                        z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def vae_and_images():
    torch.manual_seed(0)
    vae = VQVAE(SMALL).eval()
    x, _ = data.synthetic(8, size=16, seed=1)
    return vae, x


def test_decode_of_encode_equals_the_quantizers_fhat_path(vae_and_images):
    vae, x = vae_and_images
    with torch.no_grad():
        f = vae.img_to_f(x)
        q = vae.quantize(f)  # training pass: straight-through f_hat has the value of f_hat
        idx = vae.encode(x)
        for a, b in zip(idx, q.indices):
            assert torch.equal(a, b)
        f_hat = vae.quantize.indices_to_fhat(idx)
        assert (f_hat - q.f_hat).abs().max() < 1e-5
        assert (vae.decode(idx) - vae.fhat_to_img(q.f_hat)).abs().max() < 1e-5


def test_per_scale_contributions_sum_to_fhat(vae_and_images):
    vae, x = vae_and_images
    qz = vae.quantize
    idx = vae.encode(x)
    parts = [qz.upsample_phi(k, qz.codes_to_map(i, pn), 4) for k, (pn, i) in enumerate(zip(vae.patch_nums, idx))]
    total = torch.stack(parts).sum(0)
    cum = qz.indices_to_fhat(idx, cumulative=True)
    assert (total - cum[-1]).abs().max() < 1e-5
    assert (cum[0] - parts[0]).abs().max() < 1e-6 and len(cum) == 4


def test_teacher_input_equals_the_incremental_sampling_path(vae_and_images):
    vae, x = vae_and_images
    idx = vae.encode(x)
    x_BLC = vae.teacher_input(idx)
    L = scales.num_tokens(vae.patch_nums)
    assert x_BLC.shape == (len(x), L - 1, SMALL.z_channels)
    f_hat, pieces = vae.empty_fhat(len(x)), []
    for k in range(len(vae.patch_nums)):
        # embedded codes and indices are interchangeable inputs to the step
        codes = vae.quantize.embedding(idx[k]) if k % 2 else idx[k]
        f_hat, nxt = vae.next_input(f_hat, k, codes)
        if nxt is not None:
            pieces.append(nxt)
    assert nxt is None
    assert (torch.cat(pieces, 1) - x_BLC).abs().max() < 1e-6
    assert (f_hat - vae.quantize.indices_to_fhat(idx)).abs().max() < 1e-5


def test_phi_sharing_modes_build_the_right_number_of_convs():
    for n, expect in [(4, 4), (1, 1), (0, 4)]:
        cfg = TokenizerConfig(**{**SMALL.__dict__, "num_phi": n})
        assert len(VQVAE(cfg).quantize.phis) == expect


def test_training_lowers_reconstruction_error_clearly():
    torch.manual_seed(0)
    x, _ = data.synthetic(256, size=16, seed=2)
    vae = VQVAE(SMALL)
    before = evaluate_tokenizer(vae, x)["psnr"]
    hist = train_tokenizer(vae, x, TokenizerTrainConfig(steps=150, batch_size=16, lr=1e-3, log_every=50,
                                                        reseed_every=50), progress=False)
    after = evaluate_tokenizer(vae, x)["psnr"]
    assert after > before + 6, (before, after)  # +6 dB = 4x lower MSE
    assert hist[-1]["l2"] < hist[0]["l2"]
    assert any(h["reseeded"] > 0 for h in hist)  # with V=64 and few tokens some codes die
    assert len(hist[-1]["usage"]) == 4 and all(0 < u <= 1 for u in hist[-1]["usage"])


def test_nan_loss_stops_with_a_clear_error_and_leaves_weights_intact():
    vae = VQVAE(SMALL)
    x, _ = data.synthetic(16, size=16)
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(float("nan"))
    before["decoder.conv_out.bias"] = vae.decoder.conv_out.bias.clone()
    with pytest.raises(FloatingPointError, match="loss became nan at step 1 .*weights before this step are intact"):
        train_tokenizer(vae, x, TokenizerTrainConfig(steps=3, batch_size=4), progress=False)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k]) or torch.isnan(v).any()


@pytest.mark.parametrize("make,match", [
    (lambda x: ((x + 1) * 127.5).to(torch.uint8), "dtype torch.uint8"),
    (lambda x: (x + 1) * 127.5, r"x / 127.5 - 1"),
    (lambda x: (x + 1) / 2, r"\[0, 1\] data"),
    (lambda x: x[:, :1], "grey images"),
    (lambda x: x.permute(0, 2, 3, 1), "channels last"),
    (lambda x: x[0], "add the batch dim"),
    (lambda x: torch.nn.functional.interpolate(x, size=(32, 32)), "takes 16x16"),
    (lambda x: x.masked_fill(x > 0.5, float("nan")), "NaN"),
])
def test_bad_images_raise_one_clear_error(vae_and_images, make, match):
    vae, x = vae_and_images
    with pytest.raises(ImageInputError, match=match):
        vae.encode(make(x))


def test_bad_indices_and_schedules_raise(vae_and_images):
    vae, x = vae_and_images
    idx = vae.encode(x)
    with pytest.raises(ValueError, match="list of 4 index tensors"):
        vae.decode(idx[:3])
    with pytest.raises(ValueError, match="scale 2 indices must be"):
        vae.decode(idx[:2] + [idx[2][:, :4]] + idx[3:])
    with pytest.raises(ValueError, match="outside"):
        vae.decode(idx[:3] + [idx[3] + 1000])
    with pytest.raises(scales.ScheduleError, match="latent"):
        TokenizerConfig(**{**SMALL.__dict__, "patch_nums": (1, 2, 3)})


def test_save_load_roundtrip_is_atomic_and_checks_kind(tmp_path, vae_and_images):
    vae, x = vae_and_images
    path = tmp_path / "tok.pt"
    vae.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["tok.pt"]  # no temp file left behind
    again = VQVAE.load(str(path))
    assert again.config == vae.config
    for a, b in zip(again.encode(x), vae.encode(x)):
        assert torch.equal(a, b)
    torch.save(vae.state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="official.load_vae"):
        VQVAE.load(str(tmp_path / "raw.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VQVAE.load(str(tmp_path / "bad.pt"))


def test_presets_build_and_map_to_their_latent():
    for name, cfg in TOKENIZER_PRESETS.items():
        assert cfg.patch_nums[-1] == cfg.latent_side, name
    vae = VQVAE(TOKENIZER_PRESETS["tiny32"])
    x, _ = data.synthetic(2, size=32)
    idx = vae.encode(x)
    assert [i.shape[1] for i in idx] == [1, 4, 9, 16, 36, 64]
    assert vae.decode(idx).shape == (2, 3, 32, 32)


def test_digits_loader_range_and_size():
    pytest.importorskip("sklearn")
    x, y = data.digits(16)
    assert x.shape == (1797, 3, 16, 16) and x.min() >= -1 and x.max() <= 1 and int(y.max()) == 9


def test_bf16_decode_is_opt_in_close_and_leaves_encoding_alone(vae_and_images):
    vae, x = vae_and_images
    idx = vae.encode(x)
    exact = vae.decode(idx)
    try:
        vae.decode_dtype = torch.bfloat16
        approx = vae.decode(idx)
        assert [torch.equal(a, b) for a, b in zip(vae.encode(x), idx)] == [True] * len(idx)
    finally:
        vae.decode_dtype = None
    assert approx.dtype == torch.float32 and approx.shape == exact.shape
    err = (approx - exact).abs()
    assert 0 < err.max() < 0.1 and err.mean() < 0.02  # bf16 keeps 8 bits of mantissa: close, not equal
    assert torch.equal(vae.decode(idx), exact)  # back to the exact fp32 path


def test_inference_decode_layout_equals_the_training_path(vae_and_images):
    """Without autograd the decoder runs NHWC with in-place SiLU; with it, NCHW as in training."""
    vae, x = vae_and_images
    f_hat = vae.quantize.indices_to_fhat(vae.encode(x))
    with torch.no_grad():
        fast = vae.fhat_to_img(f_hat)
    train_path = vae.fhat_to_img(f_hat.clone().requires_grad_(True))
    assert fast.is_contiguous() and train_path.requires_grad
    assert (fast - train_path.detach()).abs().max() < 1e-5


def test_teacher_input_takes_the_k_maps_or_one_flat_token_tensor(vae_and_images):
    vae, x = vae_and_images
    idx = vae.encode(x)
    flat = torch.cat(idx, dim=1)
    assert torch.equal(vae.teacher_input(flat), vae.teacher_input(idx))
    with pytest.raises(ValueError, match=r"\(B, L=30\)"):
        vae.teacher_input(flat[:, :-1])
