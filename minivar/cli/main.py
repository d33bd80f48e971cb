"""The command line: ``minivar <command>`` or ``python -m minivar <command>``; from Python,
``main(["train", "--out", ...])``. Each verb's parser is built by one function below; the options
of ``train`` and ``train-tokenizer`` are generated from the config dataclasses (``options.py``)."""
from __future__ import annotations

import argparse
import difflib
import errno
import os
import shutil
import sys
import textwrap

import torch

from .. import __version__, config, data
from ..config import ConfigError, FieldError
from ..evaluation.fid import EvalInputError, reconstruct, run_fid
from ..fast.cpu_memory import keep_freed_memory
from ..tokenizer.vqvae import TOKENIZER_PRESETS, TokenizerConfig
from ..training.recipe import TrainConfig, TrainingDiverged
from ..training.tokenizer_trainer import TokenizerTrainConfig
from ..checkpoints import CheckpointError, DiskFullError, FolderLocked
from ..teaching.grading import GradeError
from . import classroom, folders, options, runs, sources
from .demo import check_minutes, run_demo
from .tokenizer_run import train_tokenizer_in_folder

DESCRIPTION = """\
minivar: VAR and M-VAR (next-scale prediction) on any CPU.

A run folder holds config.json, metrics.jsonl, ckpt/step_*.pt, model.pt, tokens.pt (the token
indices, encoded once) and PNG sample grids. `minivar COMMAND --help` lists a command's options.

examples:
  minivar demo
  minivar train-tokenizer --data digits --preset tiny16 --out runs/tok
  minivar train --out runs/mvar --tokenizer runs/tok/tokenizer.pt --mixer mvar --steps 800
  minivar train --out runs/mvar --resume
  minivar sample --run runs/mvar --per-class 8 --cfg 1.5
  minivar sample --model weights/digits16/mvar --per-class 8
  minivar eval --run runs/mvar --per-class 20 --seeds 0,1,2
  minivar export --run runs/mvar --out shared/digits
  minivar fid --samples out/var_d16.npz --ref VIRTUAL_imagenet256_labeled.npz \\
      --inception pt_inception-2015-12-05-6726825d.pth
  minivar reconstruct --tokenizer vae_ch160v4096z32.pth --data-path imagenet/val --png-dir out/rec
  minivar handout --out course_2027
  minivar grade submitted/* --out grades.csv
"""


class Parser(argparse.ArgumentParser):
    """argparse with a 'did you mean' for a mistyped option, and no prefix matching."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", options.HelpFormatter)
        super().__init__(*a, allow_abbrev=False, **kw)

    def parse_args(self, args=None, namespace=None):
        args = options.older_forms(list(sys.argv[1:] if args is None else args), self)
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = getattr(ns, "_parser", self)
            known = [s for a in sub._actions for s in a.option_strings]
            close = difflib.get_close_matches(extra[0].split("=")[0], known, n=1)
            sub.error(f"unrecognized arguments: {' '.join(extra)}" + (f"; did you mean {close[0]}?" if close else ""))
        return ns

    def error(self, message):
        """The usage, then one line that starts with 'error:' (argparse writes 'PROG: error:')."""
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _verb(sub, name: str, help_: str, example: str, description: str = ""):
    width = min(96, shutil.get_terminal_size().columns - 2)
    text = textwrap.fill(description or help_[:1].upper() + help_[1:] + ".", width)
    p = sub.add_parser(name, help=help_, description=text, epilog=f"example:\n  {example}")
    p.set_defaults(_parser=p)
    return p


# ---------------------------------------------------------------------- the verbs' options
def demo_parser(sub) -> None:
    d = _verb(sub, "demo", "tokenizer + M-VAR on digits, a sample grid and metrics (about 5 min on 2 cores)",
              "minivar demo --out runs/demo")
    d.add_argument("--out", default="runs/demo", type=options.output_folder,
                   help="folder of the demo's runs [default: runs/demo]")
    d.add_argument("--minutes", type=float, default=None, metavar="FLOAT",
                   help="cap on the training time in minutes (default: none; the recipe is fixed in steps, "
                   "and a capped run that misses the pass mark exits with an error)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")


def tokenizer_parser(sub) -> dict:
    t = _verb(sub, "train-tokenizer", "train a multi-scale VQ tokenizer (a preset, optionally changed field by field)",
              "minivar train-tokenizer --data digits --preset tiny16 --steps 1500 --out runs/tok")
    t.add_argument("--out", required=True, type=options.output_folder, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--data", choices=sorted(data.DATASETS), help="dataset [default: digits]")
    t.add_argument("--data-path", help="folder of the fashion / emoji / imagefolder files")
    t.add_argument("--data_path", dest="data_path", help=argparse.SUPPRESS)
    t.add_argument("--preset", choices=sorted(TOKENIZER_PRESETS),
                   help="the tokenizer's architecture; the TokenizerConfig options below change it [default: tiny16]")
    t.add_argument("--minutes", type=options.number(float, hint="0: no limit", at_least=0), default=0.0,
                   metavar="FLOAT",
                   help="stop after this many minutes (0: no limit) [default: 0]")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"train": options.add_options(t, TokenizerTrainConfig, skip=("time_limit_s",),
                                         title="training (TokenizerTrainConfig)"),
            "arch": options.add_options(t, TokenizerConfig, default_note="from --preset",
                                        title="architecture (TokenizerConfig)")}


def train_parser(sub) -> list[str]:
    tr = _verb(sub, "train", "train a VAR / M-VAR transformer in a run folder",
               "minivar train --out runs/mvar --tokenizer runs/tok/tokenizer.pt --mixer mvar --steps 800",
               description="Train a VAR / M-VAR transformer in a run folder. Every TrainConfig field is an option; "
               "--config reads them from a JSON file (a configs/ preset or a run's config.json) and the "
               "command line wins.")
    tr.add_argument("--out", required=True, type=options.output_folder, help="run folder")
    tr.add_argument("--config", type=options.existing_file, help="JSON file of TrainConfig fields")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    return options.add_options(tr, TrainConfig, title="model (ModelConfig)")


def _model_source(s, name: str) -> None:
    s.add_argument("--run", help="run folder of `train` (its model.pt, or its newest checkpoint)")
    s.add_argument("--model", help="a folder written by save_pretrained / `export` (config.json + "
                   "model.safetensors), or a model.pt")
    s.add_argument("--checkpoint", type=options.existing_file, help="with --run: this model file instead of "
                   "RUN/model.pt")
    s.add_argument("--per-class", type=options.number(int, at_least=1), default=8 if name == "sample" else 20,
                   metavar="INT",
                   help=f"samples per class [default: {8 if name == 'sample' else 20}]")
    s.add_argument("--cfg", type=options.number(float, at_least=0), default=1.5, metavar="FLOAT",
                   help="classifier-free guidance strength: the logits mix "
                   "(1 + t) cond - t uncond with t rising linearly over the scales to this value (0: no "
                   "guidance) [default: 1.5]")
    s.add_argument("--top-k", type=options.number(int, at_least=0), default=0, metavar="INT",
                   help="sample from the k most likely tokens (0: all) [default: 0]")
    s.add_argument("--top-p", type=options.number(float, at_least=0, at_most=1), default=0.0, metavar="FLOAT",
                   help="then from the smallest set whose probability "
                   "reaches p (0: off) [default: 0]")


def sample_parser(sub) -> None:
    s = _verb(sub, "sample", "write a class-conditional sample grid, or one PNG per sample",
              "minivar sample --run runs/mvar --per-class 8 --cfg 1.5")
    _model_source(s, "sample")
    s.add_argument("--official", type=options.existing_file,
                   help="an official VAR / M-VAR checkpoint (var_d16.pth, d16.pth, ...); needs "
                   "--tokenizer")
    s.add_argument("--tokenizer",
                   help="the tokenizer to decode with: vae_ch160v4096z32.pth for --official; for --run / "
                   "--model it replaces the one they name")
    s.add_argument("--seed", type=options.number(int, at_least=0), default=0, metavar="INT",
                   help="sampling seed (batch b of --png-dir uses seed + b) [default: 0]")
    s.add_argument("--png", type=options.output_file,
                   help="output PNG (default: samples/sample_cfg<cfg>_seed<seed>.png in the run "
                   "folder, or in the current folder for --model / --official)")
    s.add_argument("--png-dir", type=options.output_folder,
                   help="write one PNG per sample here instead of a grid (ImageNet protocol: "
                   "--per-class 50 --cfg 1.5 --top-k 900 --top-p 0.96)")
    s.add_argument("--npz", type=options.output_file,
                   help="with --png-dir: also pack the PNGs into this npz (arr_0, for `fid`)")
    s.add_argument("--batch-size", type=options.number(int, at_least=1), default=250, metavar="INT",
                   help="images per sampling batch [default: 250]")
    s.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast on CUDA [default: none]")
    s.add_argument("--decode-bf16", action="store_true", help="decode images in bf16 (approximate: pixels move "
                   "by about 1e-2; faster on CPUs with AMX / AVX512-BF16)")


def eval_parser(sub) -> None:
    e = _verb(sub, "eval", "FD-cls, KID, precision / recall, conditional accuracy and memorisation on held-out data",
              "minivar eval --run runs/mvar --per-class 20 --seeds 0,1,2")
    _model_source(e, "eval")
    e.add_argument("--tokenizer", help="with --model: the tokenizer (default: the one its config names)")
    e.add_argument("--seeds", type=options.int_list, default="0", metavar="INT,INT,...",
                   help="comma-separated sampling seeds; the report gives mean and "
                   "standard deviation over them [default: 0]")
    e.add_argument("--classifier", type=options.existing_file,
                   help="the frozen feature classifier (default: trained once and cached in "
                   "runs/classifiers/)")
    e.add_argument("--out", type=options.output_file,
                   help="the JSON report (default: RUN/eval.json; needed with --model)")


def export_parser(sub) -> None:
    x = _verb(sub, "export", "write a run's model and tokenizer as save_pretrained folders (config.json + "
              "model.safetensors)", "minivar export --run runs/mvar --out shared/digits")
    x.add_argument("--run", required=True, help="run folder of `train`")
    x.add_argument("--out", required=True, type=options.output_folder, help="writes OUT/tokenizer and OUT/NAME")
    x.add_argument("--name", help="the model's folder name [default: the run's mixer, var or mvar]")
    x.add_argument("--checkpoint", type=options.existing_file, help="this model file instead of RUN/model.pt")


def fid_parser(sub) -> None:
    f = _verb(sub, "fid", "FID / IS / precision / recall of an npz of samples (ImageNet protocol)",
              "minivar fid --samples out/var_d16.npz --ref VIRTUAL_imagenet256_labeled.npz "
              "--inception pt_inception-2015-12-05-6726825d.pth --out out/var_d16_fid.json")
    f.add_argument("--samples", required=True, type=options.existing_file,
                   help="npz with arr_0 uint8 (N, H, W, 3), e.g. from `sample --npz`")
    f.add_argument("--ref", required=True, type=options.existing_file,
                   help="reference batch, e.g. VIRTUAL_imagenet256_labeled.npz")
    f.add_argument("--inception", required=True, type=options.existing_file,
                   help="pt_inception-2015-12-05-6726825d.pth (hash-checked)")
    f.add_argument("--out", type=options.output_file, help="JSON report (N, the files' SHA-256, every setting)")
    f.add_argument("--batch-size", type=options.number(int, at_least=1), default=200, metavar="INT",
                   help="images per Inception batch [default: 200]")
    f.add_argument("--device", help="default: cuda when available, else cpu")


def reconstruct_parser(sub) -> None:
    r = _verb(sub, "reconstruct", "tokenizer reconstructions of an image folder, for the rFID",
              "minivar reconstruct --tokenizer vae_ch160v4096z32.pth --data-path imagenet/val --png-dir out/rec "
              "--npz out/rec.npz --orig-npz out/val.npz")
    r.add_argument("--tokenizer", required=True, help="a minivar tokenizer or the official vae_ch160v4096z32.pth")
    r.add_argument("--data", default="imagefolder", choices=("imagefolder",), help="[default: imagefolder]")
    r.add_argument("--data-path", required=True, help="DIR/<class>/<image> (ImageNet: val/n01440764/*.JPEG)")
    r.add_argument("--png-dir", required=True, type=options.output_folder, help="one PNG per reconstruction")
    r.add_argument("--npz", type=options.output_file, help="also pack the reconstructions into this npz (arr_0)")
    r.add_argument("--orig-npz", type=options.output_file, help="also write the centre-cropped originals (the rFID "
                   "reference) here")
    r.add_argument("--batch-size", type=options.number(int, at_least=1), default=50, metavar="INT",
                   help="images per batch [default: 50]")
    r.add_argument("--limit", type=options.number(int, at_least=0), default=0, metavar="INT",
                   help="first N images per class (0: all) [default: 0]")


def build_parser() -> tuple[Parser, dict]:
    p = Parser(prog="minivar", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"minivar {__version__} (torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = {}
    demo_parser(sub)
    names["train-tokenizer"] = tokenizer_parser(sub)
    names["train"] = train_parser(sub)
    sample_parser(sub)
    eval_parser(sub)
    export_parser(sub)
    fid_parser(sub)
    reconstruct_parser(sub)
    classroom.handout_parser(sub, _verb)
    classroom.grade_parser(sub, _verb)
    return p, names


# ---------------------------------------------------------------------- train / train-tokenizer
def train_config(args, names: list[str]) -> TrainConfig:
    """The run's TrainConfig: defaults (or the stored run's, with --resume) < --config file < options."""
    values = config.read_json(args.config) if args.config else {}
    if values.get("kind") == "train" and "train" in values:  # a run's config.json
        values = values["train"]
    values = {**values, **options.given(args, names)}
    stored = os.path.join(args.out, "config.json")
    if not (args.resume and os.path.exists(stored)):
        return TrainConfig.from_dict(values)
    prev = config.read_json(stored)
    if prev.get("kind") != "train":
        raise ConfigError(f"{args.out} holds a {prev.get('kind')} run, not a train run; choose another --out")
    old = TrainConfig.from_dict(prev["train"])
    cfg = TrainConfig.from_dict(values, base=old)
    changed = [k for k, v in _flat(cfg.to_dict()).items()
               if v != _flat(old.to_dict()).get(k) and k not in runs.RESUME_MAY_CHANGE]
    if changed:
        raise ConfigError(f"--resume cannot change {changed} (an exact resume needs the same recipe); "
                          f"only {sorted(runs.RESUME_MAY_CHANGE)} may change")
    if cfg.base_lr != old.base_lr:
        print(f"note: resuming with base_lr {cfg.base_lr} instead of {old.base_lr}: the learning rate follows the "
              "new value from the checkpoint on, so this run no longer repeats an uninterrupted one")
    return cfg


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def run_train(args, names: list[str]) -> dict:
    cfg = train_config(args, names)
    rank, world = runs.init_distributed()  # under torchrun: gloo on CPU, NCCL on GPU
    runs.check_train_inputs(cfg)  # every bad input is reported before anything is written
    with folders.writing(args.out, "minivar train"):
        if rank == 0:
            folders.prepare_run_dir(args.out, "train", args.overwrite, args.resume)
            runs.write_json(os.path.join(args.out, "config.json"), folders.run_record("train", train=cfg.to_dict()))
        if world > 1:
            torch.distributed.barrier()
        return runs.train_in_folder(cfg, args.out, resume=args.resume, progress=not args.quiet)


# what `train-tokenizer --resume` may change: how long it runs, how often it writes, and the lr (the
# way to continue after a divergence; the run is then no longer a replay)
TOKENIZER_RESUME_MAY_CHANGE = {"steps", "log_every", "ckpt_every", "time_limit_s", "lr"}


def tokenizer_configs(args, names: dict):
    """(data, data_path, preset, TokenizerConfig, TokenizerTrainConfig): from the options, or, with
    --resume, from the stored run (the options may then change only TOKENIZER_RESUME_MAY_CHANGE)."""
    given_arch, given_train = options.given(args, names["arch"]), options.given(args, names["train"])
    stored = os.path.join(args.out, "config.json")
    if not (args.resume and os.path.isfile(stored)):
        preset = args.preset or "tiny16"
        arch = config.from_dict(TokenizerConfig, given_arch, base=TOKENIZER_PRESETS[preset])
        tcfg = config.from_dict(TokenizerTrainConfig, given_train)
        return args.data or "digits", args.data_path, preset, arch, tcfg
    prev = config.read_json(stored)
    if prev.get("kind") != "train-tokenizer":
        raise ConfigError(f"{args.out} holds a {prev.get('kind')} run, not a train-tokenizer run; choose another --out")
    for option, value in (("data", args.data), ("preset", args.preset)):
        if value is not None and value != prev.get(option):
            raise ConfigError(f"--resume cannot change --{option} (the run used {prev.get(option)!r})")
    old_arch, old_train = (config.from_dict(TokenizerConfig, prev["tokenizer"]),
                           config.from_dict(TokenizerTrainConfig, prev["train"]))
    arch = config.from_dict(TokenizerConfig, given_arch, base=old_arch)
    tcfg = config.from_dict(TokenizerTrainConfig, given_train, base=old_train)
    changed = [k for k in given_arch if getattr(arch, k) != getattr(old_arch, k)]
    changed += [k for k in given_train if getattr(tcfg, k) != getattr(old_train, k)
                and k not in TOKENIZER_RESUME_MAY_CHANGE]
    if changed:
        raise ConfigError(f"--resume cannot change {changed} (an exact resume needs the same recipe); "
                          f"only {sorted(TOKENIZER_RESUME_MAY_CHANGE - {'time_limit_s'})} and --minutes may change")
    if tcfg.lr != old_train.lr:
        print(f"note: resuming with lr {tcfg.lr} instead of {old_train.lr}: this run no longer repeats an "
              "uninterrupted one")
    return prev["data"], args.data_path or prev["data_path"], prev["preset"], arch, tcfg


def run_tokenizer(args, names: dict) -> list[dict]:
    minutes = check_minutes(args.minutes, zero_means_no_limit=True)
    data_name, data_path, preset, arch, tcfg = tokenizer_configs(args, names)
    tcfg.time_limit_s = minutes * 60 if minutes else None
    with folders.writing(args.out, "minivar train-tokenizer"):
        return train_tokenizer_in_folder(args.out, data_name, data_path, preset, arch, tcfg,
                                         quiet=args.quiet, overwrite=args.overwrite, resume=args.resume)


# ---------------------------------------------------------------------- dispatch
def main(argv=None) -> None:
    parser, names = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("demo", "train-tokenizer", "train") and not torch.cuda.is_available():
        keep_freed_memory()  # CPU training: reuse freed activations instead of page-faulting them in again
    try:
        if args.command == "demo":
            check_minutes(args.minutes)  # before the folder is made
            with folders.writing(args.out, "minivar demo"):
                passed = run_demo(args.out, args.minutes, args.quiet)["passed"]
            if not passed:
                sys.exit(1)
        elif args.command == "train-tokenizer":
            run_tokenizer(args, names["train-tokenizer"])
        elif args.command == "train":
            run_train(args, names["train"])
        elif args.command == "sample":
            with folders.writing(*runs.sample_target(args)):
                runs.sample_grid(args)
        elif args.command == "eval":
            with folders.writing(*runs.eval_target(args)):
                runs.evaluate(args)
        elif args.command == "export":
            with folders.writing(args.out, "minivar export"):
                sources.export(args)
        elif args.command == "fid":
            run_fid(args)
        elif args.command == "reconstruct":
            reconstruct(args)
        elif args.command == "handout":
            classroom.run_handout(args)
        elif args.command == "grade":
            classroom.run_grade(args)
    except FieldError as e:  # named as the option the user typed
        sys.exit(f"error: {e.message(e.option)}")
    except (ConfigError, data.DatasetMissingError, data.DatasetFormatError, runs.RunError, EvalInputError,
            FolderLocked, DiskFullError, CheckpointError, TrainingDiverged, GradeError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        sys.exit(f"error: {DiskFullError(e.filename or 'a file')}")


if __name__ == "__main__":
    main()
