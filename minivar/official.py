"""The official checkpoint formats (FoundationVision/VAR and M-VAR) <-> minivar models.

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
from .tokenizer.vqvae import VQVAE, TokenizerConfig
from .checkpoints import CheckpointError, safe_load

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
        raise CheckpointError("this is a minivar tokenizer file; load it with minivar.loading.load_tokenizer")
    cfg = infer_vae_config(sd, patch_nums, norm_groups)
    vae = VQVAE(cfg)
    strict_load(vae, vae_state_dict_from_official(sd), "the VAR tokenizer architecture inferred from it")
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------- transformers
# derived buffers the official files carry; we rebuild them from the schedule
_TRANSFORMER_BUFFERS = re.compile(r"^(lvl_1L|attn_bias_for_masking|blocks\.\d+\.attn\.(zero_k_bias|patch_nums))$")


def _schedule_from_lvl(sd: dict):
    """Token count per level in the ``lvl_1L`` buffer -> side lengths (count = pn^2)."""
    if "lvl_1L" not in sd:
        return None
    counts = torch.bincount(sd["lvl_1L"].flatten().long()).tolist()
    pns = tuple(int(round(c ** 0.5)) for c in counts)
    if any(p * p != c for p, c in zip(pns, counts)):
        raise CheckpointError(f"lvl_1L holds non-square token counts {counts}")
    return pns


def infer_model_config(sd: dict, patch_nums=None, heads=None):
    """Read a VAR / M-VAR architecture off an official state dict."""
    from .models.transformer import ModelConfig
    if "encoder.conv_in.weight" in sd:
        raise CheckpointError("this is a tokenizer checkpoint; load it with minivar.official.load_vae")
    need = ["word_embed.weight", "class_emb.weight", "pos_1LC", "head.weight", "blocks.0.ada_lin.1.weight"]
    if any(k not in sd for k in need):
        if any(k.startswith("blocks.0.ada_gss") for k in sd) or "shared_ada_lin.1.weight" in sd:
            raise CheckpointError("shared-AdaLN checkpoints (VAR-d36-s) are not supported")
        raise CheckpointError(_report("a VAR / M-VAR transformer", [k for k in need if k not in sd], [], []))
    C, Cv = sd["word_embed.weight"].shape
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k))})
    mixer = "mvar" if any(".mamba." in k for k in sd) else "var"
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    if l2:
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1]
    elif heads is None:
        heads = max(1, C // 64)  # not stored without attn_l2_norm: the size rule (head dim 64)
    pns = _schedule_from_lvl(sd) or (tuple(patch_nums) if patch_nums is not None else None)
    if pns is None:
        raise CheckpointError("the file has no lvl_1L buffer: pass patch_nums (or vae=) to say its schedule")
    if patch_nums is not None and tuple(patch_nums) != pns:
        raise CheckpointError(f"the file was trained with schedule {pns}, not {tuple(patch_nums)}")
    L = sd["pos_1LC"].shape[1]
    if sum(p * p for p in pns) != L:
        raise CheckpointError(f"schedule {pns} has {sum(p * p for p in pns)} tokens but pos_1LC has {L}")
    kw = dict(mixer=mixer, depth=depth, width=C, heads=heads, num_classes=sd["class_emb.weight"].shape[0] - 1,
              vocab_size=sd["head.weight"].shape[0], z_channels=Cv, patch_nums=pns, attn_l2_norm=l2,
              mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / C, drop_path=0.0)
    if mixer == "mvar":
        d_inner = sd["blocks.0.mamba.out_proj.weight"].shape[1]
        nheads = sd["blocks.0.mamba.A_log"].shape[0]
        conv_dim, _, d_conv = sd["blocks.0.mamba.conv1d.weight"].shape
        kw.update(d_state=(conv_dim - d_inner) // 2, d_conv=d_conv, expand=d_inner // C,
                  mamba_headdim=d_inner // nheads)
    return ModelConfig(**kw)


def _load_transformer(path_or_state_dict, vae, patch_nums, want: str, heads=None):
    from .models.transformer import NextScaleTransformer
    sd = _as_state_dict(path_or_state_dict)
    pn = patch_nums if patch_nums is not None else (vae.patch_nums if vae is not None and "lvl_1L" not in sd else None)
    cfg = infer_model_config(sd, pn, heads)
    if cfg.mixer != want:
        right = {"var": "load_var", "mvar": "load_mvar"}[cfg.mixer]
        raise CheckpointError(f"this is a{'n M-VAR' if cfg.mixer == 'mvar' else ' VAR'} checkpoint; "
                              f"load it with minivar.official.{right}")
    model = NextScaleTransformer(cfg)
    ours = {k: v for k, v in sd.items() if not _TRANSFORMER_BUFFERS.match(k)}
    strict_load(model, ours, f"the {want.upper()} architecture inferred from it")
    if vae is not None:
        model.attach_tokenizer(vae)
    return model.eval()


def load_var(path_or_state_dict, vae=None, patch_nums=None, heads=None):
    """Official VAR checkpoint (``var_d16.pth`` ... ``var_d30.pth``) -> ``NextScaleTransformer`` (eval).

    Depth, width, heads, ``attn_l2_norm``, classes and the schedule (from the ``lvl_1L`` buffer)
    are inferred; keys are checked strictly. ``vae`` (from ``load_vae``) is attached for generate().
    Files without ``attn_l2_norm`` do not store the head count: the size rule (head dim 64) is
    assumed unless ``heads`` is given.
    """
    return _load_transformer(path_or_state_dict, vae, patch_nums, "var", heads)


def load_mvar(path_or_state_dict, vae=None, patch_nums=None, heads=None):
    """Official M-VAR checkpoint (``d16.pth`` ... ``d32.pth``) -> ``NextScaleTransformer`` (eval)."""
    return _load_transformer(path_or_state_dict, vae, patch_nums, "mvar", heads)


def load_transformer(path_or_state_dict, vae=None, patch_nums=None, heads=None):
    """An official VAR or M-VAR checkpoint, the kind read off its keys (M-VAR blocks hold ``.mamba.``)."""
    sd = _as_state_dict(path_or_state_dict)
    load = load_mvar if any(".mamba." in k for k in sd) else load_var
    return load(sd, vae=vae, patch_nums=patch_nums, heads=heads)


def model_state_dict_to_official(model) -> dict:
    """Our transformer's weights under official names, with the derived buffers the official code keeps."""
    sd = dict(model.state_dict())
    pns, C = model.config.patch_nums, model.config.width
    ids = scales.scale_ids(pns)
    sd["lvl_1L"] = ids[None].clone()
    sd["attn_bias_for_masking"] = scales.mask_to_bias(
        scales.block_causal_mask(pns) if model.config.mixer == "var" else scales.block_diagonal_mask(pns))[None, None]
    for i in range(model.config.depth):
        sd[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(C)
    return sd
