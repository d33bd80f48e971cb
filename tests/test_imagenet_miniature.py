"""The ImageNet-256 path in miniature, on CPU: an ImageFolder of generated PNGs -> tokenizer -> an
ImageNet preset (shrunk by overrides) trained a few steps on the streamed folder -> 50-per-class style
sampling to PNGs + npz -> tokenizer reconstructions (rFID inputs) -> FID / IS / precision / recall with
a random-weight Inception (the real weights cannot be downloaded here)."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from minivar import data
from minivar.evaluation import fid, inception
from minivar.cli.main import main
from minivar.checkpoints import sha256_file
from minivar.loading import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("n0300", "n0100", "n0200")  # sorted order gives the labels, as torchvision's ImageFolder


def write_folder(root, per_class=6):
    """Coloured shapes, class = shape, saved at mixed non-square sizes (VAR's resize + centre crop)."""
    x, y = data.synthetic(n=120, size=24, num_classes=3, seed=1)
    u8 = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for c, name in enumerate(sorted(CLASSES)):
        os.makedirs(os.path.join(root, name))
        for i, im in enumerate(u8[(y == c).numpy()][:per_class]):
            Image.fromarray(im).resize((24 + 4 * (i % 3), 24)).save(os.path.join(root, name, f"img_{i}.png"))
    return per_class * len(CLASSES)


def random_inception():
    torch.manual_seed(0)
    net = inception.FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.eval().requires_grad_(False)


def test_imagenet_path_in_miniature(tmp_path, capsys, monkeypatch):
    train_dir = str(tmp_path / "train")
    n_images = write_folder(train_dir)
    tok, run = str(tmp_path / "tok"), str(tmp_path / "run")

    main(["train-tokenizer", "--data", "imagefolder", "--data-path", train_dir, "--preset", "tiny16",
          "--steps", "4", "--batch-size", "8", "--out", tok, "--quiet"])
    # the M-VAR-d16 recipe file, shrunk to a toy model: the preset's schedule, AdaLN init, fp16 setting
    # (off on CPU), gamma3 init and attn_l2_norm=False all go through the real trainer
    main(["train", "--out", run, "--config", os.path.join(ROOT, "configs", "imagenet", "mvar_d16.json"),
          "--tokenizer", os.path.join(tok, "tokenizer.pt"), "--data_path", train_dir, "--num_classes", "0",
          "--depth", "1", "--width", "32", "--heads", "2", "--d_state", "8", "--mamba_headdim", "16",
          "--steps", "3", "--batch_size", "6", "--micro_batch", "3", "--log_every", "1", "--ckpt_every", "3"])
    out = capsys.readouterr().out
    assert "step 3/3" in out and "img/s" in out and "ETA" in out  # plain progress lines off a TTY
    recs = [json.loads(r) for r in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == [1, 2, 3] and all(r["img_per_s"] > 0 and "eta_s" in r for r in recs)
    assert recs[-1]["eta_s"] == 0 and np.isfinite(recs[-1]["loss"])
    cached = torch.load(os.path.join(run, "tokens.pt"), weights_only=True)
    assert cached["train"].dtype == torch.int16 and len(cached["train"]) == n_images  # val_fraction 0
    assert cached["train_y"].bincount().tolist() == [6, 6, 6]

    samples, npz = str(tmp_path / "samples"), str(tmp_path / "samples.npz")
    main(["sample", "--run", run, "--per-class", "4", "--cfg", "1.5", "--top-k", "900", "--top-p", "0.96",
          "--png-dir", samples, "--npz", npz, "--batch-size", "5"])
    assert sorted(os.listdir(samples))[:2] == ["0000_000.png", "0000_001.png"]
    side = json.load(open(str(tmp_path / "samples.json")))
    assert (side["N"], side["top_k"], side["top_p"], side["mixer"]) == (12, 900, 0.96, "mvar")

    rec, orig = str(tmp_path / "rec.npz"), str(tmp_path / "orig.npz")
    main(["reconstruct", "--tokenizer", os.path.join(tok, "tokenizer.pt"), "--data-path", train_dir,
          "--png-dir", str(tmp_path / "rec"), "--npz", rec, "--orig-npz", orig, "--batch-size", "7"])
    with np.load(orig) as z:
        assert z["arr_0"].shape == (n_images, 16, 16, 3)
    assert json.load(open(str(tmp_path / "rec" / "reconstruct.json")))["N"] == n_images

    monkeypatch.setattr(inception, "INPUT_SIDE", 139)  # smaller input: the maths is the same, 4.6x faster
    net = random_inception()
    r = fid.fid_report(npz, orig, "(random)", out=str(tmp_path / "fid.json"), net=net, is_splits=2)
    assert r["N"] == 12 and r["N_ref_images"] == n_images and r["fid"] > 0
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["inception_score"]["mean"] >= 1
    assert r["sampling"]["cfg"] == 1.5 and r["reference_stats"].startswith("pool3 features")
    r_rec = fid.fid_report(rec, orig, "(random)", net=net, is_splits=2)  # the rFID path
    assert np.isfinite(r_rec["fid"]) and r_rec["N"] == n_images


def test_reconstruct_and_sample_report_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", "--tokenizer", str(tmp_path / "none.pth"), "--data-path", str(tmp_path),
              "--png-dir", str(tmp_path / "rec")])
    assert "does not exist" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["sample", "--per-class", "1", "--png-dir", str(tmp_path / "s")])
    assert "--official CHECKPOINT --tokenizer" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["sample", "--official", str(tmp_path / "var_d16.pth"), "--png-dir", str(tmp_path / "s")])
    assert e.value.code == 2 and "argument --official: " in capsys.readouterr().err.splitlines()[-1]
    (tmp_path / "var_d16.pth").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["sample", "--official", str(tmp_path / "var_d16.pth"), "--png-dir", str(tmp_path / "s")])
    assert "--official needs --tokenizer" in str(e.value.code)


def test_load_tokenizer_reads_both_kinds_of_file(tmp_path):
    from minivar import official
    from minivar.checkpoints import CheckpointError
    from minivar.tokenizer import TokenizerConfig, VQVAE
    torch.manual_seed(0)  # the official layout with the 256 px schedule, at toy width: 32 px, 2x down
    vae = VQVAE(TokenizerConfig(image_size=32, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8,
                                vocab_size=64)).eval()
    mine, theirs = str(tmp_path / "tokenizer.pt"), str(tmp_path / "vae_official.pth")
    vae.save(mine)
    torch.save(official.vae_state_dict_to_official(vae), theirs)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for path in (mine, theirs):
        got = load_tokenizer(path)
        assert not got.training and [torch.equal(a, b) for a, b in zip(got.encode(x), vae.encode(x))] == [True] * 10
    torch.save({"kind": "minivar-model", "model": {}}, str(tmp_path / "model.pt"))
    with pytest.raises(CheckpointError, match="transformer file, not a tokenizer"):
        load_tokenizer(str(tmp_path / "model.pt"))


def test_folder_tokens_shared_over_ranks_equal_one_process(tmp_path, monkeypatch):
    """The sharded ImageFolder encoding (rank r takes rows r, r + W, ...; shares meet through files),
    with two threads standing in for two ranks (a threading barrier for dist.barrier)."""
    import threading
    from minivar.training import tokens
    from minivar.tokenizer import TOKENIZER_PRESETS, VQVAE
    from minivar.training import TrainConfig
    folder = str(tmp_path / "train")
    write_folder(folder, per_class=5)
    torch.manual_seed(0)
    tok = str(tmp_path / "tok.pt")
    VQVAE(TOKENIZER_PRESETS["tiny16"]).save(tok)
    vae = VQVAE.load(tok).eval()
    cfg = TrainConfig(data="imagefolder", data_path=folder, tokenizer=tok, val_fraction=0.2)
    want = tokens.load_tokens(cfg, vae, str(tmp_path / "one.pt"))
    barrier = threading.Barrier(2)
    monkeypatch.setattr(tokens.dist, "barrier", lambda: barrier.wait())
    got = {}
    threads = [threading.Thread(target=lambda r=r: got.__setitem__(r, tokens.load_tokens(
        cfg, vae, str(tmp_path / "two.pt"), rank=r, world=2))) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(w) for w in want] == [12, 12, 3, 3]  # 15 images, 20% held out (3)
    for r in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(got[r], want))
    assert sorted(os.listdir(tmp_path)) == ["one.pt", "tok.pt", "train", "two.pt"]  # shard files removed
    (tx, ty), _ = data.splits("imagefolder", 16, 0.2, 0, folder)  # the same split as train-tokenizer's
    assert torch.equal(want[1], ty) and torch.equal(want[0].long(), tokens.encode_dataset(vae, tx))


def test_sample_from_official_format_checkpoints(tmp_path):
    """`sample --official FILE --tokenizer FILE`: files in the official layouts (toy widths), VAR and M-VAR."""
    from minivar import official
    from minivar.models import ModelConfig, NextScaleTransformer
    from minivar.tokenizer import TokenizerConfig, VQVAE
    torch.manual_seed(0)
    vae = VQVAE(TokenizerConfig(image_size=32, ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=8,
                                vocab_size=64))
    vae_file = str(tmp_path / "vae_official.pth")
    torch.save(official.vae_state_dict_to_official(vae), vae_file)
    for mixer in ("var", "mvar"):
        model = NextScaleTransformer(ModelConfig(mixer=mixer, depth=1, width=32, heads=2, num_classes=3,
                                                 vocab_size=64, z_channels=8, d_state=8, mamba_headdim=16))
        ckpt, out = str(tmp_path / f"{mixer}.pth"), str(tmp_path / mixer)
        torch.save(official.model_state_dict_to_official(model), ckpt)
        main(["sample", "--official", ckpt, "--tokenizer", vae_file, "--per-class", "2", "--top-k", "900",
              "--top-p", "0.96", "--png-dir", out, "--npz", out + ".npz", "--batch-size", "4"])
        with np.load(out + ".npz") as z:
            assert z["arr_0"].shape == (6, 32, 32, 3)
        settings = json.load(open(os.path.join(out, "sampling.json")))
        assert settings["mixer"] == mixer and settings["model"]["path"] == os.path.abspath(ckpt)
        assert settings["tokenizer"]["sha256"] == sha256_file(vae_file)
