"""configs/imagenet/*.json: they load as TrainConfig and hold the official recipes (configs/imagenet/README.md)."""
import math
import os

import pytest
import torch

from minivar.config import read_json
from minivar.models import NextScaleTransformer
from minivar.training import TrainConfig
from minivar.training.recipe import lr_lambda, model_config_for, weight_decay_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_TRAIN = 1_281_167

# From the VAR README's training commands (and MVAR's, identical flags plus d12), VAR utils/arg_util.py
# defaults (tblr 1e-4, twd 0.05, tclip 2, wp = ep/50, wp0 0.005, sche lin0, fp16) and the published sizes.
# name: (mixer, depth, batch, epochs, tblr, alng, wpe, twde, attn_l2_norm, params in millions)
OFFICIAL = {
    "var_d16": ("var", 16, 768, 200, 1e-4, 1e-3, 0.1, 0.05, True, 310),
    "var_d20": ("var", 20, 768, 250, 1e-4, 1e-3, 0.1, 0.05, True, 600),
    "var_d24": ("var", 24, 768, 350, 8e-5, 1e-4, 0.01, 0.05, True, 1000),
    "var_d30": ("var", 30, 1024, 350, 8e-5, 1e-5, 0.01, 0.08, True, 2000),
    "mvar_d12": ("mvar", 12, 768, 200, 1e-4, 1e-3, 0.1, 0.05, False, 198),
    "mvar_d16": ("mvar", 16, 768, 200, 1e-4, 1e-3, 0.1, 0.05, False, 464),
    "mvar_d20": ("mvar", 20, 768, 250, 1e-4, 1e-3, 0.1, 0.05, False, 900),
    "mvar_d24": ("mvar", 24, 768, 350, 8e-5, 1e-4, 0.01, 0.05, True, 1500),
}


class OfficialVAE:  # the shapes of vae_ch160v4096z32.pth, all model_config_for needs
    config = type("C", (), {"vocab_size": 4096, "z_channels": 32})()
    patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def test_every_preset_file_is_listed():
    files = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "imagenet")) if f.endswith(".json"))
    assert files == sorted(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_preset_loads_and_matches_the_official_recipe(name):
    mixer, depth, batch, epochs, tblr, alng, wpe, twde, l2, params_m = OFFICIAL[name]
    cfg = TrainConfig.from_dict(read_json(os.path.join(ROOT, "configs", "imagenet", f"{name}.json")))
    assert (cfg.data, cfg.model.num_classes, cfg.val_fraction) == ("imagefolder", 1000, 0.0)
    assert (cfg.model.mixer, cfg.model.depth) == (mixer, depth)
    assert cfg.steps == epochs * math.ceil(IMAGENET_TRAIN / batch) and cfg.batch_size == batch
    assert cfg.lr == pytest.approx(tblr * batch / 256)
    assert (cfg.model.init_adaln_gamma, cfg.final_lr_frac, cfg.model.attn_l2_norm) == (alng, wpe, l2)
    assert (cfg.weight_decay, cfg.betas, cfg.grad_clip, cfg.warmup_frac) == (0.05, (0.9, 0.95), 2.0, 0.02)
    assert (cfg.lr_schedule, cfg.amp, cfg.model.cond_drop, cfg.ema) == ("var", "fp16", 0.1, 0.0)
    assert weight_decay_at(cfg, 0) == 0.05 and weight_decay_at(cfg, cfg.steps - 1) == pytest.approx(twde)
    assert batch % cfg.micro_batch == 0 and cfg.ckpt_every == math.ceil(IMAGENET_TRAIN / batch)
    if mixer == "mvar":
        assert (cfg.model.d_state, cfg.model.mamba_headdim, cfg.model.mvar_gamma3_init) == (64, 64, "official")
    mcfg = model_config_for(cfg, OfficialVAE(), 1000)
    assert mcfg.drop_path == pytest.approx(0.1 * depth / 24) and mcfg.init_adaln_gamma == alng
    with torch.device("meta"):  # shapes only: no memory, no time
        n = sum(p.numel() for p in NextScaleTransformer(mcfg).parameters())
    assert n / 1e6 == pytest.approx(params_m, rel=0.04)


def test_var_lr_schedule_is_lin0():
    cfg = TrainConfig(steps=1021, warmup_frac=0.02, final_lr_frac=0.1, lr_schedule="var")  # warm-up: 20 steps
    f = lr_lambda(cfg)
    assert f(0) == 0.005 and f(10) == pytest.approx(0.005 + 0.995 * 0.5) and f(20) == 1.0
    assert f(20 + 40) == 1.0  # the peak is held for the first 5% after the warm-up
    assert f(1020) == pytest.approx(0.1) and f(520) == pytest.approx(0.1 + 0.9 * 0.5 / 0.95)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        lr_lambda(TrainConfig(lr_schedule="cosine"))
    linear = lr_lambda(TrainConfig(steps=100))  # the default schedule is unchanged
    assert (linear(0), linear(1)) == (0.5, 1.0)
