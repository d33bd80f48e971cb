"""Where a verb's model comes from: a run folder (``--run``), a save_pretrained folder or model
file (``--model``), or an official checkpoint (``--official``); and ``export``, which turns a run
into save_pretrained folders for others to use."""
from __future__ import annotations

import os

import torch

from .. import config, official
from ..checkpoints import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, is_pretrained, sha256_file
from ..loading import load_model, load_tokenizer, tokenizer_of
from ..training.recipe import TrainConfig
from ..training.trainer import checkpoint_paths

class RunError(RuntimeError):
    """A bad input to a run (missing file, impossible setting); nothing has been written."""


# what evaluation needs of the training data, kept in an exported model's config.json
TRAINING_DATA = ("data", "data_path", "val_fraction", "split_seed")


def _what_folder(path: str) -> str:
    """What a folder that was given as the wrong kind holds, as advice (or "")."""
    if is_pretrained(path):
        return f"{path} is a save_pretrained folder: pass it as --model"
    if os.path.isfile(os.path.join(path, "config.json")):
        kind = config.read_json(os.path.join(path, "config.json")).get("kind")
        if kind == "train":
            return f"{path} is a run folder: pass it as --run"
        if kind == "train-tokenizer":
            return f"{path} is a tokenizer run: its tokenizer is {os.path.join(path, 'tokenizer.pt')}"
    subs = sorted(d for d in os.listdir(path) if is_pretrained(os.path.join(path, d))) if os.path.isdir(path) else []
    if subs:
        return f"{path} holds the save_pretrained folders {', '.join(subs)}: pass one of them"
    return ""


def _load_run(run: str, checkpoint: str | None, tokenizer: str | None = None):
    """(TrainConfig, model, tokenizer, model path, tokenizer path) of a run folder; ``tokenizer``
    replaces the one the run names."""
    cfg_path = os.path.join(run, "config.json")
    hint = _what_folder(run) if os.path.isdir(run) else ""
    if is_pretrained(run) or not os.path.isfile(cfg_path):
        raise RunError(hint or f"{run} is not a run folder (no config.json); train one with `minivar train`")
    stored = config.read_json(cfg_path)
    if stored.get("kind") != "train":
        raise RunError(hint or f"{run} holds a {stored.get('kind')} run, not a transformer run")
    tcfg = TrainConfig.from_dict(stored["train"])
    path = checkpoint or os.path.join(run, "model.pt")
    if not os.path.exists(path):
        ck = checkpoint_paths(run)
        if checkpoint or not ck:
            raise RunError(f"--checkpoint {checkpoint} does not exist" if checkpoint else
                           f"{run} has no model.pt and no checkpoint yet")
        path = ck[-1]
    tokenizer = tokenizer or tcfg.tokenizer
    try:
        return tcfg, load_model(path), load_tokenizer(tokenizer).eval(), path, tokenizer
    except CheckpointError as e:
        raise RunError(str(e)) from None


def _load_pretrained(path: str, tokenizer: str | None):
    """(model, tokenizer, tokenizer path) of a save_pretrained folder or model.pt; the tokenizer
    is ``tokenizer`` or the one the model names."""
    if os.path.isdir(path) and not is_pretrained(path):
        raise RunError(_what_folder(path) or f"{path} is not a save_pretrained folder (config.json + "
                       "model.safetensors)")
    try:
        model = load_model(path)
        tokenizer = tokenizer or tokenizer_of(path)
        if not tokenizer:
            raise RunError(f"{path} names no tokenizer; pass --tokenizer")
        return model, load_tokenizer(tokenizer), tokenizer
    except CheckpointError as e:
        raise RunError(str(e)) from None


def check_pair(model, vae, tokenizer: str) -> None:
    """The tokenizer must be the kind the model was trained on (codebook, vector width, scales)."""
    mc, tc = model.config, vae.config
    got = (tc.vocab_size, tc.z_channels, tuple(vae.patch_nums))
    want = (mc.vocab_size, mc.z_channels, tuple(mc.patch_nums))
    if got != want:
        raise RunError(f"tokenizer {tokenizer} (V={got[0]}, Cv={got[1]}, scales {got[2]}) does not fit the model "
                       f"(V={want[0]}, Cv={want[1]}, scales {want[2]}); pass the tokenizer it was trained with")


def _load_official(path: str, tokenizer: str | None):
    """An official VAR / M-VAR checkpoint (kind read off its keys) and its tokenizer."""
    if not tokenizer:
        raise RunError("--official needs --tokenizer (the official vae_ch160v4096z32.pth)")
    try:
        vae = load_tokenizer(tokenizer)
        return official.load_transformer(path, vae=vae), vae
    except CheckpointError as e:
        raise RunError(str(e)) from None


def load_for_sampling(args):
    """(model, tokenizer, {"model": path, "tokenizer": path}) from exactly one of --run, --model,
    --official."""
    sources = [o for o in ("run", "model", "official") if hasattr(args, o)]
    given = [o for o in sources if getattr(args, o)]
    if len(given) != 1:
        names = ["--run RUN_FOLDER", "--model PRETRAINED_FOLDER", "--official CHECKPOINT --tokenizer TOKENIZER"]
        raise RunError(f"pass one of {', or '.join(names[:len(sources)])} (got "
                       f"{', '.join('--' + g for g in given) or 'none'})")
    if args.checkpoint and not args.run:
        raise RunError("--checkpoint goes with --run (it picks a model file of the run folder)")
    if args.run:
        _, model, vae, path, tok = _load_run(args.run, args.checkpoint, args.tokenizer)
        files = {"model": path, "tokenizer": tok}
    elif args.model:
        model, vae, tok = _load_pretrained(args.model, args.tokenizer)
        files = {"model": args.model, "tokenizer": tok}
    else:
        model, vae = _load_official(args.official, args.tokenizer)
        files = {"model": args.official, "tokenizer": args.tokenizer}
    check_pair(model, vae, files["tokenizer"])
    return model, vae, files


def file_info(path: str) -> dict:
    """Path and SHA-256 of a weights file (of a save_pretrained folder: of its model.safetensors)."""
    f = os.path.join(path, WEIGHTS_FILE) if is_pretrained(path) else path
    return {"path": os.path.abspath(path), "sha256": sha256_file(f)}


def data_of(args) -> dict:
    """What evaluation needs to know of the training data (name, folder, held-out split): from the
    run's config, or from a save_pretrained folder's ``training`` entry."""
    if args.run:
        tcfg = TrainConfig.from_dict(config.read_json(os.path.join(args.run, "config.json"))["train"])
        return {k: getattr(tcfg, k) for k in TRAINING_DATA}
    meta = config.read_json(os.path.join(args.model, CONFIG_FILE)) if is_pretrained(args.model) else {}
    if not isinstance(meta.get("training"), dict) or set(meta["training"]) != set(TRAINING_DATA):
        raise RunError(f"{args.model} does not say which data it was trained on (a folder written by `export` "
                       "does); evaluate its run folder with --run instead")
    return meta["training"]


# ---------------------------------------------------------------------- export
def export(args) -> str:
    """A run's model and tokenizer as save_pretrained folders: OUT/tokenizer and OUT/NAME, the model's
    config naming ../tokenizer and the data it was trained on."""
    tcfg, model, vae, _, _ = _load_run(args.run, args.checkpoint)
    tok_dir, model_dir = os.path.join(args.out, "tokenizer"), os.path.join(args.out, args.name or tcfg.model.mixer)
    if os.path.exists(model_dir):
        raise RunError(f"{model_dir} already exists; pass another --name or --out (export never replaces a folder)")
    if is_pretrained(tok_dir):
        have = load_tokenizer(tok_dir).state_dict()
        if any(not torch.equal(v, have[k]) for k, v in vae.state_dict().items()):
            raise RunError(f"{tok_dir} holds another tokenizer; export to another --out")
    else:
        vae.save_pretrained(tok_dir)
    model.save_pretrained(model_dir, tokenizer=tok_dir, training={k: getattr(tcfg, k) for k in TRAINING_DATA})
    print(f"wrote {model_dir} and {tok_dir} (config.json + model.safetensors); sample with "
          f"`minivar sample --model {model_dir}`")
    return model_dir
