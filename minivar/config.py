"""Config dataclasses that document themselves, and reading them from JSON.

Every field of minivar's configs (``ModelConfig``, ``TokenizerConfig``, ``TrainConfig``,
``TokenizerTrainConfig``) is declared with ``setting(default, "meaning, unit, what 0 / -1 mean")``.
The text is kept in the field's metadata, so it exists at run time: the command line turns each
field into a typed option whose help is that text (``minivar.cli.options``), and ``from_dict``
reads a JSON config with the same types, naming any unknown key or wrong value.

Types come from the annotations: ``int``, ``float``, ``str``, ``bool``, ``tuple[float, float]``
(exactly two), ``tuple[int, ...]`` (any length), ``float | None`` and nested config dataclasses.
This module imports nothing of minivar.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from dataclasses import MISSING


class ConfigError(ValueError):
    """A config file or option that names an unknown key or holds a value of the wrong type."""


class FieldError(ConfigError):
    """A bad value of one field: ``str(e)`` is "NAME DETAIL"; ``e.message(option)`` says the same of
    the command-line option that set it."""

    def __init__(self, name: str, detail: str):
        self.name, self.detail = name, detail
        super().__init__(f"{name} {detail}")

    def message(self, name: str) -> str:
        return f"{name} {self.detail}"

    @property
    def option(self) -> str:
        return "--" + self.name.split(".")[-1].replace("_", "-")


class RangeError(FieldError):
    """A number outside its field's range (or not finite)."""

    def __init__(self, name: str, value, rule: str, doc: str = ""):
        self.value, self.rule = value, rule
        super().__init__(name, f"must be {rule}, got {value!r}" + (f" ({doc})" if doc else ""))


def setting(default=MISSING, doc: str = "", *, factory=None, choices: tuple = (), group: str = "",
            bound: str = "", raw: dict | None = None, at_least=None, above=None, below=None, at_most=None):
    """A documented dataclass field.

    ``at_least`` / ``above`` / ``below`` / ``at_most``: the range of a number (each number of a
    tuple); floats must also be finite. ``check_ranges`` enforces them.
    ``choices``: the allowed values of a str field. ``group``: a heading for the command line's help.
    ``bound``: what sets the field instead of the user (e.g. "tokenizer"); such fields are not
    options. ``raw``: for a nested config, the keyword arguments its default was built from, so
    that an override of one field re-derives the others (a new ``depth`` gives a new default width).
    """
    meta = {"doc": doc, "choices": tuple(choices), "group": group, "bound": bound, "raw": raw,
            "range": (at_least, above, below, at_most)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def range_text(at_least=None, above=None, below=None, at_most=None) -> str:
    """'>= 1', '> 0', 'in [0, 1)', ... (empty when there is no bound)."""
    lo = f"[{at_least}" if at_least is not None else f"({above}" if above is not None else None
    hi = f"{below})" if below is not None else f"{at_most}]" if at_most is not None else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + lo[1:]
    if hi:
        return ("< " if hi[-1] == ")" else "<= ") + hi[:-1]
    return ""


def in_range(x, at_least=None, above=None, below=None, at_most=None) -> bool:
    """Finite and within the bounds (the ones that are not None)."""
    return (math.isfinite(x) and (at_least is None or x >= at_least) and (above is None or x > above)
            and (below is None or x < below) and (at_most is None or x <= at_most))


def check_ranges(obj) -> None:
    """RangeError for the first field of ``obj`` outside its declared range or not finite."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        bounds = f.metadata.get("range") or (None,) * 4
        for x in value if isinstance(value, tuple) else (value,):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if not in_range(x, *bounds):
                rule = range_text(*bounds)
                rule = f"a finite number {rule}".strip() if not math.isfinite(x) else rule
                raise RangeError(f.name, value, rule, f.metadata.get("doc", ""))


def field_types(cls) -> dict[str, typing.Any]:
    """{field name: annotation}, with the string annotations of ``from __future__`` resolved."""
    return typing.get_type_hints(cls)


def read_json(path: str) -> dict:
    """A JSON config file as a dict, or one ConfigError saying what is wrong with it."""
    if not os.path.isfile(path):
        what = "is a folder, not a JSON file" if os.path.isdir(path) else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        with open(path) as f:
            values = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a JSON object of fields")
    return values


# ---------------------------------------------------------------------- one value
def _unwrap_optional(kind):
    """(the type inside ``X | None`` / ``Optional[X]``, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], True
    return kind, False


def type_name(kind) -> str:
    kind, optional = _unwrap_optional(kind)
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        inner = args[0].__name__
        name = f"{inner} {inner} ..." if args[-1] is Ellipsis else " ".join(a.__name__ for a in args)
    else:
        name = kind.__name__
    return name + (" or none" if optional else "")


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(kind, value, name: str = "value"):
    """``value`` (from JSON or a command line string) as the annotated type, or a ConfigError."""
    kind, optional = _unwrap_optional(kind)
    if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None

    def bad(why: str = ""):
        return FieldError(name, f"expects {type_name(kind)}, got {value!r}{why}")

    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise bad()
        return from_dict(kind, value, where=f"{name}.", nested=True)
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        parts = value.replace(",", " ").split() if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)):
            raise bad()
        if args[-1] is Ellipsis:
            inner = [args[0]] * len(parts)
        elif len(parts) == len(args):
            inner = list(args)
        else:
            raise bad(f" ({len(args)} values)")
        return tuple(parse_value(t, v, name) for t, v in zip(inner, parts))
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in TRUE_WORDS + FALSE_WORDS:
            return str(value).lower() in TRUE_WORDS
        raise bad(" (true or false)")
    if kind is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, float):
            if not value.is_integer():
                raise bad()
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad() from None
    if kind is float:
        if isinstance(value, bool):
            raise bad()
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad() from None
    if kind is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise bad()


# ---------------------------------------------------------------------- a whole config
def from_dict(cls, values: dict, base=None, where: str = "", nested: bool = False):
    """``cls`` built from ``values`` (a JSON object), on top of ``base`` (default: cls's defaults).

    Unknown keys and values of the wrong type raise ``ConfigError`` naming the key (with the
    closest known name). A nested config is merged field by field; without a base it starts from
    its ``raw`` keyword arguments, so fields derived from others are derived again. Inside a nested
    config (``nested``) the fields that something else sets (``bound``) are refused.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__} must be a JSON object of fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kinds = field_types(cls)
    for key in values:
        if key in fields and nested and fields[key].metadata.get("bound"):
            raise ConfigError(f"{where}{key} is set by the {fields[key].metadata['bound']}; remove it from the config")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{where}{key}'{hint}")
    kwargs = {}
    for key, value in values.items():
        f, kind = fields[key], kinds[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            sub_base = getattr(base, key) if base is not None else None
            if sub_base is None and f.metadata.get("raw") is not None:
                value = {**f.metadata["raw"], **value}
            kwargs[key] = from_dict(kind, value, sub_base, where=f"{where}{key}.", nested=True)
        else:
            kwargs[key] = parse_value(kind, value, f"{where}{key}")
            choices = f.metadata.get("choices")
            if choices and kwargs[key] not in choices:
                raise FieldError(f"{where}{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {e}") from None


def to_dict(obj, drop_bound: bool = False) -> dict:
    """A config as a JSON-ready dict (tuples as lists, nested configs as objects). Inside a nested
    config the fields that something else sets (``bound``) are left out."""
    out = {}
    for f in dataclasses.fields(obj):
        if drop_bound and f.metadata.get("bound"):
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v, drop_bound=True)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out
