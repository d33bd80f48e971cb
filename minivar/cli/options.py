"""Command-line options generated from the config dataclasses.

Each field declared with ``minivar.config.setting`` becomes one option: ``--base-lr`` for
``base_lr``, its help the field's documentation with its type and default, its values checked
by ``minivar.config`` (the same code that reads JSON configs, so a file and a flag fail with the
same message). Booleans are switches (``--compile`` / ``--no-compile``), two-number tuples take
two values (``--betas 0.9 0.95``). The underscore spelling of every option (``--base_lr``) and
the older value forms (``--betas 0.9,0.95``, ``--attn_l2_norm false``) are accepted but not shown;
``older_forms`` rewrites them before parsing.

Options default to "not given": ``given(args, names)`` returns only what the user typed, so a
config file, a resumed run or a preset underneath keeps its own values.

Why argparse and not a library (tyro, jsonargparse): the options need two things those make
awkward -- hidden aliases for the spellings of earlier versions, and nested model fields that
stand flat on the command line (``--depth``, not ``--model.depth``) -- and argparse keeps the
install at the packages a course already has.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing

from .. import config


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (examples keep their lines); option help wrapped."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=min(100, argparse.HelpFormatter(prog)._width + 2))


def _nargs(kind):
    """None for one value; "+" for tuple[X, ...]; n for a tuple of n values."""
    kind = config._unwrap_optional(kind)[0]
    if typing.get_origin(kind) is not tuple:
        return None
    args = typing.get_args(kind)
    return "+" if args[-1] is Ellipsis else len(args)


def older_forms(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The option forms of earlier versions rewritten into today's: a tuple with commas
    (``--betas 0.9,0.95`` -> ``--betas 0.9 0.95``) and a switch with a value (``--compile true`` ->
    ``--compile``, ``--attn_l2_norm false`` -> ``--no-attn_l2_norm``)."""
    actions = list(_all_actions(parser))
    tuples = {s for a in actions if a.nargs not in (None, 0, "?", "*") and a.option_strings for s in a.option_strings}
    switches = {s for a in actions if isinstance(a, argparse.BooleanOptionalAction) for s in a.option_strings
                if not s.startswith("--no-")}
    words = {**{w: True for w in config.TRUE_WORDS}, **{w: False for w in config.FALSE_WORDS}}
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        key, eq, val = tok.partition("=")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if key in tuples and eq and "," in val:
            out += [key, *val.split(",")]
        elif i and argv[i - 1] in tuples and "," in tok:
            out += tok.split(",")
        elif key in switches and eq and val.lower() in words:
            out.append(key if words[val.lower()] else "--no-" + key[2:])
        elif tok in switches and nxt is not None and nxt.lower() in words:
            out.append(tok if words[nxt.lower()] else "--no-" + tok[2:])
            i += 1
        else:
            out.append(tok)
        i += 1
    return out


def _all_actions(parser):
    for a in parser._actions:
        yield a
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _all_actions(sub)


def _shown_default(value) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    if value == "":
        return "''"
    return str(value)


def option_fields(cls, skip: tuple = ()):
    """(field, annotation, default) of every option of ``cls``, nested configs flattened."""
    kinds = config.field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("bound"):
            continue
        kind = kinds[f.name]
        if dataclasses.is_dataclass(kind):
            raw = f.metadata.get("raw") or {}
            for sub, sub_kind, sub_default in option_fields(kind, skip):
                yield sub, sub_kind, raw.get(sub.name, sub_default)
        else:
            yield f, kind, f.default if f.default is not dataclasses.MISSING else f.default_factory()


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple = (), default_note: str = "",
                title: str = "") -> list[str]:
    """One option per field of ``cls`` (nested configs flattened, grouped under their ``group``
    metadata or ``title``); returns their names. ``default_note`` replaces the shown default
    (e.g. "from --preset")."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    names = []
    for f, kind, default in option_fields(cls, skip):
        heading = f.metadata.get("group") or title or cls.__name__
        if heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        add_option(groups[heading], f, kind, default_note or _shown_default(default))
        names.append(f.name)
    return names


def add_option(group, f: dataclasses.Field, kind, default: str) -> None:
    name, flag = f.name, "--" + f.name.replace("_", "-")
    choices = f.metadata.get("choices") or ()
    rule = config.range_text(*(f.metadata.get("range") or ()))
    kind_text = config.type_name(kind) + (f" {rule}" if rule else "")
    help_ = f"{f.metadata.get('doc', '')} [{kind_text}; default: {default}]".replace("%", "%%")
    inner = config._unwrap_optional(kind)[0]
    if inner is bool:
        group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=help_.replace("bool; ", ""))
        if "_" in name:
            group.add_argument("--" + name, dest=name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return
    metavar = "{" + ",".join(choices) + "}" if choices else config.type_name(inner).split()[0].upper()
    if inner is str and not choices:
        metavar = name.upper()
    nargs = _nargs(kind)
    group.add_argument(flag, dest=name, metavar=metavar, nargs=nargs, default=argparse.SUPPRESS, help=help_)
    if "_" in name:
        group.add_argument("--" + name, dest=name, nargs=nargs, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def given(args: argparse.Namespace, names: list[str]) -> dict:
    """{field: value} of the generated options the user gave (strings, or lists for tuples);
    ``minivar.config.from_dict`` turns them into typed values."""
    out = {}
    for n in names:
        if hasattr(args, n):
            v = getattr(args, n)
            out[n] = " ".join(v) if isinstance(v, list) else v
    return out


# ---------------------------------------------------------------------- types of the hand-written options
def number(kind=int, hint: str = "", **bounds):
    """An argparse type: an int / float within ``bounds`` (as in ``minivar.config.setting``), finite;
    ``hint`` is added to the error."""
    rule = config.range_text(**bounds)

    def parse(text: str):
        try:
            value = config.parse_value(kind, text)
        except config.ConfigError:
            raise argparse.ArgumentTypeError(f"expects {kind.__name__}, got {text!r}") from None
        if not config.in_range(value, **bounds):
            raise argparse.ArgumentTypeError(f"must be {'a finite number ' if kind is float else ''}{rule}, "
                                             f"got {text}" + (f" ({hint})" if hint else ""))
        return value
    parse.__name__ = kind.__name__
    return parse


def int_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (whole numbers >= 0)."""
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects comma-separated whole numbers such as 0,1,2, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expects numbers >= 0, got {text!r}")
    return values


def existing_file(text: str) -> str:
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the file")
    return text


def output_file(text: str) -> str:
    """A file to be written: not a folder, in a folder that exists and is writable."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder of {text} does not exist; create it first")
    return _writable_place(text, folder)


def output_folder(text: str) -> str:
    """A folder to be written into: a folder, or a path that can be made."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return _writable_place(text, os.path.abspath(text))


def _writable_place(text: str, folder: str) -> str:
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is not writable")
    return text
