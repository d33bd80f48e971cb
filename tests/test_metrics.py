"""Metric maths against known cases; npz packing; hash checks; the classifier-based report."""
import numpy as np
import pytest
import scipy.linalg
import torch

from minivar import data, viz
from minivar.checkpoints import sha256_file
from minivar.evaluation import fid, inception
from minivar.evaluation import metrics as M


def rand_cov(d, rng):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_of_identical_sets_is_zero():
    f = np.random.default_rng(0).standard_normal((200, 16))
    assert abs(M.fd_features(f, f)) < 1e-8


def test_fd_closed_forms():
    rng = np.random.default_rng(1)
    d = 8
    mu1, mu2, s = rng.standard_normal(d), rng.standard_normal(d), rand_cov(d, rng)
    assert M.frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), abs=1e-8)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)  # diagonal: sum (sqrt a - sqrt b)^2
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    s1, s2 = rand_cov(d, rng), rand_cov(d, rng)  # general case vs scipy's sqrtm
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_fd_of_shifted_gaussian_samples_approaches_the_shift():
    rng = np.random.default_rng(2)
    shift = np.full(4, 0.5)  # ||shift||^2 = 1
    x, y = rng.standard_normal((20000, 4)), rng.standard_normal((20000, 4)) + shift
    assert M.fd_features(x, y) == pytest.approx(1.0, abs=0.03)


def test_fd_handles_singular_covariances():
    f = np.random.default_rng(3).standard_normal((50, 4))
    f = np.concatenate([f, np.zeros((50, 4))], 1)  # dead ReLU units: rank-deficient covariance
    assert abs(M.fd_features(f, f)) < 1e-8


def test_kid_is_unbiased_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    m, s = M.kid(x, y, num_subsets=20, subset_size=200)
    assert abs(m) < 3 * s + 1e-3
    m2, _ = M.kid(x, y + 1.0, num_subsets=20, subset_size=200)
    assert m2 > 10 * max(abs(m), 1e-3)
    xs, ys = x[:5], y[:5]  # one subset of everything equals the textbook formula
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3  # noqa: E731
    mmd = ((k(xs, xs).sum() - np.trace(k(xs, xs))) / 20 + (k(ys, ys).sum() - np.trace(k(ys, ys))) / 20
           - 2 * k(xs, ys).mean())
    assert M.kid(xs, ys, num_subsets=1, subset_size=5)[0] == pytest.approx(mmd)


def test_precision_recall_known_cases():
    rng = np.random.default_rng(5)
    r = rng.standard_normal((100, 3))
    assert M.precision_recall(r, r) == (1.0, 1.0)
    assert M.precision_recall(r, r + 100.0) == (0.0, 0.0)
    p, rec = M.precision_recall(r, r[:50].repeat(2, 0) * 0.01)  # mode collapse: precise, no recall
    assert p == 1.0 and rec < 0.5
    with pytest.raises(ValueError, match="equal N"):
        M.precision_recall(r, r[:50])


def test_memorisation_flags_copies():
    rng = np.random.default_rng(6)
    train, test = rng.standard_normal((60, 10)), rng.standard_normal((30, 10))
    copy = M.memorisation(train[:30], train, test)
    assert copy["ratio"] == 0.0 and copy["frac_closer_than_test_p1"] == 1.0
    fresh = M.memorisation(rng.standard_normal((30, 10)), train, test)
    assert 0.7 < fresh["ratio"] < 1.4


def test_pack_npz_from_arrays_and_png_folder(tmp_path):
    from PIL import Image
    x = torch.rand(3, 3, 8, 8)
    arr = viz.to_uint8(x * 2 - 1)
    assert arr.dtype == np.uint8 and arr.shape == (3, 8, 8, 3)
    for i, a in enumerate(arr):
        Image.fromarray(a).save(tmp_path / f"{i:05d}.png")
    assert fid.pack_npz(str(tmp_path), str(tmp_path / "s.npz")) == (3, 8, 8, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["arr_0"], arr)  # PNG is lossless
    with pytest.raises(ValueError, match="uint8"):
        fid.pack_npz(arr.astype(np.float32), str(tmp_path / "bad.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        fid.pack_npz(str(tmp_path / "empty"), str(tmp_path / "e.npz"))


def test_inception_weights_hash_is_checked(tmp_path):
    p = tmp_path / "pt_inception.pth"
    p.write_bytes(b"not the weights")
    with pytest.raises(ValueError, match="SHA-256"):
        inception.check_weights_hash(str(p))
    digest = sha256_file(str(p))
    assert inception.check_weights_hash(str(p), prefix=digest[:8]) == digest
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        inception.check_weights_hash(str(tmp_path / "missing.pth"))


def test_classifier_report_on_real_images_matches_the_floor(tmp_path):
    x, y = data.synthetic(240, size=16, num_classes=3, seed=0)
    clf = M.train_classifier(x[:160], y[:160], 3, epochs=6, batch_size=32)
    acc = (M.classify(clf, x[160:])[1] == y[160:]).double().mean().item()
    assert acc > 0.5  # chance is 1/3
    r = M.evaluate_samples(clf, x[160:200], y[160:200], x[200:240], x[:40], kid_subset=20)
    assert r["N"] == 40 and 0 <= r["cond_acc"] <= 1 and r["fd_cls"] >= 0
    assert set(r["floor"]) == {"fd_cls", "kid", "kid_e3", "kid_e3_std", "precision", "recall"}
    path = str(tmp_path / "clf.pt")
    M.save_classifier(clf, path, test_acc=acc)
    clf2, info = M.load_classifier(path)
    assert info["test_acc"] == acc and M.state_sha256(clf2) == M.state_sha256(clf)


def test_fd_against_reference_batch_statistics(tmp_path):
    rng = np.random.default_rng(7)
    f = rng.standard_normal((300, 6))
    mu, sigma = M.feature_stats(f)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma, arr_0=np.zeros((1, 4, 4, 3), np.uint8))
    assert M.frechet_distance(*fid.reference_stats(str(tmp_path / "ref.npz")), mu, sigma) == pytest.approx(0, abs=1e-8)
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(1))
    with pytest.raises(ValueError, match="lacks"):
        fid.reference_stats(str(tmp_path / "bad.npz"))


def test_round_robin_keeps_every_prefix_class_balanced():
    labels = torch.arange(4).repeat_interleave(5)  # class-major, as the samplers write them
    order = M.round_robin(labels)
    assert sorted(order.tolist()) == list(range(20))
    assert labels[order[:8]].bincount(minlength=4).tolist() == [2, 2, 2, 2]
    assert labels[order[:4]].tolist() == [0, 1, 2, 3]
    uneven = torch.tensor([2, 2, 2, 0, 1, 1])
    assert uneven[M.round_robin(uneven)[:3]].sort().values.tolist() == [0, 1, 2]


def test_evaluate_samples_cuts_class_major_samples_evenly():
    """50 samples per class but only 20 reals: the kept 20 must cover all classes, not the first two."""
    torch.manual_seed(0)
    clf = M.SmallCNN(4, width=8, feat_dim=16).eval()
    fake, labels = torch.rand(200, 3, 16, 16) * 2 - 1, torch.arange(4).repeat_interleave(50)
    real = torch.rand(20, 3, 16, 16) * 2 - 1
    r = M.evaluate_samples(clf, fake, labels, real, real, kid_subset=10)
    assert r["N"] == 20
    pred = M.classify(clf, fake[M.round_robin(labels)[:20]])[1]
    assert r["cond_acc"] == pytest.approx((pred == labels[M.round_robin(labels)[:20]]).double().mean().item())


def test_readable_kid_is_scaled_standardised_and_its_subsets_differ():
    """kid_e3: 10^3 x unbiased MMD^2 on features standardised with the real set's statistics, over
    subsets of N/2. At N = 179 raw KID on large features gives a large negative number whose
    subsets all equal the whole set (std 0); the readable one is near 0 for one distribution, with
    a std that means something, and clearly positive for a shift."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(179, 64)) * 5 + 3 for _ in range(2))
    shifted = rng.normal(size=(179, 64)) * 5 + 4
    raw_mean, raw_std = M.kid(a, b, subset_size=179)
    assert raw_std < 1e-9  # the old way: every subset is the whole set
    same, moved = M.kid_readable(a, b), M.kid_readable(shifted, b)
    assert same[1] > 0 and abs(same[0]) < 3 * same[1]
    assert moved[0] > same[0] + 5 * same[1]
    mu, sd = b.mean(0), b.std(0) + 1e-6
    want = M.kid((a - mu) / sd, (b - mu) / sd, num_subsets=100, subset_size=89)
    assert np.allclose(same, (1e3 * want[0], 1e3 * want[1]))
    assert M.kid_readable(a[:19], b[:19]) is None  # too few samples: not reported
