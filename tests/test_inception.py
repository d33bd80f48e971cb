"""The FID Inception-v3 (random weights: the real file cannot be downloaded here) and the ImageNet metrics."""
import json
import math

import numpy as np
import pytest
import torch

from minivar.evaluation import fid, inception, metrics
from minivar.cli.main import main
from minivar.evaluation.inception import FIDInceptionV3, load_inception
from minivar.checkpoints import CheckpointError, sha256_file

# Every BasicConv2d of pytorch-fid's FID Inception: "module in out kh kw". Derived by hand from
# torchvision/models/inception.py (Inception3 with aux_logits=False: BasicConv2d, InceptionA..E) and
# pytorch-fid's src/pytorch_fid/inception.py (fid_inception_v3: num_classes=1008; Mixed_5b/c/d, 6b..e,
# 7b, 7c replaced by FIDInceptionA/C/E_1/E_2 with the same submodules).
CONVS = """
Conv2d_1a_3x3 3 32 3 3
Conv2d_2a_3x3 32 32 3 3
Conv2d_2b_3x3 32 64 3 3
Conv2d_3b_1x1 64 80 1 1
Conv2d_4a_3x3 80 192 3 3
"""
for blk, cin, pf in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
    CONVS += f"""
{blk}.branch1x1 {cin} 64 1 1
{blk}.branch5x5_1 {cin} 48 1 1
{blk}.branch5x5_2 48 64 5 5
{blk}.branch3x3dbl_1 {cin} 64 1 1
{blk}.branch3x3dbl_2 64 96 3 3
{blk}.branch3x3dbl_3 96 96 3 3
{blk}.branch_pool {cin} {pf} 1 1
"""
CONVS += """
Mixed_6a.branch3x3 288 384 3 3
Mixed_6a.branch3x3dbl_1 288 64 1 1
Mixed_6a.branch3x3dbl_2 64 96 3 3
Mixed_6a.branch3x3dbl_3 96 96 3 3
"""
for blk, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
    CONVS += f"""
{blk}.branch1x1 768 192 1 1
{blk}.branch7x7_1 768 {c7} 1 1
{blk}.branch7x7_2 {c7} {c7} 1 7
{blk}.branch7x7_3 {c7} 192 7 1
{blk}.branch7x7dbl_1 768 {c7} 1 1
{blk}.branch7x7dbl_2 {c7} {c7} 7 1
{blk}.branch7x7dbl_3 {c7} {c7} 1 7
{blk}.branch7x7dbl_4 {c7} {c7} 7 1
{blk}.branch7x7dbl_5 {c7} 192 1 7
{blk}.branch_pool 768 192 1 1
"""
CONVS += """
Mixed_7a.branch3x3_1 768 192 1 1
Mixed_7a.branch3x3_2 192 320 3 3
Mixed_7a.branch7x7x3_1 768 192 1 1
Mixed_7a.branch7x7x3_2 192 192 1 7
Mixed_7a.branch7x7x3_3 192 192 7 1
Mixed_7a.branch7x7x3_4 192 192 3 3
"""
for blk, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
    CONVS += f"""
{blk}.branch1x1 {cin} 320 1 1
{blk}.branch3x3_1 {cin} 384 1 1
{blk}.branch3x3_2a 384 384 1 3
{blk}.branch3x3_2b 384 384 3 1
{blk}.branch3x3dbl_1 {cin} 448 1 1
{blk}.branch3x3dbl_2 448 384 3 3
{blk}.branch3x3dbl_3a 384 384 1 3
{blk}.branch3x3dbl_3b 384 384 3 1
{blk}.branch_pool {cin} 192 1 1
"""


def expected_state_dict_shapes() -> dict:
    out = {}
    for line in CONVS.strip().splitlines():
        if not line.strip():
            continue
        name, cin, cout, kh, kw = line.split()
        cin, cout, kh, kw = int(cin), int(cout), int(kh), int(kw)
        out[f"{name}.conv.weight"] = (cout, cin, kh, kw)
        for b in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.bn.{b}"] = (cout,)
        out[f"{name}.bn.num_batches_tracked"] = ()
    out["fc.weight"], out["fc.bias"] = (1008, 2048), (1008,)
    return out


def random_net(seed=0) -> FIDInceptionV3:
    """Random weights with a variance-preserving init, so features are not vanishingly small."""
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def net():
    return random_net()


def test_state_dict_keys_and_shapes_equal_pytorch_fid_layout():
    got = {k: tuple(v.shape) for k, v in FIDInceptionV3().state_dict().items()}
    want = expected_state_dict_shapes()
    assert len(want) == 94 * 6 + 2
    assert sorted(set(got) ^ set(want)) == []
    assert got == want
    # torchvision documents 27,161,264 parameters for inception_v3 (1000 classes, with the aux head);
    # without AuxLogits (3,326,696) and with 8 more classes (8 x 2049) that is 23,850,960.
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


def test_features_are_2048_d_and_logits_have_no_bias(net):
    x = torch.rand(2, 3, 40, 56)  # any side: resized to 299 first
    f, lg = net(x)
    assert f.shape == (2, 2048) and lg.shape == (2, 1008)
    assert torch.isfinite(f).all() and f.std() > 0
    torch.testing.assert_close(lg, f @ net.fc.weight.T)
    torch.testing.assert_close(net(x)[0], f)  # eval mode: deterministic
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        net(torch.rand(2, 40, 40))


def test_weights_file_hash_keys_and_corruption_are_clear_errors(net, tmp_path):
    path = str(tmp_path / "pt_inception.pth")
    sd = net.state_dict()
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="expected one starting with 6726825d"):
        load_inception(path)  # our random file is not the FID weights
    with pytest.raises(CheckpointError, match="not found; supply pt_inception-2015-12-05-6726825d.pth"):
        load_inception(str(tmp_path / "absent.pth"))
    loaded, digest = load_inception(path, sha256_prefix=None)
    assert digest is None and not loaded.training
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x)[0], net(x)[0])
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # pre-1.0 BatchNorm files
    torch.save(old, path)
    load_inception(path, sha256_prefix=None)
    torch.save({k: v for k, v in old.items() if not k.startswith("Mixed_7c.")} | {"fc.extra": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"missing keys: Mixed_7c\.[\s\S]*unexpected keys: fc.extra"):
        load_inception(path, sha256_prefix=None)
    with open(path, "wb") as f:
        f.write(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_inception(path, sha256_prefix=None)
    assert sha256_file(path)[:8] != "6726825d"


def images(n, seed, side=32):
    g = np.random.default_rng(seed)
    base = g.integers(0, 256, (n, 1, 1, 3))  # one colour per image plus noise: distinct features
    return np.clip(base + g.integers(-40, 40, (n, side, side, 3)), 0, 255).astype(np.uint8)


def test_npz_streaming_equals_np_load_and_rejects_bad_files(tmp_path):
    arr = images(7, 0)
    p = str(tmp_path / "s.npz")
    fid.pack_npz(arr, p)
    np.testing.assert_array_equal(np.concatenate(list(fid.iter_npz_images(p, 3))), arr)
    np.savez(str(tmp_path / "f.npz"), arr_0=arr.astype(np.float32))
    with pytest.raises(fid.EvalInputError, match="expected C-ordered uint8"):
        next(fid.iter_npz_images(str(tmp_path / "f.npz")))
    np.savez(str(tmp_path / "stats.npz"), mu=np.zeros(3))
    with pytest.raises(fid.EvalInputError, match="has no arr_0"):
        next(fid.iter_npz_images(str(tmp_path / "stats.npz")))
    (tmp_path / "junk.npz").write_bytes(b"nope")
    with pytest.raises(fid.EvalInputError, match="not an npz"):
        fid.npz_keys(str(tmp_path / "junk.npz"))


def test_fid_of_a_set_with_itself_is_zero_and_the_report_records_settings(net, tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "INPUT_SIDE", 139)  # 4.6x less work; the metric maths does not change
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    fid.pack_npz(images(6, 1), a)
    fid.pack_npz(images(6, 2), b)
    with open(str(tmp_path / "a.json"), "w") as f:  # what `sample --npz` writes beside the npz
        json.dump({"cfg": 1.5, "top_k": 900}, f)
    out = str(tmp_path / "r" / "report.json")
    r = fid.fid_report(a, a, "(random)", out=out, net=net, is_splits=2)
    feats_a = fid.inception_outputs(net, fid.iter_npz_images(a), "cpu")[0]
    mu, sig = metrics.feature_stats(feats_a)
    assert abs(r["fid"]) < 1e-5 * np.trace(sig)  # rank-deficient covariances (N=6 < 2048): rounding only
    assert (r["precision"], r["recall"], r["N"], r["N_ref_images"]) == (1.0, 1.0, 6, 6)
    assert r["sampling"] == {"cfg": 1.5, "top_k": 900}
    saved = json.load(open(out))
    assert saved["files"]["samples"]["sha256"] == sha256_file(a) and "resize" in saved["settings"]
    other = fid.fid_report(b, a, "(random)", net=net, is_splits=2)
    assert other["fid"] > 1.0
    # a reference holding only statistics (as VIRTUAL_imagenet256_labeled's mu / sigma) gives the same FID
    np.savez(str(tmp_path / "ref_stats.npz"), mu=mu, sigma=sig)
    r2 = fid.fid_report(b, str(tmp_path / "ref_stats.npz"), "(random)", net=net, is_splits=2)
    assert math.isclose(r2["fid"], other["fid"], rel_tol=1e-9) and "precision" not in r2


def test_inception_score_and_unequal_n_precision_recall():
    assert fid.inception_score(np.zeros((20, 1008)), splits=2) == (1.0, 0.0)  # one flat p(y|x): IS 1
    sure = np.full((20, 1008), -1e4)
    sure[np.arange(20), np.arange(20) % 5] = 0.0  # certain predictions over 5 classes, balanced: IS 5
    assert fid.inception_score(sure, splits=2)[0] == pytest.approx(5.0)
    with pytest.raises(ValueError, match="at least 10 images"):
        fid.inception_score(np.zeros((4, 1008)))
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=g), torch.randn(25, 8, generator=g)
    p, rcl = fid.manifold_precision_recall(real, fake, k=3, chunk=7)
    d = torch.cdist(fake, real)
    r_real = torch.cdist(real, real).kthvalue(4, 1).values
    r_fake = torch.cdist(fake, fake).kthvalue(4, 1).values
    assert p == (d <= r_real[None]).any(1).double().mean().item()
    assert rcl == (d.T <= r_fake[None]).any(1).double().mean().item()
    assert fid.manifold_precision_recall(real, real + 100.0) == (0.0, 0.0)


def test_fid_cli_reports_a_wrong_weights_file(tmp_path, capsys):
    a = str(tmp_path / "a.npz")
    fid.pack_npz(images(4, 0), a)
    w = tmp_path / "pt_inception.pth"
    torch.save({"x": torch.zeros(1)}, str(w))
    with pytest.raises(SystemExit) as e:
        main(["fid", "--samples", a, "--ref", a, "--inception", str(w)])
    assert "expected one starting with 6726825d" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main(["fid", "--samples", str(tmp_path / "none.npz"), "--ref", a, "--inception", str(w)])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and last.startswith("error: argument --samples") and "does not exist" in last
