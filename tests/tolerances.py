"""Error assertions shared by the parity tests (readable failure messages)."""


def close(a, b, tol):
    """max |a - b| <= tol."""
    err = (a - b).abs().max().item()
    assert err <= tol, f"max abs error {err:.3g} > {tol:.3g}"


def rel_close(a, b, rtol):
    """max |a - b| <= rtol * max |b|."""
    err = ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
    assert err <= rtol, f"max error {err:.3g} of max |ref| > {rtol:.3g}"
