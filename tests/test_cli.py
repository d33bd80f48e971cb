"""The CLI: config files + overrides, run folders, bad inputs (clear errors, nothing overwritten), sample, eval."""
import json
import os

import pytest
import torch

from minivar.evaluation import metrics
from minivar import data
from minivar.cli.main import main
from minivar.config import ConfigError, read_json
from minivar.tokenizer import VQVAE, TokenizerConfig
from minivar.training import TrainConfig

VAE_CFG = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))
TINY = ["--data", "synthetic", "--depth", "1", "--width", "32", "--heads", "2", "--d_state", "8",
        "--mamba_headdim", "16", "--batch_size", "8", "--micro_batch", "8", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.pt")
    VQVAE(VAE_CFG).save(path)
    return path


def fails(argv, capsys=None) -> str:
    """The error line of a command that must fail: its exit message, or argparse's last stderr line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code not in (0, None)
    msg = e.value.code if isinstance(e.value.code, str) else ""
    if capsys is not None:
        msg += capsys.readouterr().err.strip().splitlines()[-1] if not msg else ""
    return msg


def test_config_file_then_command_line_overrides(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"steps": 50, "model": {"mixer": "var"}, "betas": [0.9, 0.99]}))
    cfg = TrainConfig.from_dict({**read_json(str(f)), "steps": "7", "depth": "6"})
    assert (cfg.steps, cfg.model.mixer, cfg.betas, cfg.model.depth) == (7, "var", (0.9, 0.99), 6)
    assert (cfg.model.width, cfg.model.heads) == (384, 6)  # derived from the new depth, not the default's
    with pytest.raises(ConfigError, match="did you mean 'base_lr'"):
        TrainConfig.from_dict({"base_lt": "1"})
    with pytest.raises(ConfigError, match="model.vocab_size is set by the tokenizer"):
        TrainConfig.from_dict({"model": {"vocab_size": 64}})
    f.write_text("{steps: 5")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_json(str(f))
    with pytest.raises(ConfigError, match="expects int"):
        TrainConfig.from_dict({"steps": "many"})
    with pytest.raises(ConfigError, match="betas expects float float"):
        TrainConfig.from_dict({"betas": "0.9"})


def test_unknown_key_suggests_the_closest_and_writes_nothing(tok, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert "did you mean --steps?" in fails(["train", "--out", out, "--tokenizer", tok, "--stpes", "3"], capsys)
    assert not os.path.exists(out)


@pytest.mark.parametrize("extra,needle", [
    (["--num_classes", "2"], "num_classes=2 is out of range"),
    (["--data", "nope"], "unknown dataset 'nope'"),
    (["--mixer", "rnn"], "mixer must be one of var, mvar"),
    (["--amp", "fp8"], "amp must be one of auto, none, bf16, fp16"),
    (["--mamba-headdim", "24"], "mamba_headdim 24 must divide expand x width = 64"),
])
def test_bad_settings_are_clear_errors(tok, tmp_path, extra, needle):
    out = str(tmp_path / "run")
    assert needle in fails(["train", "--out", out, "--tokenizer", tok, *TINY, *extra])
    assert not os.path.exists(out)


def test_missing_or_corrupt_tokenizer(tmp_path):
    out = str(tmp_path / "run")
    assert "does not exist" in fails(["train", "--out", out, "--tokenizer", str(tmp_path / "no.pt"), *TINY])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert "corrupt" in fails(["train", "--out", out, "--tokenizer", str(bad), *TINY])
    assert "no tokenizer" in fails(["train", "--out", out, *TINY])
    assert not os.path.exists(out)


def test_a_run_of_another_kind_is_never_replaced_and_overwrite_keeps_other_files(tok, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"kind": "train-tokenizer"}))
    before = (out / "config.json").read_bytes()
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert "holds a train-tokenizer run, not a train run" in fails(
            ["train", "--out", str(out), "--tokenizer", tok, *extra, *TINY])
        assert sorted(os.listdir(out)) == ["config.json"] and (out / "config.json").read_bytes() == before
    (out / "config.json").unlink()
    main(["train", "--out", str(out), "--tokenizer", tok, *TINY])
    (out / "notes.txt").write_text("mine")
    assert "already holds a train run" in fails(["train", "--out", str(out), "--tokenizer", tok, *TINY])
    main(["train", "--out", str(out), "--tokenizer", tok, "--overwrite", *TINY])
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite replaces the run's own files only
    stored = json.loads((out / "config.json").read_text())
    assert stored["kind"] == "train" and "metrics.jsonl" in stored["files"]
    # resuming may extend the run (and lower the lr) but not change the rest of its recipe
    assert "cannot change ['weight_decay']" in fails(["train", "--out", str(out), "--resume", "--weight_decay", "1"])
    main(["train", "--out", str(out), "--resume", "--steps", "3", "--quiet"])
    recs = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 3


def test_sample_and_eval_verbs(tok, tmp_path, capsys):
    out = str(tmp_path / "run")
    main(["train", "--out", out, "--tokenizer", tok, *TINY])
    png = str(tmp_path / "grid.png")
    main(["sample", "--run", out, "--per-class", "2", "--png", png, "--top-k", "5"])
    assert os.path.getsize(png) > 0
    pngs, npz = tmp_path / "pngs", str(tmp_path / "s.npz")
    main(["sample", "--run", out, "--per-class", "2", "--png-dir", str(pngs), "--npz", npz])
    assert sorted(os.listdir(pngs))[:3] == ["0000_000.png", "0000_001.png", "0001_000.png"]
    import numpy as np
    exact = np.load(npz)["arr_0"]
    assert exact.shape == (8, 16, 16, 3)
    main(["sample", "--run", out, "--per-class", "2", "--png-dir", str(tmp_path / "bf"),
          "--npz", str(tmp_path / "bf.npz"), "--decode-bf16"])  # same tokens, approximate decode
    approx = np.load(str(tmp_path / "bf.npz"))["arr_0"].astype(int)
    assert approx.shape == exact.shape and np.abs(approx - exact).mean() < 3  # uint8 levels
    assert json.load(open(tmp_path / "bf" / "sampling.json"))["decode_dtype"] == "torch.bfloat16"
    x, y = data.synthetic(80, size=16, seed=1)
    clf_path = str(tmp_path / "clf.pt")
    metrics.save_classifier(metrics.train_classifier(x, y, 4, epochs=1, batch_size=40), clf_path,
                            arch="SmallCNN", data="synthetic", size=16, test_acc=0.5, sha256="0" * 64)
    main(["eval", "--run", out, "--per-class", "6", "--seeds", "0,1", "--classifier", clf_path])
    text = capsys.readouterr().out
    assert "FD-cls" in text and "N = 24" in text and "real-vs-real floor" in text
    rep = json.loads(open(os.path.join(out, "eval.json")).read())
    assert rep["seeds"] == [0, 1] and rep["sampling"]["cfg"] == 1.5 and "FID" in rep["note"]
    assert "nothing does not exist; give the run folder" in fails(["sample", "--run", str(tmp_path / "nothing")])


TINY_DEMO = dict(tok_steps=30, steps=8, eval_per_class=18)


def test_demo_that_misses_its_pass_mark_ends_with_an_error(tmp_path, capsys, monkeypatch):
    """A recipe far too short for the thresholds: the demo runs end to end, then exits non-zero."""
    import minivar.cli.demo as cli
    recipe = cli.DemoRecipe(**TINY_DEMO)
    monkeypatch.setattr(cli, "DemoRecipe", lambda: recipe)
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is as fast and never stalls on a busy machine
    try:
        with pytest.raises(SystemExit) as e:
            main(["demo", "--out", str(out), "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert e.value.code == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("demo FAILED") and "cap" not in lines[-1]
    assert any("MISSED" in line for line in lines[-4:])
    assert (out / "samples.png").exists() and (out / "tokenizer" / "tokenizer.pt").exists()
    rep = json.loads((out / "mvar" / "eval.json").read_text())
    assert rep["feature_net"]["test_acc"] > 0.5 and rep["N"] == 179
    demo = rep["demo"]
    assert demo["passed"] is False and demo["capped"] is False and demo["time_cap_minutes"] is None
    assert demo["steps_done"] == {"tokenizer": 30, "mvar": 8}
    assert demo["cond_acc"] < cli.DEMO_MIN_COND_ACC or demo["fd_cls"] > 2 * demo["fd_cls_floor"]
    env = rep["environment"]
    assert env["torch"] == torch.__version__ and env["threads"] == 1 and env["cpu_capability"]


def test_demo_time_cap_is_reported_when_it_cuts_training_short(tmp_path, capsys, monkeypatch):
    import minivar.cli.demo as cli
    recipe = cli.DemoRecipe(**{**TINY_DEMO, "steps": 100_000})
    monkeypatch.setattr(cli, "DemoRecipe", lambda: recipe)
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(out), "--quiet", "--minutes", "0.05"])
    assert e.value.code == 1
    text = capsys.readouterr().out
    assert "time cap: 0.05 min" in text
    assert text.strip().splitlines()[-1].startswith("demo FAILED") and "--minutes cap" in text.strip().splitlines()[-1]
    demo = json.loads((out / "mvar" / "eval.json").read_text())["demo"]
    assert demo["capped"] is True and demo["time_cap_minutes"] == 0.05
    assert 0 < demo["steps_done"]["mvar"] < 100_000


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "inf"])
def test_demo_rejects_a_time_cap_that_is_not_one(tmp_path, minutes):
    out = tmp_path / "demo"
    msg = fails(["demo", "--out", str(out), "--minutes", minutes])
    assert msg.startswith("error: --minutes") and "positive number of minutes" in msg
    assert not out.exists()


@pytest.mark.parametrize("verb,extra", [("train-tokenizer", []), ("train", ["--tokenizer", "TOK", *TINY])])
@pytest.mark.parametrize("minutes", ["-1", "nan"])
def test_train_rejects_a_negative_or_nan_time_limit(tok, tmp_path, verb, extra, minutes, capsys):
    out = tmp_path / "run"
    extra = [tok if a == "TOK" else a for a in extra]
    msg = fails([verb, "--out", str(out), *extra, "--minutes", minutes], capsys)
    assert msg.startswith("error: ") and "minutes" in msg and "no limit" in msg
    assert not out.exists()


def test_train_tokenizer_with_a_missing_dataset_writes_nothing(tmp_path):
    out = tmp_path / "tok"
    msg = fails(["train-tokenizer", "--out", str(out), "--data", "fashion", "--data-path", str(tmp_path / "none")])
    assert "apt-get install dataset-fashion-mnist" in msg and not out.exists()
