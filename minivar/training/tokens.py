"""The dataset encoded once by the frozen tokenizer: token indices (N, L), cached in ``tokens.pt``.

Encoding costs more than a training step on a CPU, so the trainer never encodes twice:

    small datasets   loaded into memory, encoded by rank 0, read by the other ranks;
    imagefolder      streamed from disk (ImageNet does not fit in memory): every rank encodes its
                     share of the files (rank r takes rows r, r + W, ...), the shares meet through
                     files beside the cache (the run folder must be on a shared filesystem for
                     multi-node runs), and the indices are kept as int16 (1.7 GB for ImageNet).

Both paths hold out the same seeded split (``data.split_indices``) as ``train-tokenizer``. One view
per image, VAR's centre crop: the official trainer re-encodes a random crop every step instead;
a cache of one view is what makes training affordable, at the price of that augmentation.
"""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from .. import data as datasets
from ..tokenizer.vqvae import VQVAE
from ..checkpoints import CheckpointError, atomic_save, safe_load


@torch.no_grad()
def encode_dataset(vae: VQVAE, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Images (N, 3, S, S) -> token indices (N, L), scales concatenated coarse -> fine."""
    vae.eval()
    out = [torch.cat(vae.encode(images[i:i + batch_size]), 1) for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def _cache_key(cfg) -> dict:
    return {"data": cfg.data, "data_path": cfg.data_path, "tokenizer": os.path.abspath(cfg.tokenizer),
            "tokenizer_mtime": os.path.getmtime(cfg.tokenizer), "val_fraction": cfg.val_fraction,
            "split_seed": cfg.split_seed}


def _cached(cache_path: str, key: dict):
    """The cached tokens when they match ``key``; None when absent, stale or damaged (then they are
    encoded again)."""
    if os.path.exists(cache_path):
        try:
            blob = safe_load(cache_path)
        except CheckpointError as e:
            print(f"{cache_path} is damaged ({e}); encoding the images again", flush=True)
            return None
        if isinstance(blob, dict) and blob.get("key") == key:
            return blob["train"], blob["train_y"], blob["val"], blob["val_y"]
    return None


def load_tokens(cfg, vae: VQVAE, cache_path: str, rank: int = 0, world: int = 1):
    """(train_idx (N, L), train_y, val_idx, val_y), from ``cache_path`` when it matches ``cfg``.

    Call it on every rank of a torch.distributed group (all at once).
    """
    key = _cache_key(cfg)
    if cfg.data == "imagefolder":
        return _cached(cache_path, key) or _encode_folder(cfg, vae, cache_path, key, rank, world)
    tokens = None
    if rank == 0:
        tokens = _cached(cache_path, key)
        if tokens is None:
            (tx, ty), (vx, vy) = datasets.splits(cfg.data, vae.config.image_size, cfg.val_fraction,
                                                 cfg.split_seed, cfg.data_path or None)
            t0 = time.time()
            tokens = encode_dataset(vae, tx), ty, encode_dataset(vae, vx), vy
            print(f"encoded {len(tx) + len(vx)} images once with the frozen tokenizer "
                  f"({time.time() - t0:.1f} s) -> {cache_path}")
            atomic_save({"key": key, "train": tokens[0], "train_y": ty, "val": tokens[2], "val_y": vy}, cache_path)
    if world > 1:
        dist.barrier()
        if rank:
            tokens = _cached(cache_path, key)
    return tokens


@torch.no_grad()
def _encode_share(vae: VQVAE, files, labels, batch_size: int, show: bool) -> torch.Tensor:
    """Token indices (n, L) of image files, streamed through a DataLoader (workers on CUDA machines)."""
    device = next(vae.parameters()).device
    size = vae.config.image_size
    workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    loader = torch.utils.data.DataLoader(datasets.ImageFiles(files, labels, size), batch_size=batch_size,
                                         num_workers=workers, pin_memory=device.type == "cuda")
    dtype = torch.int16 if vae.config.vocab_size <= 2 ** 15 else torch.int32
    vae.eval()
    out, done, t0, next_report = [], 0, time.time(), 0.1
    for x_u8, _ in loader:
        x = x_u8.to(device, non_blocking=True).float() / 127.5 - 1
        out.append(torch.cat(vae.encode(x), 1).to(dtype).cpu())
        done += len(x_u8)
        if show and done >= next_report * len(files):
            rate = done / max(time.time() - t0, 1e-9)
            print(f"  encoded {done}/{len(files)} images on this rank ({rate:.0f} img/s, "
                  f"{(len(files) - done) / rate / 60:.1f} min left)", flush=True)
            next_report += 0.1
    L = sum(p * p for p in vae.patch_nums)
    return torch.cat(out) if out else torch.empty(0, L, dtype=dtype)


def _encode_folder(cfg, vae: VQVAE, cache_path: str, key: dict, rank: int, world: int):
    files, labels = datasets.image_folder_files(cfg.data_path or None)
    tr, va = datasets.split_indices(len(files), cfg.val_fraction, cfg.split_seed)
    order = torch.cat([tr, va])  # training rows first, then the held-out ones
    mine = order[rank::world].tolist()
    if rank == 0:
        print(f"encoding {len(files)} images of {cfg.data_path} once with the frozen tokenizer, "
              f"{world} rank(s) sharing the work -> {cache_path}", flush=True)
    t0 = time.time()
    share = _encode_share(vae, [files[i] for i in mine], [labels[i] for i in mine], 64, show=rank == 0)
    if world > 1:  # every rank gets every share, through files next to the cache
        atomic_save(share, f"{cache_path}.rank{rank}")
        dist.barrier()
        full = torch.empty(len(order), share.shape[1], dtype=share.dtype)
        for r in range(world):
            full[r::world] = safe_load(f"{cache_path}.rank{r}")
    else:
        full = share
    y = torch.tensor(labels)[order]
    n = len(tr)
    tokens = full[:n], y[:n], full[n:], y[n:]
    if rank == 0:
        atomic_save({"key": key, "train": tokens[0], "train_y": tokens[1], "val": tokens[2], "val_y": tokens[3]},
                    cache_path)
        print(f"encoded {len(files)} images in {time.time() - t0:.0f} s", flush=True)
    if world > 1:
        dist.barrier()
        if rank == 0:
            for r in range(world):
                os.remove(f"{cache_path}.rank{r}")
    return tokens
