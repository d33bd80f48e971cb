"""No lost work, one clear error per bad input: every verb x bad input, run-folder ownership and locks,
checkpoints that survive crashes and full disks, resume that recovers, the NaN stop."""
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from minivar import checkpoints
from minivar.cli.main import main
from minivar.cli import folders
from minivar.loading import load_model
from minivar.tokenizer import TokenizerConfig, VQVAE
from minivar.training import trainer as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_CFG = TokenizerConfig(image_size=16, ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, attn_lowest=False,
                          z_channels=8, vocab_size=64, patch_nums=(1, 2, 3, 4))
TINY = ["--data", "synthetic", "--depth", "1", "--width", "32", "--heads", "2", "--d-state", "8",
        "--mamba-headdim", "16", "--batch-size", "8", "--micro-batch", "8", "--base-lr", "0.05", "--log-every", "1",
        "--ckpt-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tokenizer, a finished 2-step run and a file that is not a checkpoint, in one folder."""
    d = tmp_path_factory.mktemp("work")
    torch.manual_seed(0)
    VQVAE(VAE_CFG).save(str(d / "tok.pt"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(["train", "--out", str(d / "run"), "--tokenizer", str(d / "tok.pt"), "--steps", "2", *TINY])
    finally:
        torch.set_num_threads(threads)
    (d / "notes.txt").write_text("not a checkpoint")
    return d


def snapshot(folder) -> dict:
    """{relative path: sha256} of every file under ``folder`` (and the folders themselves)."""
    out = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(base, name)
            out[os.path.relpath(p, folder)] = (hashlib.sha256(open(p, "rb").read()).hexdigest()
                                              if os.path.isfile(p) else "dir")
    return out


# (verb and its bad input, what the error line must say); W = the work folder, R = its run
BAD = [
    ("train --out W/new --tokenizer W/tok.pt --ckpt_every 0", "--ckpt-every must be >= 1, got 0"),
    ("train --out W/new --tokenizer W/tok.pt --log_every 0", "--log-every must be >= 1"),
    ("train --out W/new --tokenizer W/tok.pt --depth 0", "--depth must be >= 1, got 0"),
    ("train --out W/new --tokenizer W/tok.pt --depth -1", "--depth must be >= 1, got -1"),
    ("train --out W/new --tokenizer W/tok.pt --width -64", "--width must be >= 0, got -64"),
    ("train --out W/new --tokenizer W/tok.pt --base_lr nan", "--base-lr must be a finite number > 0, got nan"),
    ("train --out W/new --tokenizer W/tok.pt --betas 2,3", "--betas must be in [0, 1), got (2.0, 3.0)"),
    ("train --out W/new --tokenizer W/tok.pt --val_fraction 1", "--val-fraction must be in [0, 1), got 1.0"),
    ("train --out W/new --tokenizer W/tok.pt --grad_clip -1", "--grad-clip must be > 0, got -1.0"),
    ("train --out W/new --tokenizer W/tok.pt --cond_drop 2", "--cond-drop must be in [0, 1), got 2.0"),
    ("train --out W/new --tokenizer W/tok.pt --ema 2", "--ema must be in [0, 1), got 2.0"),
    ("train --out W/new --tokenizer W/tok.pt --drop_path 5", "--drop-path must be in [-1, 1), got 5.0"),
    ("train --out W/new --tokenizer W/tok.pt --steps many", "--steps expects int, got 'many'"),
    ("train --out W/new --tokenizer W/tok.pt --mixer rnn", "--mixer must be one of var, mvar, got 'rnn'"),
    ("train --out W/new --tokenizer W/tok.pt --config W", "argument --config: W is a folder; give the file"),
    ("train --out W/new --tokenizer W/missing.pt", "checkpoint W/missing.pt does not exist"),
    ("train --out W/new --tokenizer W/notes.txt", "is corrupt or truncated"),
    ("train --out W/new --resume --tokenizer W/tok.pt", "nothing to resume in W/new"),
    ("train --out W/notes.txt --tokenizer W/tok.pt", "argument --out: W/notes.txt is a file, not a folder"),
    ("train --out R --tokenizer W/tok.pt", "already holds a train run; pass --resume"),
    ("train --out R --resume --weight-decay 0.5", "--resume cannot change ['weight_decay']"),
    ("train-tokenizer --out W/new --steps 0", "--steps must be >= 1, got 0"),
    ("train-tokenizer --out W/new --batch-size 0", "--batch-size must be >= 1, got 0"),
    ("train-tokenizer --out W/new --lr nan", "--lr must be a finite number > 0, got nan"),
    ("train-tokenizer --out W/new --minutes -1", "argument --minutes: must be a finite number >= 0, got -1"),
    ("train-tokenizer --out W/new --data nope", "argument --data: invalid choice: 'nope'"),
    ("train-tokenizer --out R --steps 2", "holds a train run, not a train-tokenizer run"),
    ("sample --run R --per-class 0", "argument --per-class: must be >= 1, got 0"),
    ("sample --run R --cfg inf", "argument --cfg: must be a finite number >= 0, got inf"),
    ("sample --run R --cfg nan", "argument --cfg: must be a finite number >= 0, got nan"),
    ("sample --run R --batch-size 0", "argument --batch-size: must be >= 1, got 0"),
    ("sample --run R --top-p 2", "argument --top-p: must be a finite number in [0, 1], got 2"),
    ("sample --run R --seed -1", "argument --seed: must be >= 0, got -1"),
    ("sample --run R --png-dir W/pngs --npz W/missing/s.npz", "the folder of W/missing/s.npz does not exist"),
    ("sample --run R --npz W/s.npz", "--npz goes with --png-dir"),
    ("sample --run R --checkpoint W/missing.pt", "argument --checkpoint: W/missing.pt does not exist"),
    ("sample --per-class 2", "pass one of --run RUN_FOLDER, or --model"),
    ("eval --run R --per-class -1", "argument --per-class: must be >= 1, got -1"),
    ("eval --run R --seeds a", "argument --seeds: expects comma-separated whole numbers"),
    ("eval --run R --classifier W/tok.pt", "is not a minivar feature classifier"),
    ("eval --model W/run/model.pt", "eval --model needs --out"),
    ("fid --samples W/notes.txt --ref W/notes.txt --inception W", "argument --inception: W is a folder"),
    ("fid --samples W/missing.npz --ref W/notes.txt --inception W/notes.txt", "W/missing.npz does not exist"),
    ("reconstruct --tokenizer W/tok.pt --data-path W --png-dir W/rec --batch-size 0", "must be >= 1, got 0"),
    ("reconstruct --tokenizer W/tok.pt --data-path W --png-dir W/rec --limit -1", "must be >= 0, got -1"),
    ("demo --out W/d --minutes 0", "--minutes 0.0 is not a time limit"),
    ("demo --out W/notes.txt", "argument --out: W/notes.txt is a file, not a folder"),
    ("demo --out R", "holds a train run, not a demo run"),
    ("export --run W/missing --out W/exp", "W/missing is not a run folder"),
    ("sample --run W/run/model.pt", "--run W/run/model.pt is a file; give the run folder"),
    ("eval --run W/typo/sub", "--run W/typo/sub does not exist"),
    ("sample --run R --png-dir W/new/sub/pngs --tokenizer W/notes.txt", "corrupt or truncated"),  # fails when locked
    ("train-tokenizer --out W/new/sub --data synthetic --steps 1 --data-path W/missing", "takes no path"),
]


@pytest.mark.parametrize("command,needle", BAD, ids=[c for c, _ in BAD])
def test_a_bad_input_is_one_error_line_and_changes_nothing(work, command, needle, capsys, monkeypatch):
    monkeypatch.chdir(work)  # the current folder is part of what must stay as it was
    argv = [a.replace("W", str(work)) if a.startswith("W") else a.replace("R", str(work / "run"))
            if a == "R" else a for a in command.split()]
    needle = needle.replace("W/", f"{work}/").replace("W ", f"{work} ")
    before = snapshot(work)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    last = e.value.code if isinstance(e.value.code, str) else err.strip().splitlines()[-1]
    assert e.value.code not in (0, None)
    assert last.startswith("error: ") and needle in last, last
    assert "Traceback" not in err
    assert snapshot(work) == before


def test_library_entry_points_raise_value_errors_with_the_same_messages():
    from minivar.models import ModelConfig
    from minivar.training import TrainConfig
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        ModelConfig(depth=0)
    with pytest.raises(ValueError, match=r"grad_clip must be > 0, got -1"):
        TrainConfig(grad_clip=-1)
    with pytest.raises(ValueError, match="base_lr must be a finite number > 0, got nan"):
        TrainConfig.from_dict({"base_lr": "nan"})
    from minivar.loading import load_tokenizer
    model = load_model(os.path.join(ROOT, "weights", "digits16", "var.pt"))
    vae = load_tokenizer(os.path.join(ROOT, "weights", "digits16", "tokenizer"))
    with pytest.raises(ValueError, match="cfg must be a finite number >= 0"):
        model.generate(torch.tensor([0]), cfg=float("nan"), vae=vae)


def test_a_user_folder_is_never_emptied_by_the_demo(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my numbers")
    (mine / "eval.json").write_text("{}")
    (mine / "mvar").mkdir()
    before = snapshot(mine)
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(mine)])
    assert "holds mvar but no run of minivar's" in e.value.code
    assert snapshot(mine) == before


def test_overwrite_replaces_a_demo_s_own_files_only(tmp_path):
    demo = tmp_path / "demo"
    folders.prepare_run_dir(str(demo), "demo", overwrite=True)
    (demo / "config.json").write_text(json.dumps(folders.run_record("demo")))
    for name in ("tokenizer", "mvar"):
        (demo / name).mkdir()
    (demo / "samples.png").write_bytes(b"png")
    (demo / "my_notes.txt").write_text("keep")
    folders.prepare_run_dir(str(demo), "demo", overwrite=True)  # a second `make demo`
    assert sorted(os.listdir(demo)) == ["my_notes.txt"]
    # a demo folder of earlier versions (no config.json at its top) is recognised as one
    for name, kind in (("tokenizer", "train-tokenizer"), ("mvar", "train")):
        (demo / name).mkdir()
        (demo / name / "config.json").write_text(json.dumps({"kind": kind}))
    (demo / "my_notes.txt").unlink()
    folders.prepare_run_dir(str(demo), "demo", overwrite=True)
    assert os.listdir(demo) == []


def test_overwrite_keeps_a_user_s_files_inside_the_run_s_own_folders(tmp_path):
    run = tmp_path / "run"
    folders.prepare_run_dir(str(run), "train")
    (run / "config.json").write_text(json.dumps(folders.run_record("train")))
    for name in ("ckpt/step_0000002.pt", "samples/step_0000002.png", "samples/mine/keep.png", "ckpt/NOTES.txt",
                 "model.pt", "notes.txt"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "step_0000004.pt").write_text("ours")
    (elsewhere / "theirs.txt").write_text("keep")
    os.symlink(elsewhere, run / "eval.json")  # a link is removed as a link, never followed
    folders.prepare_run_dir(str(run), "train", overwrite=True)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == ["ckpt", "ckpt/NOTES.txt", "notes.txt", "samples", "samples/mine", "samples/mine/keep.png"]
    assert sorted(os.listdir(elsewhere)) == ["step_0000004.pt", "theirs.txt"]


def test_the_demo_refuses_to_replace_a_sub_run_another_command_writes(tmp_path):
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "config.json").write_text(json.dumps(folders.run_record("demo")))
    (demo / "mvar").mkdir()
    (demo / "mvar" / "config.json").write_text(json.dumps(folders.run_record("train")))
    before = snapshot(demo)
    with checkpoints.folder_lock(str(demo / "mvar"), "minivar train"):
        with pytest.raises(folders.RunError, match="mvar is in use by another command"):
            folders.prepare_run_dir(str(demo), "demo", overwrite=True)
        assert {k: v for k, v in snapshot(demo).items() if k != "mvar/.lock"} == before


def test_a_diverging_tokenizer_stops_with_advice_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train-tokenizer", "--out", str(tmp_path / "t"), "--data", "synthetic", "--steps", "3",
              "--batch-size", "4", "--lr", "1e30", "--warmup-steps", "0", "--quiet"])
    assert e.value.code.startswith("error: the tokenizer loss became nan at step ")
    assert "minivar train-tokenizer --out" in e.value.code and "--lr 5e+29" in e.value.code


def test_make_clean_removes_no_run():
    text = open(os.path.join(ROOT, "Makefile")).read()
    recipe = text[text.index("\nclean:"):].split("\n\n")[0]
    assert "runs" not in recipe and "rm -rf runs" in text[text.index("\nclean-runs:"):]


# ---------------------------------------------------------------------- locks
HOLD = """
import sys, time
from minivar.checkpoints import folder_lock
with folder_lock(sys.argv[1], "minivar train (test)"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_is_refused_and_a_killed_holder_releases_the_lock(work, tmp_path):
    run = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["train", "--out", run, "--tokenizer", str(work / "tok.pt"), "--steps", "2", *TINY],
                     ["train-tokenizer", "--out", run, "--steps", "1"],
                     ["demo", "--out", run]):
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert f"pid {holder.pid}" in e.value.code and "is in use by" in e.value.code
        assert os.listdir(run) == [".lock"]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with checkpoints.folder_lock(run, "test"):  # the OS released it with the process
        pass
    assert os.listdir(run) == []


# ---------------------------------------------------------------------- checkpoints and resume
def one_thread(fn):
    def wrapped(*a, **kw):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*a, **kw)
        finally:
            torch.set_num_threads(threads)
    return wrapped


@one_thread
def train(out, *extra):
    main(["train", "--out", str(out), *extra, *TINY])


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_resume_skips_a_damaged_newest_checkpoint_and_repairs_the_log_and_tokens(work, tmp_path, capsys):
    whole, part = tmp_path / "whole", tmp_path / "part"
    train(whole, "--tokenizer", str(work / "tok.pt"), "--steps", "6")
    train(part, "--tokenizer", str(work / "tok.pt"), "--steps", "6", "--minutes", "1e-9")  # stops after step 1
    train(part, "--resume", "--steps", "4", "--minutes", "0")
    ckpts = T.checkpoint_paths(str(part))
    assert [os.path.basename(p) for p in ckpts] == ["step_0000002.pt", "step_0000004.pt"]
    with open(ckpts[-1], "r+b") as f:  # power loss: the newest checkpoint is cut short
        f.truncate(100)
    (part / "tokens.pt").write_bytes(b"\x00garbage")
    with open(part / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a crash in mid-write
    capsys.readouterr()
    train(part, "--resume", "--steps", "6", "--minutes", "0")
    text = capsys.readouterr().out
    assert "skipping" in text and "step_0000004.pt" in text and "resumed from" in text and "(step 2)" in text
    assert "tokens.pt is damaged" in text and "dropping line" in text
    recs = [json.loads(r) for r in open(part / "metrics.jsonl")]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    a, b = weights(whole / "model.pt"), weights(part / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # exact, as if never interrupted


def test_a_full_disk_is_one_error_line_and_keeps_the_earlier_checkpoints(work, tmp_path, monkeypatch, capsys):
    real, calls = torch.save, {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 3:  # tokens.pt and the step-2 checkpoint fit; the step-4 one does not
            real(obj, f, *a, **kw)
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: file write failed")
        return real(obj, f, *a, **kw)
    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train(run, "--tokenizer", str(work / "tok.pt"), "--steps", "6")
    assert e.value.code.startswith("error: no space left on device while writing ")
    assert e.value.code.split("writing ")[1].startswith(str(run / "ckpt" / "step_0000004.pt"))
    assert [os.path.basename(p) for p in T.checkpoint_paths(str(run))] == ["step_0000002.pt"]
    load_model(T.checkpoint_paths(str(run))[0])
    assert not [n for n in os.listdir(run / "ckpt") if n.startswith(".tmp-")]


def test_checkpoints_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoints.atomic_save({"x": torch.zeros(1)}, str(tmp_path / "a.pt"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.pt").st_mode & 0o777 == 0o644


def test_the_nan_stop_writes_no_poisoned_checkpoint_and_its_advice_works(work, tmp_path, monkeypatch):
    from minivar.training import recipe
    run = tmp_path / "run"
    real = T.optimizer_step

    def poison_after_step_3(r):
        out = real(r)
        if r.step == 4:  # the update of step 4 leaves NaN weights; its loss was finite
            with torch.no_grad():
                next(r.model.parameters()).fill_(float("nan"))
        return out
    monkeypatch.setattr(T, "optimizer_step", poison_after_step_3)
    with pytest.raises(SystemExit) as e:
        train(run, "--tokenizer", str(work / "tok.pt"), "--steps", "6")
    msg = e.value.code
    assert "no longer finite after step 4 (not saved)" in msg
    assert [os.path.basename(p) for p in T.checkpoint_paths(str(run))] == ["step_0000002.pt"]
    monkeypatch.setattr(T, "optimizer_step", real)
    advice = msg[msg.index("minivar train"):].split()[1:]  # run the command it gives, as written
    assert "--base-lr" in advice
    main(advice + ["--quiet"])
    recs = [json.loads(r) for r in open(run / "metrics.jsonl")]
    assert recs[-1]["step"] == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    assert recs[-1]["lr"] < recipe.TrainConfig.from_dict({"base_lr": 0.05}).lr  # the lower lr took effect


# ---------------------------------------------------------------------- train-tokenizer: checkpoints, resume
@one_thread
def tok_train(out, *extra):
    main(["train-tokenizer", "--out", str(out), "--data", "synthetic", "--batch-size", "4", "--ckpt-every", "2",
          "--log-every", "1", "--quiet", *extra])


def test_train_tokenizer_resumes_exactly(tmp_path, monkeypatch):
    from minivar.cli import tokenizer_run
    whole, part = tmp_path / "whole", tmp_path / "part"
    tok_train(whole, "--steps", "6")
    real = tokenizer_run.save_checkpoint

    def crash_after_step_4(out, state, keep_last):
        path = real(out, state, keep_last)
        if state["step"] == 4:
            raise KeyboardInterrupt  # killed right after a checkpoint
        return path
    monkeypatch.setattr(tokenizer_run, "save_checkpoint", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        tok_train(part, "--steps", "6")
    monkeypatch.setattr(tokenizer_run, "save_checkpoint", real)
    for extra, needle in ((["--weight-decay", "0.1"], "cannot change ['weight_decay']"),
                          (["--preset", "tiny32"], "cannot change --preset")):
        with pytest.raises(SystemExit) as e:
            main(["train-tokenizer", "--out", str(part), "--resume", *extra])
        assert needle in e.value.code
    tok_train(part, "--resume")
    a, b = (torch.load(d / "tokenizer.pt", weights_only=True)["state_dict"] for d in (whole, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = ([json.loads(r) for r in open(d / "metrics.jsonl")] for d in (whole, part))
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb] and [r["usage"] for r in la] == [r["usage"] for r in lb]


def test_sampling_redoes_a_png_it_cannot_read_back(work, tmp_path):
    pngs = tmp_path / "pngs"
    main(["sample", "--run", str(work / "run"), "--per-class", "1", "--png-dir", str(pngs), "--batch-size", "2"])
    first = {n: (pngs / n).read_bytes() for n in sorted(os.listdir(pngs)) if n.endswith(".png")}
    name = sorted(first)[1]
    (pngs / name).write_bytes(first[name][:20])  # cut short by a crash
    main(["sample", "--run", str(work / "run"), "--per-class", "1", "--png-dir", str(pngs), "--batch-size", "2",
          "--npz", str(tmp_path / "s.npz")])
    assert (pngs / name).read_bytes() == first[name]
