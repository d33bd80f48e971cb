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


def _load_run(run: str, checkpoint: str | None):
    """(TrainConfig, model, tokenizer, model path, tokenizer path) of a run folder."""
    cfg_path = os.path.join(run, "config.json")
    if not os.path.exists(cfg_path):
        raise RunError(f"{run} is not a run folder (no config.json); train one with `minivar train`")
    stored = config.read_json(cfg_path)
    if stored.get("kind") != "train":
        raise RunError(f"{run} holds a {stored.get('kind')} run, not a transformer run")
    tcfg = TrainConfig.from_dict(stored["train"])
    path = checkpoint or os.path.join(run, "model.pt")
    if not os.path.exists(path):
        ck = checkpoint_paths(run)
        if not ck:
            raise RunError(f"{run} has no model.pt and no checkpoint yet")
        path = ck[-1]
    try:
        return tcfg, load_model(path), load_tokenizer(tcfg.tokenizer).eval(), path, tcfg.tokenizer
    except CheckpointError as e:
        raise RunError(str(e)) from None


def _load_pretrained(path: str, tokenizer: str | None):
    """(model, tokenizer, tokenizer path) of a save_pretrained folder or model.pt; the tokenizer
    is ``tokenizer`` or the one the model names."""
    try:
        tokenizer = tokenizer or tokenizer_of(path)
        if not tokenizer:
            raise RunError(f"{path} names no tokenizer; pass --tokenizer")
        return load_model(path), load_tokenizer(tokenizer), tokenizer
    except CheckpointError as e:
        raise RunError(str(e)) from None


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
    given = [o for o in ("run", "model", "official") if getattr(args, o, None)]
    if len(given) != 1:
        raise RunError("pass one of --run RUN_FOLDER, --model PRETRAINED_FOLDER, or --official CHECKPOINT "
                       f"--tokenizer TOKENIZER (got {', '.join('--' + g for g in given) or 'none'})")
    if args.run:
        _, model, vae, path, tok = _load_run(args.run, args.checkpoint)
        return model, vae, {"model": path, "tokenizer": tok}
    if args.model:
        model, vae, tok = _load_pretrained(args.model, args.tokenizer)
        return model, vae, {"model": args.model, "tokenizer": tok}
    model, vae = _load_official(args.official, args.tokenizer)
    return model, vae, {"model": args.official, "tokenizer": args.tokenizer}


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
        raise RunError(f"{args.model} does not say which data it was trained on (its config.json has no "
                       "'training' entry); evaluate its run folder with --run instead")
    return meta["training"]


# ---------------------------------------------------------------------- export
def export(args) -> str:
    """A run's model and tokenizer as save_pretrained folders: OUT/tokenizer and OUT/NAME, the model's
    config naming ../tokenizer and the data it was trained on."""
    tcfg, model, vae, _, _ = _load_run(args.run, args.checkpoint)
    tok_dir, model_dir = os.path.join(args.out, "tokenizer"), os.path.join(args.out, args.name or tcfg.model.mixer)
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
