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


# ---------------------------------------------------------------------------------------------------------------------
# Packed documents and subword tokens
# ---------------------------------------------------------------------------------------------------------------------

L = 12
# two packed documents per block in row 0 (the boundary after index 4), three in row 1, one in row 2
SEGMENTS = np.array([[0] * 5 + [1] * 8, [0] * 3 + [1] * 4 + [2] * 6, [0] * 13], np.int32)  # (3, L + 1)


@pytest.fixture(scope="module")
def packed_models():
    """GPT and Llama tasks with random parameters (no init compile) and one jitted function each returning the
    logits and the loss statistics of a (6, L + 1) batch: every call below has that one shape."""
    from jaxdl.config import model_config
    from jaxdl.models import from_config

    tokens = np.random.default_rng(0).integers(0, 17, (3, L + 1)).astype(np.int32)  # (3, L + 1)
    hp = {"dropout": jnp.zeros(())}
    rng = np.random.default_rng(1)
    out = {}
    for name, kw in (("gpt", {}), ("llama", {"num_kv_heads": 1, "mlp_dim": 24})):
        model = from_config(model_config(name, context_length=16, d_model=16, num_layers=1, num_heads=2, **kw),
                            num_classes=17, input_shape=(L,))
        task = LanguageModel(model)
        shapes = jax.eval_shape(lambda b, task=task: task.init(jax.random.key(0), b),
                                {"tokens": tokens, "segment_ids": SEGMENTS})["model"]["params"]
        params = {"model": jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape), a.dtype), shapes)}

        def run(p, b, task=task):
            logits = task.model.apply({"params": p["model"]}, task.model_inputs(b))[0]  # (6, L, V)
            return logits, task.loss("model", p, {"model": {}}, b, None, hp, False)[1][0]

        out[name] = (task, params, jax.jit(run))
    return tokens, out


def _batch(tokens, segments, token_mask=None, mask=None):
    n = len(tokens)
    return {"tokens": jnp.asarray(tokens, jnp.int32), "segment_ids": jnp.asarray(segments, jnp.int32),
            "token_mask": jnp.ones((n, L + 1)) if token_mask is None else jnp.asarray(token_mask, jnp.float32),
            "mask": jnp.ones((n,)) if mask is None else jnp.asarray(mask, jnp.float32)}


def _alone(tokens, segments):
    """Each document of each row moved to the start of a row of its own (zeros after it)."""
    rows = []
    for row in range(len(tokens)):
        for d in np.unique(segments[row]):
            idx = np.flatnonzero(segments[row] == d)
            rows.append(np.pad(tokens[row, idx], (0, tokens.shape[1] - len(idx))))
    return np.stack(rows)


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_packed_documents_give_each_documents_own_logits(packed_models, name):
    tokens, models = packed_models
    task, params, run = models[name]
    assert task.segments  # GPT and Llama take segment_ids
    inputs = task.model_inputs({"tokens": jnp.asarray(tokens), "segment_ids": jnp.asarray(SEGMENTS)})
    assert set(inputs) == {"tokens", "segment_ids"} and inputs["segment_ids"].shape == (3, L)
    alone = _alone(tokens, SEGMENTS)  # (6, L + 1): a causal model's first n logits see the document only
    zeros = 0 * SEGMENTS
    both = np.asarray(run(params, _batch(np.concatenate([tokens, alone[:3]]), np.concatenate([SEGMENTS, zeros])))[0])
    more = np.asarray(run(params, _batch(np.concatenate([alone[3:], tokens]), np.concatenate([zeros, SEGMENTS])))[0])
    packed, single = both[:3], np.concatenate([both[3:], more[:3]])  # (3, L, V), (6, L, V)
    k = 0
    for row in range(3):
        for d in np.unique(SEGMENTS[row]):
            idx = np.flatnonzero(SEGMENTS[row] == d)
            idx = idx[idx < L]  # positions that have logits
            np.testing.assert_allclose(packed[row, idx], single[k, :len(idx)], atol=1e-5)
            k += 1
    assert k == 6
    # one document per row gives what no segment ids give; several documents change the later ones' logits
    plain = np.asarray(run(params, _batch(np.concatenate([tokens, tokens]), np.zeros((6, L + 1))))[0])
    np.testing.assert_allclose(plain[2], packed[2], atol=1e-6)
    assert np.abs(plain[0, 5:] - packed[0, 5:]).max() > 1e-3


def test_loss_masks_the_first_token_of_the_next_document(packed_models):
    tokens, models = packed_models
    task, params, run = models["gpt"]
    # row 0: two documents packed (boundary after index 4); rows 1, 2: each alone, its padding masked by token_mask
    first, second = tokens[0, :5], tokens[0, 5:]
    toks = np.stack([tokens[0], np.pad(first, (0, 8)), np.pad(second, (0, 5))] * 2)
    segs = np.stack([SEGMENTS[0], 0 * SEGMENTS[0], 0 * SEGMENTS[0]] * 2)
    real = np.stack([np.ones(L + 1), np.arange(L + 1) < 5, np.arange(L + 1) < 8] * 2)
    packed = run(params, _batch(toks, segs, real, [1, 0, 0, 0, 0, 0]))[1]
    apart = run(params, _batch(toks, segs, real, [0, 1, 1, 0, 0, 0]))[1]
    assert float(packed["loss"][1]) == L - 1  # the target at the boundary is not scored
    assert float(apart["loss"][1]) == 4 + 7
    # the packed loss is the two documents' own losses added up
    assert math.isclose(float(packed["loss"][0]), float(apart["loss"][0]), rel_tol=1e-5)
    # a model without a segment_ids argument gets the tokens alone (the loss masks targets all the same)
    bigram = LanguageModel(__import__("jaxdl").models.as_model(Bigram(17), input_shape=(L,), input_kind="int"))
    one = {"tokens": jnp.asarray(tokens[:1]), "segment_ids": jnp.asarray(SEGMENTS[:1])}
    assert not bigram.segments and bigram.model_inputs(one).shape == (1, L)


def test_subword_metrics_count_characters(tmp_path, monkeypatch):
    from jaxdl.data import tokenize

    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    (tmp_path / "t.txt").write_text(TEXT[:1500])  # ASCII: a block's decoded length is its character count
    ds = data_lib.load(DataConfig(name="text", root=str(tmp_path / "t.txt"), tokenizer="bpe", vocab_size=300,
                                  block_size=L))
    model = __import__("jaxdl").models.as_model(Bigram(ds.num_classes), input_shape=(L,), input_kind="int")
    task = LanguageModel(model, tokenizer=ds.info["tokenizer"])
    assert task.metric_names() == ["loss", "accuracy", "bits_per_char", "perplexity", "bits_per_token"]
    batch = {"tokens": jnp.asarray(ds.test.batch(np.arange(len(ds.test)))["tokens"])}
    params = {"model": {"table": {"embedding": jnp.asarray(
        np.random.default_rng(0).normal(size=(ds.num_classes, ds.num_classes)), jnp.float32)}}}
    stats = jax.jit(lambda p, b: task.loss("model", p, {"model": {}}, b, None, {"dropout": jnp.zeros(())},
                                           False)[1][0])(params, batch)
    tok = tokenize.load_tokenizer(ds.info["tokenizer"]["json"])
    chars = sum(len(tokenize.decode(tok, row[1:])) for row in np.asarray(batch["tokens"]))
    assert float(stats["bits_per_char"][1]) == chars
    out = task.finalize({k: (float(a), float(b)) for k, (a, b) in stats.items()})
    assert math.isclose(out["bits_per_char"], float(stats["loss"][0]) / math.log(2) / chars, rel_tol=1e-6)
    assert math.isclose(out["bits_per_token"], out["loss"] / math.log(2), rel_tol=1e-9)
    summary = __import__("jaxdl").tasks.language_model.ngram_summary(ds)
    assert summary["unit"] == "token" and set(summary["test"]["bigram"]) == {"bits_per_token", "bits_per_char"}


def test_sparse_ngram_baselines_equal_the_dense_ones():
    from jaxdl.tasks.language_model import sparse_ngram_baselines

    tokens = np.random.default_rng(0).integers(0, 7, 400)
    dense = baselines.ngram_baselines(tokens, 9, (0, 300), (300, 400))
    sparse = sparse_ngram_baselines(tokens, 9, (0, 300), (300, 400))
    for name in ("unigram", "bigram"):
        for key in ("entropy", "heldout_bpc"):
            assert math.isclose(sparse[name][key], dense[name][key], rel_tol=1e-12)
