"""save_pretrained / from_pretrained: config.json + model.safetensors folders, round trips, the demo
weights in that form, and the CLI verbs that read and write them."""
import json
import os

import pytest
import torch

from minivar.checkpoints import CheckpointError
from minivar.cli.main import main
from minivar.loading import load_model, load_tokenizer
from minivar.models import ModelConfig, NextScaleTransformer
from minivar.tokenizer import VQVAE, TokenizerConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = os.path.join(ROOT, "weights", "digits16")
VAE_CFG = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def greedy(model, vae, seed=0):
    labels = torch.arange(model.num_classes).repeat_interleave(2)
    with torch.no_grad():
        return model.generate(labels, cfg=1.5, top_k=1, seed=seed, vae=vae)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    vae = VQVAE(VAE_CFG).eval()
    models = {m: NextScaleTransformer(ModelConfig(mixer=m, depth=2, width=64, heads=2, num_classes=3, vocab_size=64,
                                                  z_channels=8, patch_nums=(1, 2, 3, 4), d_state=8,
                                                  mamba_headdim=16)).eval() for m in ("var", "mvar")}
    return vae, models


@pytest.mark.parametrize("mixer", ["var", "mvar"])
def test_round_trip_is_bit_identical_with_identical_greedy_samples(tiny, tmp_path, mixer):
    vae, models = tiny
    vae.save_pretrained(str(tmp_path / "tok"))
    models[mixer].save_pretrained(str(tmp_path / mixer), tokenizer=str(tmp_path / "tok"))
    vae2 = VQVAE.from_pretrained(str(tmp_path / "tok"))
    model2 = NextScaleTransformer.from_pretrained(str(tmp_path / mixer))
    assert same_weights(vae, vae2) and same_weights(models[mixer], model2)
    assert vae2.config == vae.config and model2.config == models[mixer].config
    assert torch.equal(greedy(models[mixer], vae), greedy(model2, vae2))
    assert sorted(os.listdir(tmp_path / mixer)) == ["config.json", "model.safetensors"]
    meta = json.load(open(tmp_path / mixer / "config.json"))
    assert meta["model_type"] == "minivar-transformer" and meta["tokenizer"] == "../tok" and meta["depth"] == 2


def test_the_safetensors_file_is_plain_safetensors(tiny, tmp_path):
    """Readable by the safetensors library alone: tensors only, nothing to execute."""
    from safetensors.torch import load_file
    vae, _ = tiny
    vae.save_pretrained(str(tmp_path / "tok"))
    sd = load_file(str(tmp_path / "tok" / "model.safetensors"))
    assert sd.keys() == vae.state_dict().keys()


@pytest.mark.parametrize("name", ["var", "mvar"])
def test_demo_weights_in_pretrained_form_equal_the_checkpoints(name):
    vae_pt, vae_dir = load_tokenizer(os.path.join(W, "tokenizer.pt")), load_tokenizer(os.path.join(W, "tokenizer"))
    model_pt, model_dir = load_model(os.path.join(W, f"{name}.pt")), load_model(os.path.join(W, name))
    assert same_weights(vae_pt, vae_dir) and same_weights(model_pt, model_dir)
    assert model_dir.config == model_pt.config
    assert torch.equal(greedy(model_pt, vae_pt), greedy(model_dir, vae_dir))
    meta = json.load(open(os.path.join(W, name, "config.json")))
    assert meta["tokenizer"] == "../tokenizer" and meta["training"]["data"] == "digits"


def test_wrong_or_damaged_folders_are_clear_errors(tiny, tmp_path):
    vae, models = tiny
    vae.save_pretrained(str(tmp_path / "tok"))
    with pytest.raises(CheckpointError, match="not a 'minivar-transformer'"):
        NextScaleTransformer.from_pretrained(str(tmp_path / "tok"))
    with pytest.raises(CheckpointError, match="config.json is missing"):
        VQVAE.from_pretrained(str(tmp_path))
    w = tmp_path / "tok" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VQVAE.from_pretrained(str(tmp_path / "tok"))
    models["var"].save_pretrained(str(tmp_path / "m"))
    meta = json.load(open(tmp_path / "m" / "config.json"))
    json.dump({**meta, "depth": 3}, open(tmp_path / "m" / "config.json", "w"))
    with pytest.raises(CheckpointError, match="do not fit its config"):
        NextScaleTransformer.from_pretrained(str(tmp_path / "m"))


def test_export_then_sample_from_the_folder_gives_the_run_s_samples(tmp_path):
    torch.manual_seed(0)
    tok = str(tmp_path / "tokenizer.pt")
    VQVAE(VAE_CFG).save(tok)
    run = str(tmp_path / "run")
    main(["train", "--out", run, "--tokenizer", tok, "--data", "synthetic", "--depth", "1", "--width", "32",
          "--heads", "2", "--d-state", "8", "--mamba-headdim", "16", "--batch-size", "8", "--micro-batch", "8",
          "--steps", "2", "--quiet"])
    main(["export", "--run", run, "--out", str(tmp_path / "shared")])
    assert sorted(os.listdir(tmp_path / "shared")) == ["mvar", "tokenizer"]
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    main(["sample", "--run", run, "--per-class", "2", "--png", a])
    main(["sample", "--model", str(tmp_path / "shared" / "mvar"), "--per-class", "2", "--png", b])
    assert open(a, "rb").read() == open(b, "rb").read()
    meta = json.load(open(tmp_path / "shared" / "mvar" / "config.json"))
    assert meta["training"] == {"data": "synthetic", "data_path": "", "val_fraction": 0.1, "split_seed": 0}


def test_sample_from_the_committed_pretrained_demo_weights(tmp_path):
    png = str(tmp_path / "g.png")
    main(["sample", "--model", os.path.join(W, "var"), "--per-class", "1", "--png", png])
    assert os.path.getsize(png) > 0


def test_a_folder_of_the_wrong_kind_is_named_with_the_right_option(tmp_path, capsys):
    torch.manual_seed(0)
    tok = str(tmp_path / "tokenizer.pt")
    VQVAE(VAE_CFG).save(tok)
    run, shared = str(tmp_path / "run"), str(tmp_path / "shared")
    main(["train", "--out", run, "--tokenizer", tok, "--data", "synthetic", "--depth", "1", "--width", "32",
          "--heads", "2", "--d-state", "8", "--mamba-headdim", "16", "--batch-size", "8", "--micro-batch", "8",
          "--steps", "1", "--quiet"])
    main(["export", "--run", run, "--out", shared])
    other = VQVAE(TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                                  z_channels=8, vocab_size=32, patch_nums=(1, 2, 3, 4)))
    other.save(str(tmp_path / "other.pt"))
    cases = [
        (["sample", "--model", shared], "holds the save_pretrained folders mvar, tokenizer: pass one of them"),
        (["sample", "--model", run], "is a run folder: pass it as --run"),
        (["sample", "--run", os.path.join(shared, "mvar")], "is a save_pretrained folder: pass it as --model"),
        (["sample", "--model", os.path.join(shared, "tokenizer")], "not a 'minivar-transformer'"),
        (["sample", "--model", os.path.join(shared, "mvar"), "--checkpoint", os.path.join(run, "model.pt")],
         "--checkpoint goes with --run"),
        (["sample", "--run", run, "--tokenizer", str(tmp_path / "other.pt")], "does not fit the model (V=64"),
        (["sample", "--run", run, "--model", os.path.join(shared, "mvar")], "pass one of --run"),
        (["eval", "--model", os.path.join(shared, "mvar")], "needs --out"),
        (["eval", "--model", os.path.join(run, "model.pt"), "--out", str(tmp_path / "e.json")],
         "does not say which data it was trained on"),
        (["export", "--run", run, "--out", shared], "already exists"),
        (["train", "--out", str(tmp_path / "r2"), "--tokenizer", str(tmp_path)], "is a folder, not a checkpoint file"),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert isinstance(e.value.code, str) and e.value.code.startswith("error: ") and needle in e.value.code, \
            (argv, e.value.code)
    assert not os.path.exists(tmp_path / "e.json") and not os.path.exists(tmp_path / "r2")
