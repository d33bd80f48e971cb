"""benchmarks/vs_official.py in miniature, minivar alone: every row comes out, with positive numbers.

The official VAR code is never needed here: the run below passes var_src=None, so a VAR_SRC in the
environment changes nothing (CI never sets it). The side-by-side run is for people, see the
benchmark's docstring.
"""
import importlib.util
import os
import sys

import pytest

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "vs_official.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vs_official_bench", PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look the module up while building Setup
    spec.loader.exec_module(mod)
    return mod


def tiny(bench):
    return bench.Setup(depth=2, big_depth=3, head_dim=16, vocab=64, z_channels=8, patch_nums=(1, 2, 3, 4),
                       num_classes=10, tok_ch=32, train_batch=2, d_state=16, mamba_headdim=16)


def test_every_row_minivar_alone(bench):
    rep = bench.run(tiny(bench), bench.ROWS, reps=1, var_src=None, probe_n=128, probe_reps=1)
    assert rep["official"] is None and rep["checks"].items == [] and rep["probe"] > 0
    rows = bench.table_rows(rep)
    # every row, and under each "with decode" row the same run with the opt-in bf16 decode
    keys = [k for r in bench.ROWS for k in ((r, r + "-bf16") if r in ("sample", "sample-d16") else (r,))]
    assert [r["key"] for r in rows] == keys
    assert all("dB PSNR" in r["what"] for r in rows if r["key"].endswith("-bf16"))
    for r in rows:
        assert r["minivar_s"] > 0 and r["official_s"] is None
        if r["key"] in ("mvar-train", "mvar-sample"):  # minivar against itself: a ratio even without VAR_SRC
            assert r["ratio"] > 0 and r["met"] in (True, False)
        else:
            assert r["ratio"] is None and r["met"] is None
    assert rows[0]["gflops"] and float(rows[0]["gflops"].split()[0]) >= 0
    table = bench.format_table(rep)
    lines = table.splitlines()
    assert len(lines) == 2 + len(keys) and all(line.startswith("| ") for line in lines[2:])
    for r in rows:
        assert r["what"] in table
    text = bench.report(rep, ["benchmarks/vs_official.py", "--quick"])
    assert "python benchmarks/vs_official.py --quick" in text and "matmul probe" in text
    assert "not run (no VAR_SRC)" in text


def test_interleaving_order(bench):
    seen = []
    calls = {name: (lambda n=name: seen.append(n)) for name in "ABC"}
    times = bench.interleaved(calls, reps=3)
    assert seen == list("ABC") + list("ABC") + list("CBA") + list("ABC")  # warm-up, then A B C, C B A, ...
    assert set(times) == set("ABC") and all(t >= 0 for t in times.values())


def test_flop_count_matches_the_analytic_count(bench):
    """VAR-d4, B16, 256 px: 274 GFLOP of linear layers + 56 of block-causal attention (365 with
    dense attention, i.e. 462,400 pairs instead of 286,434)."""
    s = bench.Setup()
    model = bench.minivar_model(s, 4)
    flops = bench.train_step_flops(model, 16)
    assert 325e9 < flops < 335e9
    dense_extra = 12.0 * 16 * 256 * (680 * 680 - 286_434) * 4
    assert 360e9 < flops + dense_extra < 370e9


def test_unknown_row(bench):
    with pytest.raises(ValueError, match="unknown rows"):
        bench.run(tiny(bench), ["bogus"], reps=1)
