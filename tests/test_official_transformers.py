"""Parity of VAR / M-VAR with the official code, via tensors it produced (tests/fixtures/, random weights).

The fixtures hold the official forward's logits (teacher forcing), and the official sampler's greedy
run (top_k=1, cfg=1.5): per-scale guided logits, indices and images. See tests/fixtures/README.md.
"""
import json
import os

import pytest
import torch

from minivar import official
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.checkpoints import CheckpointError

# Exact equalities with tensors computed on another machine: re-run by `make test` under another
# instruction set (pyproject.toml, marker `portability`).
pytestmark = pytest.mark.portability

HERE = os.path.join(os.path.dirname(__file__), "fixtures")
TOK = torch.load(os.path.join(HERE, "official_tokenizer.pt"), weights_only=True)["tiny"]
FIX = {name: torch.load(os.path.join(HERE, f"official_{name}.pt"), weights_only=True) for name in ("var", "mvar")}
LOADERS = {"var": official.load_var, "mvar": official.load_mvar}
CASES = [(m, v) for m in ("var", "mvar") for v in ("l2norm", "plain")]


@pytest.fixture(scope="module")
def vae():
    return official.load_vae(TOK["state_dict"], patch_nums=TOK["config"]["patch_nums"])


def load(mixer, variant, vae):
    fx = FIX[mixer][variant]
    return LOADERS[mixer](fx["state_dict"], vae=vae, heads=fx["config"]["num_heads"]), fx


@pytest.mark.parametrize("mixer,variant", CASES)
def test_config_inferred_from_the_official_state_dict(vae, mixer, variant):
    model, fx = load(mixer, variant, vae)
    c = model.config
    assert (c.mixer, c.depth, c.width, c.heads, c.num_classes, c.patch_nums, c.attn_l2_norm) == \
        (mixer, 2, 64, 2, 10, (1, 2, 3, 4, 6, 8), variant == "l2norm")
    if mixer == "mvar":
        assert (c.d_state, c.d_conv, c.expand, c.mamba_headdim) == (64, 4, 2, 64)


@pytest.mark.parametrize("mixer,variant", CASES)
def test_teacher_forced_logits_match(vae, mixer, variant):
    model, fx = load(mixer, variant, vae)
    top = FIX[mixer]
    with torch.no_grad():
        logits = model(top["labels_B"], top["x_BLCv_wo_first_l"])
    assert (logits - fx["logits"]).abs().max() < 1e-4
    # our tokenizer gives the same teacher input from the same images
    assert (vae.teacher_input(vae.encode(top["images"])) - top["x_BLCv_wo_first_l"]).abs().max() < 1e-5


@pytest.mark.parametrize("mixer,variant", CASES)
def test_greedy_generation_is_identical(vae, mixer, variant):
    model, fx = load(mixer, variant, vae)
    g = fx["greedy"]
    trace = []
    from minivar.sample import generate
    images, idx = generate(model, vae, g["labels_B"], cfg=1.5, top_k=1, top_p=0.0, seed=0,
                           return_indices=True, trace=trace)
    for k, (ours, theirs) in enumerate(zip(idx, g["indices"])):
        assert torch.equal(ours, theirs.reshape(ours.shape)), f"scale {k}"
    for ours, theirs in zip(trace, g["cfg_logits"]):
        assert (ours["guided"] - theirs.reshape(ours["guided"].shape)).abs().max() < 1e-4
    assert (images - g["images"]).abs().max() < 1e-4
    # the same through the public method
    assert torch.equal(model.generate(g["labels_B"], cfg=1.5, top_k=1, top_p=0.0), images)


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_d16_architecture_has_exactly_the_official_keys(mixer):
    theirs = json.loads(FIX[mixer]["official_d16_keys_json"])
    l2 = "blocks.0.attn.scale_mul_1H11" in theirs
    with torch.device("meta"):
        model = NextScaleTransformer(ModelConfig(mixer=mixer, depth=16, attn_l2_norm=l2))
    ours = {k: list(v.shape) for k, v in official.model_state_dict_to_official(model).items()}
    if mixer == "mvar":  # the official M-VAR block also stores its schedule as a buffer
        ours.update({f"blocks.{i}.attn.patch_nums": [10] for i in range(16)})
    assert ours == theirs
    n = sum(p.numel() for p in model.parameters())
    assert (300e6 < n < 320e6) if mixer == "var" else (450e6 < n < 475e6)  # 310M and 464M


def test_wrong_kind_and_mismatched_checkpoints_raise(vae):
    sd_var = FIX["var"]["l2norm"]["state_dict"]
    with pytest.raises(CheckpointError, match="load_var"):
        official.load_mvar(sd_var)
    with pytest.raises(CheckpointError, match="load_mvar"):
        official.load_var(FIX["mvar"]["plain"]["state_dict"], heads=2)
    with pytest.raises(CheckpointError, match="tokenizer checkpoint"):
        official.load_var(TOK["state_dict"])
    broken = dict(sd_var)
    broken.pop("blocks.1.ffn.fc2.bias")
    broken["blocks.0.attn.q_bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        official.load_var(broken)
    assert "blocks.1.ffn.fc2.bias" in str(e.value) and "blocks.0.attn.q_bias" in str(e.value)
    with pytest.raises(CheckpointError, match="schedule"):
        official.load_var(sd_var, patch_nums=(1, 2, 4, 8))
