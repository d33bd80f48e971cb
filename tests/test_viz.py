"""The notebooks' pictures compute what they claim: the influence map is blank exactly where the
mask and the scan forbid a dependence, and the generation viewer's last frame is the sample."""
import torch

from minivar import scales, viz
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE


def tiny(mixer):
    torch.manual_seed(0)
    cfg = ModelConfig(mixer=mixer, depth=2, width=32, heads=2, num_classes=3, vocab_size=256, z_channels=16,
                      patch_nums=(1, 2, 3, 4), d_state=8, mamba_headdim=16, mamba_chunk=8, drop_path=0.0,
                      attn_backend="blocks")
    m = NextScaleTransformer(cfg)
    with torch.no_grad():  # open the AdaLN gates (near 0 at init) so every path carries signal
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


def test_influence_is_blank_exactly_above_the_scale_staircase():
    pns = (1, 2, 3, 4)
    sid = scales.scale_ids(pns)
    finer = sid[1:][None, :] > sid[:, None]
    x = torch.randn(2, scales.num_tokens(pns) - 1, 16)
    for mixer in ("var", "mvar"):
        m = viz.influence(tiny(mixer), torch.tensor([0, 1]), x)
        assert m.shape == (scales.num_tokens(pns), scales.num_tokens(pns) - 1)
        zero = m <= m.max() * 1e-9
        assert zero[finer].all() and not zero[~finer].any(), mixer


def test_generation_steps_end_in_the_sample_and_follow_the_cfg_ramp():
    torch.manual_seed(0)
    vae = VQVAE(TOKENIZER_PRESETS["tiny16"]).eval()
    model = tiny("var")
    labels = torch.tensor([0, 2])
    steps = viz.generation_steps(model, vae, labels, cfg=2.0, seed=1, top_k=0, top_p=0.0)
    with torch.no_grad():
        img = model.generate(labels, cfg=2.0, seed=1, vae=vae, top_k=0, top_p=0.0)
    assert [s["t"] for s in steps] == [0.0, 2 / 3, 4 / 3, 2.0]
    assert [tuple(s["tokens"].shape) for s in steps] == [(2, p, p) for p in (1, 2, 3, 4)]
    assert torch.allclose(steps[-1]["image"], img, atol=1e-5)
    html = viz.animate_generation(steps, vae.config.vocab_size)
    assert "<script" in html and len(html) < 300_000
