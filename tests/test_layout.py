"""The package's layering (ARCHITECTURE.md): imports run one way, and every module says what it is for."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "minivar")

# layer of each top-level part of the package; a module may import only parts of lower layers
# (and its own part); "__version__" is the string in minivar/__init__.py. The one allowed upward
# import: the model's generate / edit -> sample.
LAYERS = {
    "scales": 0, "config": 0, "checkpoints": 0, "__version__": 0, "environment": 0, "data": 0, "viz": 0,
    "kernels": 0, "fast": 0,
    "tokenizer": 1, "models": 2, "official": 3, "loading": 4, "sample": 4,
    "training": 5, "evaluation": 5, "teaching": 6, "cli": 7, "__main__": 8, "__init__": 0,
}
ALLOWED_UPWARD = {("models/transformer.py", "sample")}


def modules():
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                yield os.path.relpath(os.path.join(folder, f), PKG)


def part_of(rel: str) -> str:
    return rel.split(os.sep)[0].removesuffix(".py")


def imported_parts(rel: str):
    """Top-level parts of minivar that the module imports (relative or absolute), with line numbers."""
    tree = ast.parse(open(os.path.join(PKG, rel)).read())
    pkg = ["minivar"] + rel.split(os.sep)[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "minivar":
                target = node.module.split(".")
            else:
                continue
            if len(target) == 1:  # from minivar import a, b
                for alias in node.names:
                    yield alias.name, node.lineno
            else:
                yield target[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "minivar" and len(parts) > 1:
                    yield parts[1], node.lineno


@pytest.mark.parametrize("rel", sorted(modules()))
def test_imports_run_one_way(rel):
    mine = LAYERS[part_of(rel)]
    for part, line in imported_parts(rel):
        if part == part_of(rel) or (rel, part) in ALLOWED_UPWARD:
            continue
        assert part in LAYERS, f"{rel}:{line} imports minivar.{part}, which ARCHITECTURE.md does not place"
        assert LAYERS[part] < mine or (LAYERS[part] == 0 and mine == 0 and part_of(rel) != "fast"), \
            f"{rel}:{line} imports minivar.{part} (layer {LAYERS[part]}) from layer {mine}"


def test_fast_paths_and_kernels_import_nothing_of_minivar():
    for rel in modules():
        if part_of(rel) in ("fast", "kernels"):
            outside = [p for p, _ in imported_parts(rel) if p != part_of(rel)]
            assert not outside, f"{rel} imports {outside}"


@pytest.mark.parametrize("rel", sorted(modules()))
def test_every_module_opens_with_what_it_is_for(rel):
    doc = ast.get_docstring(ast.parse(open(os.path.join(PKG, rel)).read()))
    assert doc and len(doc.split()) >= 4, f"{rel} has no docstring saying what it is for"
