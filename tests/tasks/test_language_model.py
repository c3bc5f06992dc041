"""Language-model task: per-token cross-entropy with masks, perplexity and bits per character, n-gram baselines."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, OptimConfig, TrainConfig
from jaxdl.errors import ConfigError, DataError
from jaxdl.tasks import LanguageModel, baselines
from jaxdl.train import fit

TEXT = ("the quick brown fox jumps over the lazy dog. " * 40 + "a stitch in time saves nine. " * 40) * 3


class Bigram(nn.Module):
    """Logits of the next token from the current one only: its best bpc is the bigram conditional entropy."""

    vocab: int

    @nn.compact
    def __call__(self, tokens):
        return nn.Embed(self.vocab, self.vocab, name="table")(tokens)


@pytest.fixture(scope="module")
def text_ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "proverbs.txt"
    path.write_text(TEXT)
    return data_lib.load(DataConfig(name="text", root=str(path), block_size=32))


def test_ngram_baselines_by_hand():
    tokens = np.array([1, 2, 1, 2, 1, 3, 1, 2])
    out = baselines.ngram_baselines(tokens, 4, (0, 6), (4, 8))
    p = np.array([4, 3, 1]) / 8
    assert np.isclose(out["unigram"]["entropy"], -(p * np.log2(p)).sum())
    # after 1: 2 (x3) or 3 (x1); after 2: always 1; after 3: always 1
    h1 = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert np.isclose(out["bigram"]["entropy"], 4 / 7 * h1)
    # add-one unigram model of tokens[0:6] = 1,2,1,2,1,3 over 4 ids, on tokens[4:8] = 1,3,1,2
    q = (np.array([0, 3, 2, 1]) + 1) / 10
    assert np.isclose(out["unigram"]["heldout_bpc"], -np.log2(q[[1, 3, 1, 2]]).mean())


def test_lm_reaches_the_bigram_entropy_and_reports_bpc(tmp_path, text_ds):
    ds = text_ds
    cfg = Config(name="bigram", optim=OptimConfig(lr=0.3),
                 train=TrainConfig(batch_size=16, steps=150, eval_every=75, driver="host", progress=False,
                                   checkpoints=False, plots=False))
    result = fit(cfg, dataset=ds, model=Bigram(ds.num_classes), workdir=tmp_path)
    s = result.summary
    assert s["task"] == "language_model"
    assert set(s["test"]) == {"loss", "accuracy", "perplexity", "bpc"}
    assert math.isclose(s["test"]["bpc"], s["test"]["loss"] / math.log(2), rel_tol=1e-9)
    assert math.isclose(s["test"]["perplexity"], math.exp(s["test"]["loss"]), rel_tol=1e-9)
    b = s["baselines"]
    assert b["entropy_bits"]["bigram"] < b["entropy_bits"]["unigram"]
    # a trained bigram table is as good as the bigram statistics of the text (repetitive: near its entropy)
    assert s["test"]["bpc"] < b["test"]["unigram"]["bpc"]
    assert abs(s["test"]["bpc"] - b["test"]["bigram"]["bpc"]) < 0.25
    probs = result.predict(ds.test.batch([0, 1])["tokens"][:, :-1])
    assert probs.shape == (2, 32, ds.num_classes) and np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_masks_weight_tokens_not_batches(text_ds):
    ds = text_ds
    model = __import__("jaxdl").models.as_model(Bigram(ds.num_classes), input_shape=(32,), input_kind="int")
    task = LanguageModel(model)
    batch = {"tokens": jnp.asarray(ds.train.batch(np.arange(4))["tokens"])}
    params = {"model": model.init(jax.random.key(0), batch["tokens"][:, :-1])["params"]}
    hp = {"dropout": jnp.zeros(())}
    full, (stats, _) = task.loss("model", params, {"model": {}}, batch, None, hp, False)
    assert float(stats["loss"][1]) == 4 * 32
    # masking examples 2 and 3 equals dropping them
    masked, (ms, _) = task.loss("model", params, {"model": {}}, {**batch, "mask": jnp.array([1., 1., 0., 0.])},
                                None, hp, False)
    two, _ = task.loss("model", params, {"model": {}}, {"tokens": batch["tokens"][:2]}, None, hp, False)
    assert np.isclose(masked, two, rtol=1e-6) and float(ms["loss"][1]) == 64
    # a token mask drops targets where it is 0
    tm = jnp.ones_like(batch["tokens"]).at[:, 20:].set(0)
    _, (ts, _) = task.loss("model", params, {"model": {}}, {**batch, "token_mask": tm}, None, hp, False)
    assert float(ts["loss"][1]) == 4 * 19


def test_lm_errors(tmp_path, text_ds):
    cfg = Config(name="lm", loss=Config().loss.__class__(name="mse"),
                 train=TrainConfig(batch_size=8, steps=2, progress=False, checkpoints=False))
    with pytest.raises(ConfigError, match="loss.name=mse is not a language-model loss"):
        fit(cfg, dataset=text_ds, model=Bigram(text_ds.num_classes), workdir=tmp_path / "a")
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    tab = data_lib.load(DataConfig(kind="regression"), source=data_lib.from_arrays(x=x, y=x[:, :1]))
    with pytest.raises(DataError, match=r"task=language_model needs blocks of token ids .* got per-example shape "
                                        r"\(3,\) \(float\)"):
        fit(Config(name="lm", task="language_model", train=cfg.train), dataset=tab, workdir=tmp_path / "b")

    class WrongLength(nn.Module):
        @nn.compact
        def __call__(self, tokens):
            return nn.Embed(text_ds.num_classes, text_ds.num_classes)(tokens[:, :-1])

    with pytest.raises(DataError, match=r"returns logits of shape \(31, \d+\) per example, but a language model "
                                        r"needs \(32, vocabulary\)"):
        fit(Config(name="lm", train=cfg.train), dataset=text_ds, model=WrongLength(), workdir=tmp_path / "c")
