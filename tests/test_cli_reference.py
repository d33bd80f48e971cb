"""The README's command-line reference is the real --help of every verb (tools/cli_reference.py)."""
import argparse
import importlib.util
import os
import re
import sys

import pytest

from minivar.cli.main import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("cli_reference", os.path.join(ROOT, "tools", "cli_reference.py"))
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)


def section() -> str:
    return ref.current_section(open(ref.README).read())


def test_every_verb_and_shown_option_is_in_the_readme_reference():
    text = section()
    parser, _ = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in verbs.items():
        assert f"minivar {name} --help" in text
        shown = {s for a in sub._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
        hidden = {s for a in sub._actions if a.help == argparse.SUPPRESS for s in a.option_strings}
        in_readme = set(re.findall(r"--?[a-z0-9][a-z0-9_-]*", text))
        assert shown <= in_readme, f"{name}: {sorted(shown - in_readme)} missing; run python tools/cli_reference.py"
        assert not (hidden - shown) & in_readme


def test_readme_reference_equals_the_generated_help():
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    made_with = ref.generated_python(section())
    if made_with != py:
        pytest.skip(f"the reference was generated under Python {made_with}; argparse lays out help differently here")
    assert section() == ref.render(), "stale: run python tools/cli_reference.py"
