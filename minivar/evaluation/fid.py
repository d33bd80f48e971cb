"""ImageNet-protocol metrics from npz files: FID, Inception Score, precision / recall.

    python -m minivar fid --samples samples.npz --ref VIRTUAL_imagenet256_labeled.npz \
        --inception pt_inception-2015-12-05-6726825d.pth --out report.json
    python -m minivar reconstruct --tokenizer vae_ch160v4096z32.pth --data imagefolder \
        --data-path imagenet/val --png-dir rec --npz rec.npz --orig-npz val.npz    # then fid: rFID

The files are the ones OpenAI's guided-diffusion evaluator reads (what VAR and M-VAR report):
``arr_0`` uint8 (N, H, W, 3) images, and for the reference batch also ``mu`` / ``sigma`` (statistics
over the whole ImageNet training set). What we compute, following that evaluator:

    FID   Fréchet distance of the samples' pool3 features to the reference ``mu`` / ``sigma``
          (or to the features of the reference's ``arr_0`` images when the file has no statistics);
          from eigenvalues (``metrics.frechet_distance``), not scipy's sqrtm.
    IS    exp(E KL(p(y|x) || p(y))) over ``is_splits`` equal splits (10 x 5,000 at N = 50,000),
          p(y|x) = softmax(pool3 @ fc.weight.T), no bias, as the evaluator; mean (and std).
    P/R   k-NN manifolds (k = 3, Kynkaanniemi et al. 2019) in pool3 features: the reference's
          ``arr_0`` images (10,000) against all samples; unequal N, as the evaluator.

The network is pytorch-fid's port of the same TF Inception graph, with pytorch-fid's resize: the
numbers are close to the TensorFlow evaluator's but not bit-identical -- never mix the two
backends in one table. The report records N, every file's SHA-256 and every setting.
"""
from __future__ import annotations

import json
import os
import time
import zipfile

import numpy as np
import torch

from .. import data, environment, viz
from . import metrics
from .inception import INCEPTION_SHA256_PREFIX, load_inception
from ..loading import load_tokenizer
from ..checkpoints import CheckpointError, sha256_file


class EvalInputError(RuntimeError):
    """A missing or malformed npz / weights file; the message names the fix."""


# ---------------------------------------------------------------------- npz files, streamed
def npz_keys(path: str) -> list[str]:
    if not os.path.exists(path):
        raise EvalInputError(f"{path} does not exist (an npz with arr_0 uint8 (N, H, W, 3); write one with "
                             "`python -m minivar sample ... --npz` or `reconstruct ... --npz`)")
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    except zipfile.BadZipFile:
        raise EvalInputError(f"{path} is not an npz file (not a zip archive)") from None


def iter_npz_images(path: str, batch_size: int = 200):
    """Yield ``arr_0`` in uint8 (b, H, W, 3) batches without loading the whole array (50k x 256^2 x 3 is 9.8 GB)."""
    if "arr_0" not in npz_keys(path):
        raise EvalInputError(f"{path} has no arr_0 (keys: {npz_keys(path)}); it holds no images")
    with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or fortran:
            raise EvalInputError(f"{path}: arr_0 is {dtype} {shape}, expected C-ordered uint8 (N, H, W, 3)")
        per_image = int(np.prod(shape[1:]))
        for start in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - start)
            buf = f.read(n * per_image)
            if len(buf) != n * per_image:
                raise EvalInputError(f"{path} is truncated: arr_0 ends inside image {start + len(buf) // per_image}")
            yield np.frombuffer(buf, np.uint8).reshape(n, *shape[1:])


def npz_stats(path: str):
    """(mu, sigma) stored in a reference batch, or None when it has none."""
    if not {"mu", "sigma"} <= set(npz_keys(path)):
        return None
    with np.load(path) as z:
        return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)


# ---------------------------------------------------------------------- features and metrics
@torch.no_grad()
def inception_outputs(net, batches, device) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC batches -> (pool3 features (N, 2048) float64, unbiased logits (N, 1008) float64)."""
    feats, logits = [], []
    for b in batches:
        x = torch.from_numpy(np.array(b)).to(device).permute(0, 3, 1, 2).float() / 255
        f, lg = net(x)
        feats.append(f.double().cpu())
        logits.append(lg.double().cpu())
    if not feats:
        raise EvalInputError("no images to evaluate (arr_0 is empty)")
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def inception_score(logits_NV, splits: int = 10) -> tuple[float, float]:
    """Inception Score from logits: mean and std over ``splits`` consecutive equal parts."""
    lg = torch.as_tensor(np.asarray(logits_NV), dtype=torch.float64)
    if len(lg) < splits:
        raise ValueError(f"the Inception Score needs at least {splits} images (one per split), got {len(lg)}")
    scores = []
    for part in lg.chunk(splits):
        logp = part.log_softmax(-1)
        logp_y = torch.logsumexp(logp, 0) - np.log(len(part))  # log of the split's mean p(y)
        kl = (logp.exp() * (logp - logp_y)).sum(-1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def _knn_radii(f_ND: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(f_ND[i:i + chunk], f_ND).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(f_ND), chunk)])


def _inside(query_MD, ref_ND, radii_N, chunk: int) -> torch.Tensor:
    """For each query: is it within the k-NN radius of at least one reference point?"""
    return torch.cat([(torch.cdist(query_MD[i:i + chunk], ref_ND) <= radii_N[None]).any(1)
                      for i in range(0, len(query_MD), chunk)])


def manifold_precision_recall(real_ND, fake_MD, k: int = 3, device="cpu", chunk: int = 2048):
    """Precision (fakes inside the real manifold) and recall (reals inside the fake one); N may differ from M."""
    r = torch.as_tensor(np.asarray(real_ND), dtype=torch.float32, device=device)
    f = torch.as_tensor(np.asarray(fake_MD), dtype=torch.float32, device=device)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} images per set")
    rr, rf = _knn_radii(r, k, chunk), _knn_radii(f, k, chunk)
    return _inside(f, r, rr, chunk).double().mean().item(), _inside(r, f, rf, chunk).double().mean().item()


# ---------------------------------------------------------------------- the report
def _file_info(path: str) -> dict:
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def fid_report(samples: str, ref: str, inception: str, out: str | None = None, batch_size: int = 200,
               device=None, is_splits: int = 10, pr_k: int = 3, sha256_prefix=INCEPTION_SHA256_PREFIX,
               net=None) -> dict:
    """FID / IS / precision / recall of ``samples`` against ``ref``; written to ``out`` (JSON) when given.

    ``net`` replaces the weights file (tests use a random-weight network; the report says so).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.time()
    ref_keys = npz_keys(ref)
    npz_keys(samples)
    digest = None
    if net is None:
        try:
            net, digest = load_inception(inception, device, sha256_prefix)
        except CheckpointError as e:
            raise EvalInputError(str(e)) from None
    f_fake, lg_fake = inception_outputs(net, iter_npz_images(samples, batch_size), device)
    if len(f_fake) < max(is_splits, pr_k + 1):
        raise EvalInputError(f"{samples} holds {len(f_fake)} images; FID / IS need many (the protocol: 50,000), "
                             f"at least {max(is_splits, pr_k + 1)}")
    stats = npz_stats(ref)
    f_ref = None
    if "arr_0" in ref_keys:
        f_ref, _ = inception_outputs(net, iter_npz_images(ref, batch_size), device)
    if stats is None and f_ref is None:
        raise EvalInputError(f"{ref} has neither mu/sigma nor arr_0 images (keys {ref_keys}): it is not a "
                             "reference batch (expected e.g. VIRTUAL_imagenet256_labeled.npz)")
    ref_source = "mu/sigma stored in the reference npz" if stats else "pool3 features of the reference's arr_0"
    mu_r, sig_r = stats if stats else metrics.feature_stats(f_ref)
    if mu_r.shape != (f_fake.shape[1],):
        raise EvalInputError(f"{ref}: mu has shape {mu_r.shape}, expected ({f_fake.shape[1]},) pool3 statistics")
    report = {
        "N": len(f_fake),
        "fid": metrics.frechet_distance(*metrics.feature_stats(f_fake), mu_r, sig_r),
        "inception_score": dict(zip(("mean", "std"), inception_score(lg_fake, is_splits))),
        "reference_stats": ref_source,
        "N_ref_images": None if f_ref is None else len(f_ref),
    }
    if f_ref is not None and len(f_ref) > pr_k:
        report["precision"], report["recall"] = manifold_precision_recall(f_ref, f_fake, pr_k, device)
    report["files"] = {"samples": _file_info(samples), "ref": _file_info(ref),
                       "inception": _file_info(inception) if digest else "random weights (test only)"}
    side = os.path.splitext(samples)[0] + ".json"  # written by `sample --npz`: the sampling settings
    if os.path.exists(side):
        with open(side) as f:
            report["sampling"] = json.load(f)
    report["settings"] = {
        "network": "FID Inception-v3 (TF 2015-12-05 graph, pytorch-fid port), minivar.evaluation.inception",
        "resize": "bilinear to 299x299, align_corners=False (pytorch-fid), then [-1, 1]",
        "is": f"softmax(pool3 @ fc.weight.T) without bias, {is_splits} splits", "pr_k": pr_k,
        "pr_sets": "reference arr_0 vs all samples", "fid_math": "eigenvalues (minivar.evaluation.metrics.frechet_distance)",
        "batch_size": batch_size, "device": str(device), "environment": environment.record(),
        "backend_note": "PyTorch port: close to, not identical with, OpenAI's TensorFlow evaluator"}
    report["seconds"] = time.time() - t0
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=1)
    return report


def run_fid(args) -> dict:
    """The ``fid`` CLI verb."""
    r = fid_report(args.samples, args.ref, args.inception, args.out, args.batch_size, args.device)
    pr = f", precision {r['precision']:.3f}, recall {r['recall']:.3f}" if "precision" in r else ""
    print(f"N = {r['N']}: FID {r['fid']:.3f}, IS {r['inception_score']['mean']:.1f} "
          f"± {r['inception_score']['std']:.1f}{pr} (reference: {r['reference_stats']}; "
          f"{r['seconds']:.0f} s)" + (f"; report -> {args.out}" if args.out else ""))
    return r


# ---------------------------------------------------------------------- rFID: tokenizer reconstructions
@torch.no_grad()
def reconstruct(args) -> dict:
    """Tokenizer reconstructions of an image folder (rFID: ImageNet val, VAR's 256 centre crop).

    Writes ``{i:06d}.png`` per image to ``png_dir`` (+ the ``arr_0`` npz), and with ``orig_npz``
    the centre-cropped originals, so that ``fid --samples REC.npz --ref ORIG.npz`` gives the rFID.
    """
    from PIL import Image
    try:
        vae = load_tokenizer(args.tokenizer)
    except CheckpointError as e:
        raise EvalInputError(str(e)) from None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae = vae.to(device)
    files, labels = data.image_folder_files(args.data_path, args.limit)
    loader = torch.utils.data.DataLoader(data.ImageFiles(files, labels, vae.config.image_size),
                                         batch_size=args.batch_size,
                                         num_workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 0)
    os.makedirs(args.png_dir, exist_ok=True)
    origs, se, n, t0 = [], 0.0, 0, time.time()
    for x_u8, _ in loader:
        x = x_u8.to(device).float() / 127.5 - 1
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
        se += ((rec - x) ** 2).mean((1, 2, 3)).add(1e-12).log10().sum().item()  # for the mean PSNR
        for im in viz.to_uint8(rec):
            Image.fromarray(im).save(os.path.join(args.png_dir, f"{n:06d}.png"))
            n += 1
        if args.orig_npz:
            origs.append(x_u8.permute(0, 2, 3, 1).numpy())
    report = {"N": n, "psnr_db": 10 * np.log10(4.0) - 10 * se / n, "tokenizer": os.path.abspath(args.tokenizer),
              "data": os.path.abspath(args.data_path), "preprocess": "VAR: shorter side 1.125x (Lanczos), centre crop",
              "seconds": time.time() - t0, "environment": environment.record()}
    if args.npz:
        pack_npz(args.png_dir, args.npz)
    if args.orig_npz:
        pack_npz(np.concatenate(origs), args.orig_npz)
    with open(os.path.join(args.png_dir, "reconstruct.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"reconstructed {n} images of {args.data_path}: PSNR {report['psnr_db']:.2f} dB ({report['seconds']:.0f} s); "
          f"rFID: python -m minivar fid --samples {args.npz or 'REC.npz'} --ref {args.orig_npz or 'ORIG.npz'} ...")
    return report


def pack_npz(images, path: str) -> tuple:
    """Write the ``arr_0`` uint8 (N, H, W, 3) npz read by OpenAI's evaluator; images: array or PNG folder."""
    if isinstance(images, str):
        from PIL import Image
        files = sorted(f for f in os.listdir(images) if f.lower().endswith(".png"))
        if not files:
            raise FileNotFoundError(f"no .png files in {images}")
        images = np.stack([np.asarray(Image.open(os.path.join(images, f)).convert("RGB")) for f in files])
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    tmp = path + ".tmp.npz"
    np.savez(tmp, arr_0=arr)
    os.replace(tmp, path)
    return arr.shape


def reference_stats(npz_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a reference batch such as VIRTUAL_imagenet256_labeled.npz (keys ``mu``, ``sigma``)."""
    if not os.path.exists(npz_path):
        raise FileNotFoundError(f"reference batch {npz_path} not found; supply VIRTUAL_imagenet256_labeled.npz "
                                "(OpenAI guided-diffusion evaluations); nothing is downloaded")
    with np.load(npz_path) as z:
        missing = {"mu", "sigma"} - set(z.files)
        if missing:
            raise ValueError(f"{npz_path} lacks {sorted(missing)} (has {z.files}); it is not a reference batch")
        return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
