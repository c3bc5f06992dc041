"""Sequence-to-sequence task: teacher-forced masked cross-entropy by hand, label smoothing, greedy translations
scored with sacrebleu (BLEU/chrF) beside the copy baseline, samples, and the errors a user can reach."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu

from jaxdl import data as data_lib
from jaxdl import models
from jaxdl.config import Config, DataConfig, LossConfig, TrainConfig, model_config
from jaxdl.data import parallel, tokenize
from jaxdl.errors import ConfigError, DataError
from jaxdl.tasks import build as build_task
from jaxdl.tasks.seq2seq import TRANSLATIONS_FILE, Seq2Seq, corpus_scores

WORDS = {"sun": "sol", "moon": "luna", "star": "estrella", "sea": "mar", "land": "tierra", "fire": "fuego"}


def _corpus(n=48):
    rng = np.random.default_rng(1)
    src, tgt = [], []
    for _ in range(n):
        w = list(rng.choice(list(WORDS), size=int(rng.integers(1, 4))))
        src.append("the " + " and the ".join(w))
        tgt.append("el " + " y el ".join(WORDS[x] for x in w))
    return parallel.ParallelSource(tuple(src), tuple(tgt), name="toy", source_lang="en", target_lang="es")


@pytest.fixture(scope="module")
def setup():
    """A toy parallel data set, a tiny T5 sized for it, the task and initial variables."""
    cfg = Config(task="seq2seq", model=model_config("t5", d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
                 data=DataConfig(tokenizer="bpe", vocab_size=300, max_source_len=24, max_target_len=24,
                                 val_fraction=0.25, test_fraction=0.25),
                 train=TrainConfig(eval_batch_size=8))
    ds = data_lib.load(cfg.data, source=_corpus())
    model = models.from_config(cfg.model, num_classes=ds.num_classes, input_shape=ds.input_shape)
    task = build_task(cfg, ds, model)
    task.beam_size = 2  # the artifacts' beam search, small
    batch = {k: jnp.asarray(v) for k, v in ds.train.batch(np.arange(4)).items()}
    variables = jax.jit(task.init)(jax.random.key(0), batch)
    params = {p: v["params"] for p, v in variables.items()}
    state = {p: {k: x for k, x in v.items() if k != "params"} for p, v in variables.items()}
    return cfg, ds, task, batch, params, state


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_loss_is_the_masked_token_cross_entropy(setup):
    cfg, ds, task, batch, params, state = setup
    assert isinstance(task, Seq2Seq) and task.name == "seq2seq"
    mask = jnp.array([1.0, 1.0, 0.0, 1.0])  # evaluation padding drops example 2
    b = {**batch, "mask": mask}
    hp = {"label_smoothing": jnp.float32(0.0), "dropout": jnp.float32(0.0)}
    # by hand: the decoder reads [0, y_0 .. y_{T-2}]; token t is scored where target_mask and mask are 1
    tgt = np.asarray(batch["target"])
    target_in = jnp.asarray(np.concatenate([np.zeros((4, 1), np.int32), tgt[:, :-1]], axis=1))

    @jax.jit  # one compiled program: the task's loss and an independent forward pass
    def loss_and_logits(p, b, h):
        x = {"source": b["source"], "source_mask": b["source_mask"], "target_in": target_in}
        return task.loss("model", p, state, b, None, h, False), task.model.apply({"params": p["model"]}, x)[0]

    (loss, (stats, _)), logits = loss_and_logits(params, b, hp)
    logits = np.asarray(logits, np.float64)
    logp = _log_softmax(logits)
    nll = -np.take_along_axis(logp, tgt[..., None], -1)[..., 0]
    m = np.asarray(batch["target_mask"], np.float64) * np.asarray(mask)[:, None]
    np.testing.assert_allclose(float(stats["loss"][0]), (nll * m).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(stats["loss"][1]), m.sum())
    np.testing.assert_allclose(float(loss), (nll * m).sum() / m.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(stats["accuracy"][0]), ((logits.argmax(-1) == tgt) * m).sum())
    # label smoothing changes the minimised loss only: (1 - e) nll + e mean_v(-log p(v)); the statistic stays nll
    e = 0.2
    hp = {"label_smoothing": jnp.float32(e), "dropout": jnp.float32(0.0)}
    (smoothed, (stats2, _)), _ = loss_and_logits(params, b, hp)  # a traced number: the same program
    expected = (((1 - e) * nll + e * -logp.mean(-1)) * m).sum() / m.sum()
    np.testing.assert_allclose(float(smoothed), expected, rtol=1e-5)
    np.testing.assert_allclose(float(stats2["loss"][0]), (nll * m).sum(), rtol=1e-5)
    out = task.finalize({k: (float(s), float(w)) for k, (s, w) in stats.items()})
    np.testing.assert_allclose(out["perplexity"], np.exp(out["loss"]), rtol=1e-9)


def test_artifacts_bleu_chrf_copy_baseline_and_samples(setup, tmp_path):
    cfg, ds, task, batch, params, state = setup
    out = task.artifacts(params, state, ds, tmp_path)
    tok = tokenize.load_tokenizer(ds.info["tokenizer"]["json"])
    for part in ("val", "test"):
        a = getattr(ds, part).view.arrays
        refs, srcs = ds.info["text"][part]["target"], ds.info["text"][part]["source"]
        got = out["translation"][part]
        for decoder, beam in (("greedy", 1), ("beam", 2)):
            hyps = task.detokenize(tok, task.translate(params, state, a["source"], a["source_mask"],
                                                       a["target"].shape[1], beam))
            assert got[decoder]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
            assert got[decoder]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
        assert got["copy_baseline"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(srcs, [refs]).score)
        assert got["copy_baseline"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(srcs, [refs]).score)
        assert got["greedy"]["n"] == len(refs) == len(getattr(ds, part))
    s = out["samples"][0]
    assert set(s) == {"ref", "source", "reference", "hypothesis"} and s["reference"] == ds.info["text"]["val"]["target"][0]
    text = (tmp_path / TRANSLATIONS_FILE).read_text()
    assert "=== val: greedy BLEU" in text and "beam BLEU" in text and s["source"] in text
    json.dumps(out)  # summary.json-ready


def test_translate_pads_the_last_batch_and_stops_at_eos(setup):
    _, ds, task, _, params, state = setup
    a = ds.val.view.arrays
    n = len(a["source"])
    assert n % task.decode_batch != 0  # the last batch is padded
    width = a["target"].shape[1]  # the width artifacts decode to: the compiled decode is reused
    ids = task.translate(params, state, a["source"][:n], a["source_mask"][:n], width)
    assert ids.shape == (n, width)
    eos = task.special["eos"]
    for row in ids:  # after the first EOS, only padding
        hit = np.flatnonzero(row == eos)
        if len(hit):
            assert np.all(row[hit[0] + 1:] == 0)
    # one row decodes as it does inside a batch (the padding rows do not leak into it)
    one = task.translate(params, state, a["source"][:1], a["source_mask"][:1], width)
    np.testing.assert_array_equal(one[0], ids[0])


def test_corpus_scores_and_copy_baseline_by_hand():
    refs = ["el sol y la luna", "la casa es grande"]
    assert corpus_scores(refs, refs)["bleu"] == pytest.approx(100.0)
    copy = corpus_scores(["the sun and the moon", "the house is big"], refs)
    assert copy["bleu"] < 10 and copy["chrf"] < 40 and copy["n"] == 2
    with pytest.raises(DataError, match="2 hypotheses but 1 references"):
        corpus_scores(refs, refs[:1])


def test_errors_name_the_culprit(setup):
    cfg, ds, task, *_ = setup
    with pytest.raises(ConfigError, match="loss.name=mse is not a sequence-to-sequence loss"):
        Seq2Seq.build(Config(task="seq2seq", loss=LossConfig(name="mse")), ds, task.model)
    text = data_lib.load(DataConfig(name="python_stdlib", block_size=16, train_limit=4, eval_limit=2))
    with pytest.raises(DataError, match="task=seq2seq reads source, source_mask, target and target_mask"):
        Seq2Seq.build(Config(task="seq2seq"), text, task.model)
    with pytest.raises(DataError, match=r"task=seq2seq needs source token ids \(int"):
        Seq2Seq.model_input((8, 8, 1), "float")
    with pytest.raises(ConfigError, match="task=seq2seq needs a vocabulary"):
        Seq2Seq.outputs_needed(type("D", (), {"num_classes": None, "name": "x"})())
