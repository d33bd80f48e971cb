"""Parity with the official VAR tokenizer code, via tensors it produced (tests/fixtures/, random weights)."""
import json
import os

import pytest
import torch

from minivar import official
from minivar.tokenizer.quantizer import MultiScaleQuantizer
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
from minivar.checkpoints import CheckpointError

# Exact equalities with tensors computed on another machine: re-run by `make test` under another
# instruction set (pyproject.toml, marker `portability`).
pytestmark = pytest.mark.portability

FIX = torch.load(os.path.join(os.path.dirname(__file__), "fixtures", "official_tokenizer.pt"), weights_only=True)


@pytest.fixture(scope="module")
def tiny():
    fx = FIX["tiny"]
    return official.load_vae(fx["state_dict"], patch_nums=fx["config"]["patch_nums"]), fx


def test_config_is_inferred_from_the_official_state_dict(tiny):
    vae, fx = tiny
    c = vae.config
    assert (c.ch, c.ch_mult, c.num_res_blocks, c.z_channels, c.vocab_size, c.num_phi, c.image_size) == \
        (32, (1, 1), 1, 8, 64, 4, 16)


def test_encode_gives_identical_indices(tiny):
    vae, fx = tiny
    idx = vae.encode(fx["img"])
    assert len(idx) == len(fx["indices"])
    for ours, theirs in zip(idx, fx["indices"]):
        assert torch.equal(ours, theirs)


def test_decode_and_teacher_input_match(tiny):
    vae, fx = tiny
    assert (vae.decode(fx["indices"]) - fx["decoded"]).abs().max() < 1e-4
    for ours, theirs in zip(vae.decode_per_scale(fx["indices"]), fx["decoded_per_scale"]):
        assert (ours - theirs).abs().max() < 1e-4
    assert (vae.teacher_input(fx["indices"]) - fx["teacher_input"]).abs().max() < 1e-5


def test_training_forward_matches(tiny):
    vae, fx = tiny
    with torch.no_grad():
        rec, q = vae(fx["img"])
    assert (rec - fx["train_recon"]).abs().max() < 1e-4
    assert abs(q.vq_loss.item() - fx["train_vq_loss"].item()) < 1e-6


@pytest.mark.parametrize("share", [4, 1, 0])
def test_quantizer_on_256px_schedule_all_phi_modes(share):
    fx = FIX[f"quant256_share{share}"]
    q = MultiScaleQuantizer(64, 8, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), num_phi=share)
    sd = official.vae_state_dict_from_official({"quantize." + k: v for k, v in fx["state_dict"].items()})
    q.load_state_dict({k[len("quantize."):]: v for k, v in sd.items()})
    idx = q.quantize(fx["f"])
    for ours, theirs in zip(idx, fx["indices"]):
        assert torch.equal(ours, theirs)
    for ours, theirs in zip(q.indices_to_fhat(idx, cumulative=True), fx["fhat_per_scale"]):
        assert (ours - theirs).abs().max() < 1e-5
    assert (q.teacher_input(idx) - fx["teacher_input"]).abs().max() < 1e-5


def test_official_preset_has_exactly_the_released_keys_and_shapes():
    theirs = json.loads(FIX["official_keys_json"])
    with torch.device("meta"):
        vae = VQVAE(TOKENIZER_PRESETS["official"])
    ours = {k: list(v.shape) for k, v in official.vae_state_dict_to_official(vae).items()}
    assert ours == theirs
    n = sum(p.numel() for p in vae.parameters())
    assert 105e6 < n < 112e6  # ~109M


def test_round_trip_through_official_names(tiny):
    vae, fx = tiny
    again = official.load_vae(official.vae_state_dict_to_official(vae), patch_nums=vae.patch_nums)
    for a, b in zip(again.state_dict().values(), vae.state_dict().values()):
        assert torch.equal(a, b)


def test_mismatched_checkpoint_lists_every_problem(tiny):
    vae, fx = tiny
    sd = dict(fx["state_dict"])
    sd.pop("decoder.conv_out.bias")
    sd["encoder.extra.weight"] = torch.zeros(1)
    sd["post_quant_conv.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        official.load_vae(sd, patch_nums=fx["config"]["patch_nums"])
    msg = str(e.value)
    assert "decoder.conv_out.bias" in msg and "encoder.extra.weight" in msg and "post_quant_conv.bias" in msg


def test_corrupt_truncated_and_wrong_kind_files(tmp_path, tiny):
    vae, fx = tiny
    good = tmp_path / "vae.pth"
    torch.save(fx["state_dict"], good)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        official.load_vae(str(truncated))
    with pytest.raises(CheckpointError, match="does not exist"):
        official.load_vae(str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointError, match="transformer checkpoint"):
        official.load_vae({"blocks.0.attn.mat_qkv.weight": torch.zeros(3, 1), "class_emb.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="one phi per scale"):
        sd = {"quantize." + k: v for k, v in FIX["quant256_share0"]["state_dict"].items()}
        sd.update({k: v for k, v in fx["state_dict"].items() if not k.startswith("quantize.")})
        official.load_vae(sd, patch_nums=(1, 2, 3, 4, 6, 8))
    # loading from a path works and uses weights_only (a plain state dict loads fine)
    assert official.load_vae(str(good), patch_nums=fx["config"]["patch_nums"]).config.vocab_size == 64
