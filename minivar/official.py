"""Loading the official checkpoints (FoundationVision/VAR, and later M-VAR) into minivar models.

The official files are plain state dicts. Our module names follow theirs, except the phi convs
(theirs: ``quantize.quant_resi.qresi_ls.{i}`` for 4 partially shared convs, ``quant_resi.qresi``
for one shared conv, ``quant_resi.{i}`` for one per scale; ours: ``quantize.phis.{i}``). Their
``quantize.ema_vocab_hit_SV`` is a training statistic that we do not keep. Nothing here downloads
anything: the user supplies the files.
"""
from __future__ import annotations

import re

import torch

from . import scales
from .tokenizer import VQVAE, CheckpointError, TokenizerConfig, safe_load

_PHI_OFFICIAL = [  # (pattern in official keys, our replacement)
    (re.compile(r"^quantize\.quant_resi\.qresi_ls\.(\d+)\."), r"quantize.phis.\1."),
    (re.compile(r"^quantize\.quant_resi\.qresi\."), "quantize.phis.0."),
    (re.compile(r"^quantize\.quant_resi\.(\d+)\."), r"quantize.phis.\1."),
]
_DROPPED = ("quantize.ema_vocab_hit_SV",)


def _as_state_dict(path_or_state_dict) -> dict:
    sd = path_or_state_dict
    if isinstance(sd, (str, bytes)) or hasattr(sd, "__fspath__"):
        sd = safe_load(sd)
    if not isinstance(sd, dict):
        raise CheckpointError(f"expected a state dict, got {type(sd).__name__}")
    for wrapper in ("state_dict", "model", "trainer"):  # tolerate one level of wrapping
        if wrapper in sd and isinstance(sd[wrapper], dict) and not torch.is_tensor(sd[wrapper]):
            sd = sd[wrapper]
    return sd


def _report(what: str, missing, unexpected, misshaped) -> str:
    def few(xs):
        xs = list(xs)
        return ", ".join(xs[:8]) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")
    lines = [f"the state dict does not fit {what}:"]
    if missing:
        lines.append(f"  missing keys: {few(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys: {few(unexpected)}")
    if misshaped:
        lines.append("  mis-shaped: " + few(f"{k} file {tuple(a)} vs model {tuple(b)}" for k, a, b in misshaped))
    return "\n".join(lines)


def strict_load(model: torch.nn.Module, sd: dict, what: str) -> None:
    """load_state_dict(strict) with one readable CheckpointError listing every mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    misshaped = [(k, sd[k].shape, own[k].shape) for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        raise CheckpointError(_report(what, missing, unexpected, misshaped))
    model.load_state_dict(sd, strict=True)


# ---------------------------------------------------------------------------- tokenizer
def vae_state_dict_from_official(sd: dict) -> dict:
    """Rename official tokenizer keys to ours and drop training statistics."""
    out = {}
    for k, v in sd.items():
        if k in _DROPPED:
            continue
        for pat, rep in _PHI_OFFICIAL:
            if pat.match(k):
                k = pat.sub(rep, k)
                break
        out[k] = v
    return out


def vae_state_dict_to_official(vae: VQVAE) -> dict:
    """Our tokenizer's weights under the official key names (for the official code or a round trip)."""
    n, K = len(vae.quantize.phis), len(vae.patch_nums)
    per_scale = vae.config.num_phi == 0
    out = {}
    for k, v in vae.state_dict().items():
        m = re.match(r"^quantize\.phis\.(\d+)\.(.*)$", k)
        if m:
            i, rest = m.groups()
            k = (f"quantize.quant_resi.{i}.{rest}" if per_scale else
                 f"quantize.quant_resi.qresi.{rest}" if n == 1 else
                 f"quantize.quant_resi.qresi_ls.{i}.{rest}")
        out[k] = v
    out["quantize.ema_vocab_hit_SV"] = torch.zeros(K, vae.config.vocab_size)
    return out


def infer_vae_config(sd: dict, patch_nums=None, norm_groups: int = 32) -> TokenizerConfig:
    """Read the architecture off an official tokenizer state dict (any width / depth / codebook)."""
    if any(k.startswith(("blocks.", "class_emb", "word_embed")) for k in sd):
        raise CheckpointError("this is a VAR / M-VAR transformer checkpoint, not a tokenizer; "
                              "pass the tokenizer file (vae_ch160v4096z32.pth) to load_vae")
    need = ["encoder.conv_in.weight", "quant_conv.weight", "quantize.embedding.weight"]
    if any(k not in sd for k in need):
        raise CheckpointError(_report("a VAR tokenizer", [k for k in need if k not in sd], [], []) +
                              "\n  (is this a VAR tokenizer file at all?)")
    ch = sd["encoder.conv_in.weight"].shape[0]
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"^encoder\.down\.(\d+)\.", k))})
    ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels)
    n_blocks = len({m.group(1) for k in sd if (m := re.match(r"^encoder\.down\.0\.block\.(\d+)\.", k))})
    attn_lowest = any(k.startswith(f"encoder.down.{levels[-1]}.attn.") for k in sd)
    attn_mid = "encoder.mid.attn_1.qkv.weight" in sd
    z, ks = sd["quant_conv.weight"].shape[0], sd["quant_conv.weight"].shape[-1]
    vocab = sd["quantize.embedding.weight"].shape[0]
    if any(k.startswith("quantize.quant_resi.qresi_ls.") for k in sd):
        num_phi = len({k.split(".")[3] for k in sd if k.startswith("quantize.quant_resi.qresi_ls.")})
    elif any(k.startswith("quantize.quant_resi.qresi.") for k in sd):
        num_phi = 1
    else:
        num_phi = 0
    pns = scales.get_schedule(patch_nums if patch_nums is not None else "256")
    if num_phi == 0:
        n_file = len({k.split(".")[2] for k in sd if re.match(r"^quantize\.quant_resi\.\d+\.", k)})
        if n_file != len(pns):
            raise CheckpointError(f"the file has one phi per scale for {n_file} scales, but the schedule "
                                  f"{pns} has {len(pns)}: pass patch_nums with {n_file} scales")
    down = 2 ** (len(ch_mult) - 1)
    return TokenizerConfig(image_size=pns[-1] * down, ch=ch, ch_mult=ch_mult, num_res_blocks=n_blocks,
                           attn_lowest=attn_lowest, attn_mid=attn_mid, norm_groups=norm_groups,
                           z_channels=z, vocab_size=vocab, patch_nums=pns, num_phi=num_phi,
                           quant_conv_ks=ks)


def load_vae(path_or_state_dict, patch_nums=None, norm_groups: int = 32) -> VQVAE:
    """Official VAR tokenizer (e.g. ``vae_ch160v4096z32.pth``) -> minivar ``VQVAE`` in eval mode.

    The architecture is inferred from the state dict; ``patch_nums`` defaults to the 256 px
    schedule (the same file serves 512 px with the '512' schedule). Keys are checked strictly and
    every mismatch is reported at once.
    """
    sd = _as_state_dict(path_or_state_dict)
    if sd.get("kind") == "minivar-tokenizer":
        raise CheckpointError("this is a minivar tokenizer file; load it with minivar.tokenizer.VQVAE.load")
    cfg = infer_vae_config(sd, patch_nums, norm_groups)
    vae = VQVAE(cfg)
    strict_load(vae, vae_state_dict_from_official(sd), "the VAR tokenizer architecture inferred from it")
    return vae.eval().requires_grad_(False)
