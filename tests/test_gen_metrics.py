"""Offline generative-model scores (jaxdl.gen_metrics): Fréchet distance, k-NN precision/recall, shipped classifier."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from jaxdl import gen_metrics as gm
from jaxdl.errors import CheckpointError, DataError
from jaxdl_testing import missing_data

FASHION = os.environ.get("JAXDL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def test_images():
    if not os.path.isdir(FASHION):
        missing_data(f"Fashion-MNIST not installed at {FASHION}")
    from jaxdl.data import load_raw

    raw = load_raw("fashion_mnist")
    return raw.test_x[:500].astype(np.float32) / raw.max_value, raw.test_y[:500].astype(np.int32)


def test_frechet_identical_sets_is_zero():
    f = np.random.default_rng(0).normal(size=(400, 8))
    assert gm.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_shifted_gaussians_closed_form_and_symmetric():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 5)) @ rng.normal(size=(5, 5))  # correlated features
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    b = a + shift  # same covariance exactly, means differ by shift: d^2 = ||shift||^2
    assert gm.frechet_distance(a, b) == pytest.approx(float(shift @ shift), rel=1e-6)
    c = rng.normal(size=(1500, 5)) * 2.0
    assert gm.frechet_distance(a, c) == pytest.approx(gm.frechet_distance(c, a), rel=1e-8)
    # isotropic Gaussians N(0, I) and N(0, 4 I) in 5-D: Tr(I + 4I - 2*2I) = 5
    d, e = rng.normal(size=(20000, 5)), 2.0 * rng.normal(size=(20000, 5))
    assert gm.frechet_distance(d, e) == pytest.approx(5.0, abs=0.3)


def test_frechet_rejects_mismatched_features():
    with pytest.raises(DataError, match="feature sizes differ: 3 vs 4"):
        gm.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"feats_b must be \(N >= 2, D\)"):
        gm.frechet_distance(np.zeros((5, 3)), np.zeros((1, 3)))


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 4))
    assert gm.precision_recall(a, a, k=3) == {"precision": 1.0, "recall": 1.0}
    far = rng.normal(size=(300, 4)) + 100.0
    pr = gm.precision_recall(a, far, k=3)
    assert pr["precision"] == 0.0 and pr["recall"] == 0.0
    with pytest.raises(DataError, match=r"fake_feats must be \(N > k=3, D\)"):
        gm.precision_recall(a, a[:3], k=3)


def test_shipped_weights_sha_matches():
    digest = hashlib.sha256(gm.WEIGHTS_PATH.read_bytes()).hexdigest()
    assert digest == gm.WEIGHTS_SHA256
    assert gm.WEIGHTS_PATH.stat().st_size < 1_000_000
    clf = gm.load_feature_classifier()
    assert clf.meta["model"] == "lenet5"


def test_sha_mismatch_names_file(tmp_path):
    bad = tmp_path / "tampered.npz"
    data = bytearray(gm.WEIGHTS_PATH.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"tampered\.npz.*sha256 .* does not match"):
        gm.load_feature_classifier(bad)
    with pytest.raises(CheckpointError, match=r"absent\.npz.*not found"):
        gm.load_feature_classifier(tmp_path / "absent.npz")


def test_classifier_accuracy_and_features(test_images):
    x, y = test_images
    acc = gm.conditional_accuracy(x, y)
    assert acc > 0.85, acc
    f = gm.features(x[:, :, :, 0], batch_size=128)  # (N, 28, 28) accepted; last batch padded
    assert f.shape == (500, 84) and np.all(f >= 0)
    np.testing.assert_allclose(f[:10], gm.features(x[:10]), rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match=r"got \(2, 32, 32\)"):
        gm.features(np.zeros((2, 32, 32)))
    with pytest.raises(DataError, match="500 images but 3 labels"):
        gm.conditional_accuracy(x, y[:3])


def test_gaussian_reference_far_worse_than_real(test_images, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    ref = gm.reference_points(500)
    assert ref["frechet_real_vs_gaussian"] > 10 * ref["frechet_real_vs_real"]
    assert ref["pr_real_vs_real"]["precision"] > ref["pr_real_vs_gaussian"]["precision"] + 0.2
    assert ref["pr_real_vs_real"]["recall"] > ref["pr_real_vs_gaussian"]["recall"] + 0.2
    assert list(tmp_path.glob("gen_metrics_reference_500_*.json"))  # cached on disk
    assert gm.reference_points(500) == ref


def test_score_ranks_real_above_noise_and_reports_references(test_images, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    x, y = test_images
    real, held = x[:250], x[250:]
    good = gm.score(held[:200], real=real, labels=y[250:450])
    blurred = np.clip(held[:200] * 0.5 + np.random.default_rng(0).uniform(size=held[:200].shape) * 0.5, 0, 1)
    bad = gm.score(blurred.astype(np.float32), real=real, reference=False)
    assert good["frechet_distance"] < bad["frechet_distance"] and good["precision"] > bad["precision"]
    assert good["conditional_accuracy"] > 0.8 and "conditional_accuracy" not in bad and "reference" not in bad
    assert good["samples"] == 200 and good["real"] == 250 and "not comparable to Inception FID" in good["features"]
    assert good["reference"]["n"] == 200 and good["reference"]["frechet_real_vs_gaussian"] > good["frechet_distance"]
