"""Transformer trainer: exact resume after SIGKILL, DDP == one process, NaN stop, atomic checkpoints."""
import json
import os
import subprocess
import sys

import pytest
import torch

from minivar.training import recipe as R
from minivar.training import trainer as T
from minivar.tokenizer import VQVAE, TokenizerConfig
from minivar.checkpoints import atomic_save
from minivar.loading import load_model

VAE_CFG = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))
TINY = ["--data", "synthetic", "--depth", "2", "--width", "64", "--heads", "2", "--d_state", "8",
        "--mamba_headdim", "16", "--batch_size", "16", "--micro_batch", "8", "--base_lr", "0.05",
        "--log_every", "1", "--ckpt_every", "2", "--drop_path", "0.1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("tok") / "tokenizer.pt")
    VQVAE(VAE_CFG).save(path)  # random weights are enough to make tokens
    return path


# `python -m minivar` that sends itself SIGKILL right after logging step KILL_AT, like `kill -9`
# between two checkpoints: the trainer knows nothing of it.
KILLED_AFTER = """
import os, sys
from minivar.cli.main import main
from minivar.training import trainer
log_step, kill_at = trainer.log_step, int(os.environ["KILL_AT"])
def log_then_die(run, *a, **kw):
    rec = log_step(run, *a, **kw)
    if run.step == kill_at:
        os.kill(os.getpid(), 9)
    return rec
trainer.log_step = log_then_die
main(sys.argv[1:])
"""


def run_cli(args, env=None, check=True, kill_at=None):
    """python -m minivar ... in a fresh process, one thread (bitwise-comparable runs)."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = ["-m", "minivar"] if kill_at is None else ["-c", KILLED_AFTER]
    if kill_at is not None:
        e["KILL_AT"] = str(kill_at)
    p = subprocess.run([sys.executable, *cmd, *args], cwd=ROOT, env=e, capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [(r["step"], r["loss"]) for r in map(json.loads, f)]


def test_sigkill_then_resume_repeats_the_uninterrupted_losses_exactly(tok, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["--tokenizer", tok, "--steps", "7", "--quiet", *TINY]
    run_cli(["train", "--out", a, *common])
    killed = run_cli(["train", "--out", b, *common], kill_at=5, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [s for s, _ in losses(b)] == [1, 2, 3, 4, 5]  # step 5 was logged, its checkpoint never written
    assert not os.path.exists(os.path.join(b, "model.pt"))
    refused = run_cli(["train", "--out", b, *common], check=False)  # an existing run needs --resume
    assert refused.returncode and "--resume" in refused.stderr
    run_cli(["train", "--out", b, "--resume", *common])
    assert losses(b) == losses(a)  # bit for bit, steps 5..7 recomputed from the step-4 checkpoint
    ck = T.checkpoint_paths(b)
    assert [os.path.basename(p) for p in ck] == ["step_0000006.pt", "step_0000007.pt"]  # keep_last 2
    st = T.safe_load(ck[-1])
    assert {"model", "optimizer", "scheduler", "rng", "step", "data_position", "scaler"} <= set(st)
    assert not [f for f in os.listdir(os.path.join(b, "ckpt")) if f.startswith(".tmp")]
    ma, mb = T.safe_load(os.path.join(a, "model.pt")), T.safe_load(os.path.join(b, "model.pt"))
    assert all(torch.equal(ma["model"][k], mb["model"][k]) for k in ma["model"])


def test_two_gloo_ranks_equal_one_process_on_the_same_global_batch(tok, tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    common = ["--tokenizer", tok, "--steps", "3", "--quiet", *TINY]
    run_cli(["train", "--out", one, *common])
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "minivar", "train", "--out", two, *common], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    la, lb = losses(one), losses(two)
    assert [s for s, _ in la] == [s for s, _ in lb] == [1, 2, 3]
    for (_, x), (_, y) in zip(la, lb):
        assert abs(x - y) < 1e-5 * max(1, abs(x))
    ma, mb = T.safe_load(os.path.join(one, "model.pt")), T.safe_load(os.path.join(two, "model.pt"))
    for k in ma["model"]:
        assert torch.allclose(ma["model"][k], mb["model"][k], atol=1e-5, rtol=1e-4), k


def _cfg(tok, **kw):
    base = dict(data="synthetic", tokenizer=tok, depth=1, width=32, heads=2, d_state=8, mamba_headdim=16,
                batch_size=8, micro_batch=8, steps=4, ckpt_every=2, log_every=1, base_lr=0.05)
    return R.TrainConfig.from_dict({**base, **kw})


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tok, tmp_path, monkeypatch):
    real = T.loss_stats
    calls = {"n": 0}

    def poisoned(ce, hit, pns):
        calls["n"] += 1
        out = real(ce, hit, pns)
        if calls["n"] >= 3:  # the third step
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(T, "loss_stats", poisoned)
    with pytest.raises(R.TrainingDiverged, match=r"step 3.*step_0000002\.pt.*--resume"):
        T.train(_cfg(tok), str(tmp_path), progress=False)
    assert [os.path.basename(p) for p in T.checkpoint_paths(str(tmp_path))] == ["step_0000002.pt"]
    assert not os.path.exists(tmp_path / "model.pt")
    load_model(T.checkpoint_paths(str(tmp_path))[-1])  # the good one loads


def test_ema_and_var_mixer_train_and_export(tok, tmp_path):
    rec = T.train(_cfg(tok, mixer="var", ema=0.9, steps=2), str(tmp_path), progress=False)
    assert rec["step"] == 2 and len(rec["scale_acc"]) == 4 and 0 <= rec["acc"] <= 1
    m = load_model(str(tmp_path / "model.pt"))
    assert m.config.mixer == "var" and m.num_classes == 4


def test_data_order_is_a_seeded_permutation_per_epoch():
    n, B = 10, 4
    rows = torch.cat([R.batch_indices(s, B, n, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(rows[:10].tolist()) == list(range(10)) and sorted(rows[10:20].tolist()) == list(range(10))
    assert torch.equal(R.batch_indices(2, B, n, 3), R.batch_indices(2, B, n, 3))
    assert not torch.equal(rows[:10], rows[10:20])


def test_recipe_param_groups_and_lr_schedule():
    from minivar.models import ModelConfig, NextScaleTransformer
    m = NextScaleTransformer(ModelConfig(mixer="mvar", depth=1, width=32, heads=2, num_classes=3, vocab_size=16,
                                         z_channels=4, patch_nums=(1, 2), d_state=8, mamba_headdim=16))
    decay, no = R.param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    no_names = {names[id(p)] for p in no["params"]}
    assert decay["weight_decay"] == 0.05 and no["weight_decay"] == 0.0
    assert {"pos_1LC", "pos_start", "lvl_embed.weight", "class_emb.weight"} <= no_names
    assert all(names[id(p)].endswith("weight") and p.ndim >= 2 for p in decay["params"])
    cfg = R.TrainConfig(steps=100, warmup_frac=0.1, final_lr_frac=0.0, batch_size=512, base_lr=1e-4)
    f = R.lr_lambda(cfg)
    assert cfg.lr == pytest.approx(2e-4)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(100) == pytest.approx(0.0)
    assert f(55) == pytest.approx(0.5)


def test_atomic_save_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = str(tmp_path / "x.pt")
    atomic_save({"a": torch.ones(2)}, path)

    def boom(obj, f):
        with open(f, "wb") as h:
            h.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["x.pt"]


def test_fit_in_memory_lowers_the_loss_and_uses_the_recipe_groups():
    from minivar import data as datasets
    from minivar.models import ModelConfig, NextScaleTransformer
    from minivar.tokenizer import VQVAE, TokenizerConfig
    from minivar.training import TrainConfig, fit
    from minivar.training.tokens import encode_dataset
    torch.manual_seed(0)
    vae = VQVAE(TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                                z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))).eval()
    x, y = datasets.synthetic(16, size=16, seed=4)
    targets = encode_dataset(vae, x)
    inputs = vae.teacher_input(list(targets.split([1, 4, 9, 16], dim=1)))
    model = NextScaleTransformer(ModelConfig(mixer="var", depth=2, width=64, heads=2, num_classes=4, vocab_size=64,
                                             z_channels=8, patch_nums=(1, 2, 3, 4), cond_drop=0.0, drop_path=0.0))
    losses = fit(model, y, inputs, targets, TrainConfig(steps=60, batch_size=16, base_lr=0.04, warmup_frac=0.1))
    assert len(losses) == 60 and not model.training
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
