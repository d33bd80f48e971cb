"""Configs: one per concept, documented fields, options generated from them, older files still read."""
import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from minivar import config
from minivar.cli import options
from minivar.cli.main import build_parser, main
from minivar.models import ModelConfig
from minivar.tokenizer import TokenizerConfig, VQVAE
from minivar.training import TokenizerTrainConfig, TrainConfig
from minivar.training import train
from minivar.training.recipe import MODEL_FIELDS, TRAIN_MODEL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OLD_CONFIG = os.path.join(ROOT, "tests", "fixtures", "run_config_flat_v0.1.json")
CONFIGS = (ModelConfig, TokenizerConfig, TrainConfig, TokenizerTrainConfig)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_documented_and_typed(cls):
    kinds = config.field_types(cls)
    for f in dataclasses.fields(cls):
        assert len(f.metadata.get("doc", "").split()) >= 2, f"{cls.__name__}.{f.name} has no documentation"
        config.type_name(kinds[f.name])  # a type the options and from_dict understand


def test_train_config_holds_a_model_config_instead_of_copying_it():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not names & set(MODEL_FIELDS), "a ModelConfig field is repeated in TrainConfig"
    cfg = TrainConfig()
    assert isinstance(cfg.model, ModelConfig) and cfg.model == ModelConfig(**TRAIN_MODEL)


def test_an_older_flat_run_config_reads_as_the_nested_one():
    old = json.load(open(OLD_CONFIG))["train"]
    cfg = TrainConfig.from_dict(old)
    m = cfg.model
    assert (m.mixer, m.depth, m.width, m.heads, m.d_state, m.mamba_headdim) == ("mvar", 1, 32, 2, 8, 16)
    assert m.drop_path == pytest.approx(0.1 / 24) and m.num_classes == 0 and m.attn_l2_norm is True
    assert (cfg.base_lr, cfg.betas, cfg.steps, cfg.data) == (0.05, (0.9, 0.99), 2, "synthetic")
    # the flat file and the nested one written now describe the same run
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == {f.name for f in dataclasses.fields(TrainConfig)}


def test_a_new_depth_re_derives_width_heads_and_drop_path_unless_they_are_given():
    m = TrainConfig.from_dict({"depth": 8}).model
    assert (m.width, m.heads, m.drop_path) == (512, 8, pytest.approx(0.1 * 8 / 24))
    assert TrainConfig.from_dict({"depth": 8, "width": 128}).model.width == 128
    # a stored config writes the derived values as 0 / -1, so reading it with another depth derives again
    stored = TrainConfig.from_dict({"depth": 2}).to_dict()
    assert (stored["model"]["width"], stored["model"]["heads"], stored["model"]["drop_path"]) == (0, 0, -1.0)
    m = TrainConfig.from_dict({**stored, "depth": 6}).model
    assert (m.width, m.heads, m.drop_path) == (384, 6, pytest.approx(0.1 * 6 / 24))
    explicit = TrainConfig.from_dict({"depth": 2, "width": 96}).to_dict()
    assert TrainConfig.from_dict({**explicit, "depth": 6}).model.width == 96


def test_from_dict_names_the_key_and_the_fix():
    with pytest.raises(config.ConfigError, match="unknown config key 'model.dpeth'; did you mean 'depth'"):
        TrainConfig.from_dict({"model": {"dpeth": 3}})
    with pytest.raises(config.ConfigError, match="lr_schedule must be one of linear, var"):
        TrainConfig.from_dict({"lr_schedule": "cosine"})
    with pytest.raises(config.ConfigError, match="compile expects bool"):
        TrainConfig.from_dict({"compile": "maybe"})
    with pytest.raises(config.ConfigError, match="steps expects int, got 2.5"):
        TrainConfig.from_dict({"steps": 2.5})
    with pytest.raises(config.ConfigError, match="vocab_size is set by the tokenizer"):
        TrainConfig.from_dict({"vocab_size": 2})
    assert config.from_dict(TokenizerTrainConfig, {"time_limit_s": None}).time_limit_s is None


def parse(argv):
    parser, names = build_parser()
    return parser.parse_args(argv), names


def test_train_options_are_generated_typed_and_accept_the_older_spellings():
    a, names = parse(["train", "--out", "x", "--base-lr", "0.01", "--betas", "0.8", "0.9", "--no-attn-l2-norm",
                      "--depth", "3"])
    new = TrainConfig.from_dict(options.given(a, names["train"]))
    b, _ = parse(["train", "--out", "x", "--base_lr", "0.01", "--betas", "0.8,0.9", "--attn_l2_norm", "false",
                  "--depth=3"])
    old = TrainConfig.from_dict(options.given(b, names["train"]))
    assert new == old
    assert (new.base_lr, new.betas, new.model.attn_l2_norm, new.model.width) == (0.01, (0.8, 0.9), False, 192)
    train_fields = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"}
    assert set(names["train"]) == train_fields | set(MODEL_FIELDS)
    c, _ = parse(["train", "--out", "x", "--compile", "true", "--attn-l2-norm", "false"])  # the earlier switch form
    assert (c.compile, c.attn_l2_norm) == (True, False)


def test_help_shows_types_defaults_and_meanings_but_not_the_hidden_spellings(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--base-lr FLOAT" in text and "--base_lr" not in text
    assert "--betas FLOAT FLOAT" in text and "default: 0.9 0.95" in text
    assert "(0: 64 x depth, the papers' size rule) [int >= 0; default: 0]" in " ".join(text.split())
    assert "--grad-clip FLOAT" in text and "[float > 0; default: 2.0]" in " ".join(text.split())
    assert "``" not in text and "--attn-l2-norm, --no-attn-l2-norm" in text
    for f in dataclasses.fields(TrainConfig):
        if f.name != "model":
            assert "--" + f.name.replace("_", "-") in text


@pytest.mark.parametrize("verb", ["demo", "train-tokenizer", "train", "sample", "eval", "export", "fid",
                                  "reconstruct"])
def test_every_option_of_every_verb_has_help(verb):
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
    for action in sub._actions:
        if action.option_strings and action.help != argparse.SUPPRESS:
            assert action.help and len(action.help.split()) >= 2, f"{verb} {action.option_strings} has no help"


def test_version_and_the_console_script(capsys):
    from minivar import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith(f"minivar {__version__}")
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert '[project.scripts]\nminivar = "minivar.cli.main:main"' in pyproject
    p = subprocess.run([sys.executable, "-m", "minivar", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.startswith("minivar ")


def test_tokenizer_options_change_the_preset_field_by_field(tmp_path, monkeypatch):
    from minivar.cli import main as cli_main
    seen = {}
    real = cli_main.train_tokenizer_in_folder

    def spy(out, data_name, data_path, preset, cfg, tcfg, **kw):
        seen.update(cfg=cfg, tcfg=tcfg)
        return real(out, data_name, data_path, preset, cfg, tcfg, **kw)
    monkeypatch.setattr(cli_main, "train_tokenizer_in_folder", spy)
    main(["train-tokenizer", "--out", str(tmp_path / "t"), "--data", "synthetic", "--vocab-size", "32",
          "--steps", "2", "--batch-size", "4", "--betas", "0.6", "0.95", "--quiet"])
    from minivar.tokenizer import TOKENIZER_PRESETS
    assert seen["cfg"] == dataclasses.replace(TOKENIZER_PRESETS["tiny16"], vocab_size=32)
    assert (seen["tcfg"].steps, seen["tcfg"].batch_size, seen["tcfg"].betas) == (2, 4, (0.6, 0.95))
    stored = json.load(open(tmp_path / "t" / "config.json"))
    assert stored["tokenizer"]["vocab_size"] == 32 and stored["train"]["betas"] == [0.6, 0.95]


TINY = ["--data", "synthetic", "--depth", "1", "--width", "32", "--heads", "2", "--d-state", "8",
        "--mamba-headdim", "16", "--batch-size", "8", "--micro-batch", "8", "--base-lr", "0.05", "--log-every", "1",
        "--ckpt-every", "2", "--betas", "0.9", "0.99", "--quiet"]


def test_a_run_folder_with_an_older_flat_config_resumes_exactly(tmp_path):
    """A run started under the flat config.json of earlier versions continues bit for bit."""
    torch.manual_seed(0)
    tok = str(tmp_path / "tokenizer.pt")
    VQVAE(TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))).save(tok)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
        main(["train", "--out", whole, "--tokenizer", tok, "--steps", "4", *TINY])
        old = json.load(open(OLD_CONFIG))  # the same run, as the earlier version wrote its config
        old["train"].update(tokenizer=tok, steps=4)
        os.makedirs(part)
        with open(os.path.join(part, "config.json"), "w") as f:
            json.dump(old, f)
        train(TrainConfig.from_dict(old["train"]), part, progress=False, stop_at=2)  # stopped after step 2
        main(["train", "--out", part, "--resume", "--quiet"])
    finally:
        torch.set_num_threads(threads)
    logs = [[json.loads(r) for r in open(os.path.join(d, "metrics.jsonl"))] for d in (whole, part)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    a, b = (torch.load(os.path.join(d, "model.pt"), weights_only=True)["model"] for d in (whole, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(os.path.join(part, "config.json")))["train"]["model"]["depth"] == 1  # rewritten nested
