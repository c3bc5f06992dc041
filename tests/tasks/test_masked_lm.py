"""Masked-LM task: BERT's 80/10/10 corruption, chosen positions only in the loss, deterministic evaluation masks,
per-member masks in a population, a traced mask rate, and the errors a user can reach."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import Config, DataConfig, LossConfig, OptimConfig, TrainConfig, model_config
from jaxdl.errors import ConfigError, DataError
from jaxdl.tasks import MaskedLM
from jaxdl.tasks.masked_lm import context_free_baselines, mask_tokens, special_tokens
from jaxdl.train.setup import initial_state, setup

TEXT = ("the quick brown fox jumps over the lazy dog. " * 40 + "a stitch in time saves nine. " * 40) * 3
L = 16  # tokens the model reads (block_size)


@pytest.fixture(scope="module")
def text_ds(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "proverbs.txt"
    path.write_text(TEXT)
    return data_lib.load(DataConfig(name="text", root=str(path), block_size=L))


def mlm_cfg(ds, **over) -> Config:
    cfg = Config(name="mlm", task="masked_lm",
                 model=model_config("bert", head="mlm", vocab_size=MaskedLM.outputs_needed(ds), max_positions=L,
                                    d_model=16, num_layers=1, num_heads=2, ffn_dim=32, dropout=0.0,
                                    attention_dropout=0.0),
                 optim=OptimConfig(name="adam", lr=3e-3),
                 train=TrainConfig(batch_size=8, steps=10, driver="host", progress=False, checkpoints=False,
                                   plots=False))
    return dataclasses.replace(cfg, **over)


class TinyMLM(nn.Module):
    """Embedding, one width-5 convolution (two neighbours each side) and a projection to the vocabulary: sees both
    sides like an encoder, and compiles in a fraction of BERT's time (the task is model-agnostic; the BERT path
    runs in the smoke config and the shape checks below)."""

    vocab: int

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, 16)(tokens)  # (B, L, 16)
        h = nn.gelu(nn.Conv(32, (5,), padding="SAME")(h))  # (B, L, 32)
        return nn.Dense(self.vocab)(h)  # (B, L, V)


@pytest.fixture(scope="module")
def run(text_ds):
    """One setup, its initial state, a jitted train step that counts its traces, a jitted evaluation loss and a
    jitted corruption (shared by the tests: each compiles once)."""
    s = setup(mlm_cfg(text_ds), dataset=text_ds, model=TinyMLM(MaskedLM.outputs_needed(text_ds)))
    traces = []

    def counted(state, batch, hp):
        traces.append(1)
        return s.train_step(state, batch, hp)

    batch = {k: jnp.asarray(v) for k, v in text_ds.train.batch(np.arange(8)).items()}
    batch["mask"] = jnp.ones(8)  # an evaluation batch's example mask (all real here)
    evaluate = jax.jit(lambda st, b: s.task.loss("model", {"model": st.params}, {"model": st.model_state}, b, None,
                                                 s.hparams, False))
    return dict(s=s, state=initial_state(s), step=jax.jit(counted), traces=traces, batch=batch, evaluate=evaluate,
                corrupt=jax.jit(s.task.corrupt))


def test_char_data_reserves_a_mask_id_and_never_targets_unk(text_ds):
    outputs, mask, special = special_tokens(text_ds)
    V = text_ds.num_classes
    assert (outputs, mask) == (V + 1, V) and special == (0, V)  # <unk> = 0 and the reserved [MASK]


def test_tokenizer_contract_gives_mask_and_special_ids(text_ds):
    info = {"tokenizer": {"kind": "wordpiece", "vocab_size": 40,
                          "special": {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}}}
    ds = dataclasses.replace(text_ds, num_classes=40, info=info)
    assert special_tokens(ds) == (40, 4, (0, 1, 2, 3, 4))
    task = MaskedLM.build(mlm_cfg(text_ds), ds, None)
    assert task.mask_id == 4 and task.replacement_ids.tolist() == list(range(5, 40))
    # a tokenizer without a mask token: one reserved id past its vocabulary
    info = {"tokenizer": {"kind": "bpe", "vocab_size": 300, "special": {"pad": 0, "unk": 1, "eos": 3}}}
    assert special_tokens(dataclasses.replace(text_ds, info=info)) == (301, 300, (0, 1, 3, 300))


def test_80_10_10_split_and_no_special_or_padding_chosen():
    B, T, V, mask_id = 64, 256, 60, 2
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    special = jnp.asarray([0, 1, 2])  # pad, unk, mask
    lengths = rng.integers(T // 2, T + 1, B)
    token_mask = jnp.asarray(np.arange(T)[None, :] < lengths[:, None])  # (B, T): padding at the end
    cand = jnp.all(tokens[..., None] != special, -1) & token_mask
    replacement = jnp.arange(3, V)
    bits = jnp.asarray(rng.integers(0, 2**32, (B, 3, T), dtype=np.uint32))  # the masks are a function of the bits
    inputs, chosen = jax.jit(mask_tokens, static_argnums=4)(bits, tokens, cand, 0.15, mask_id, replacement)
    inputs, chosen, tokens, cand = map(np.asarray, (inputs, chosen, tokens, cand))
    assert not chosen[~cand].any()  # never padding nor special tokens
    assert (inputs[~chosen] == tokens[~chosen]).all()  # unchosen positions are untouched
    n = chosen.sum()
    assert abs(n / cand.sum() - 0.15) < 0.01  # ~12k candidates: sd of the fraction ~0.003
    masked = inputs[chosen] == mask_id
    kept = inputs[chosen] == tokens[chosen]
    swapped = ~masked & ~kept
    R = V - 3  # a random draw equals the original token 1/R of the time
    assert abs(masked.mean() - 0.8) < 0.03  # ~1.8k chosen: sd ~0.01
    assert abs(swapped.mean() - 0.1 * (1 - 1 / R)) < 0.025
    assert abs(kept.mean() - (0.1 + 0.1 / R)) < 0.025
    assert (inputs[chosen][swapped] >= 3).all()  # random tokens are never special


def test_keys_decide_the_masks_and_eval_masks_are_fixed(run):
    corrupt, batch = run["corrupt"], run["batch"]
    key = jax.random.PRNGKey(3)
    a = corrupt(batch, key, 0.3)
    b = corrupt(batch, key, 0.3)
    c = corrupt(batch, jax.random.PRNGKey(4), 0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same key (a resumed step): same masks
    assert not np.array_equal(a[1], c[1])
    # evaluation: a block's mask depends on its ids only, not on where it sits in a batch
    perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])
    e = corrupt(batch, None, 0.3)
    moved = corrupt({k: v[perm] for k, v in batch.items()}, None, 0.3)
    assert e[1].any() and np.array_equal(np.asarray(e[1])[perm], moved[1])
    assert np.array_equal(np.asarray(e[0])[perm], moved[0])


def test_loss_is_on_chosen_positions_only(run):
    s, state = run["s"], run["state"]
    batch = {**run["batch"], "mask": jnp.asarray([1.0] * 6 + [0.0] * 2)}  # a padded evaluation batch: 2 fake rows
    loss, (stats, _) = run["evaluate"](state, batch)
    inputs, chosen = run["corrupt"](batch, None, s.hparams["mask_rate"])
    forward = jax.jit(s.task.model.apply)
    logits = np.asarray(forward({"params": state.params}, inputs)[0], np.float64)  # (B, L, V)
    targets = np.asarray(batch["tokens"])[:, :-1]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    w = np.asarray(chosen) * np.asarray(batch["mask"])[:, None]
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    assert 0 < w.sum() < np.asarray(chosen).sum() and float(stats["loss"][1]) == w.sum()
    np.testing.assert_allclose(float(stats["loss"][0]), (nll * w).sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), (nll * w).sum() / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(stats["accuracy"][0]), ((logits.argmax(-1) == targets) * w).sum())


def test_mask_rate_is_traced_and_members_draw_their_own_masks(run):
    s, state, step, batch = run["s"], run["state"], run["step"], run["batch"]
    hp_high = {**s.hparams, "mask_rate": jnp.asarray(0.5, jnp.float32)}
    _, low = step(state, batch, s.hparams)
    alone, high = step(state, batch, hp_high)
    assert len(run["traces"]) == 1  # the rate is an array: no retrace
    n_low, n_high = float(low["stats"]["loss"][1]), float(high["stats"]["loss"][1])
    assert n_high > 2 * n_low > 0  # ~0.5 vs ~0.15 of 8 * 16 positions
    # a fused pair: member 0 at the default rate with another key, member 1 at 0.5 with this state's key
    other = state.replace(rng=jax.random.PRNGKey(99))
    pair = jax.tree.map(lambda x, y: jnp.stack([x, y]), other, state)
    hps = jax.tree.map(lambda a, b: jnp.stack([a, b]), s.hparams, hp_high)
    fused, m = jax.jit(jax.vmap(s.train_step, in_axes=(0, None, 0)))(pair, batch, hps)
    # member 1 gets its standalone step (rate 0.5 reached it) ...
    np.testing.assert_allclose(m["loss"][1], high["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x: x[1], fused.params)), jax.tree.leaves(alone.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ... and member 0, at the same rate and parameters as `low` but its own key, chose other positions
    assert not np.isclose(float(m["loss"][0]), float(low["loss"]), rtol=1e-4)


def test_loss_goes_down_on_a_tiny_batch(run):
    s, state, step, batch = run["s"], run["state"], run["step"], run["batch"]
    before = float(run["evaluate"](state, batch)[0])
    hp = {**s.hparams, "lr": jnp.asarray(1e-2, jnp.float32)}
    for _ in range(60):
        state, _ = step(state, batch, hp)
    assert float(run["evaluate"](state, batch)[0]) < before - 1.0, before
    assert len(run["traces"]) == 1


def test_context_free_baselines_by_hand(run, text_ds):
    task = run["s"].task
    out = context_free_baselines(task, text_ds, batch_size=4)  # evaluation masks do not depend on the batching
    train = np.asarray(text_ds.train.batch(np.arange(len(text_ds.train)))["tokens"])[:, :-1]
    u = np.bincount(train[train != 0].ravel(), minlength=task.outputs).astype(float) + 1.0  # <unk> never counts
    u[[0, task.mask_id]] = 0.0
    u /= u.sum()
    n = len(text_ds.test)
    tokens = np.asarray(text_ds.test.batch(np.arange(n))["tokens"])
    inputs, chosen = [], []
    for start in range(0, n, 8):  # the fixture's compiled shape: 8 blocks (the last batch wraps around)
        rows = np.arange(start, start + 8) % n
        x, c = run["corrupt"]({"tokens": tokens[rows], "mask": jnp.ones(8)}, None, 0.15)
        inputs.append(np.asarray(x))
        chosen.append(np.asarray(c))
    chosen = np.concatenate(chosen)[:n]
    y, x = tokens[:, :-1][chosen], np.concatenate(inputs)[:n][chosen]
    assert out["unigram"]["positions"] == len(y) > 0
    np.testing.assert_allclose(out["unigram"]["loss"], -np.log(u[y]).mean(), rtol=1e-10)
    np.testing.assert_allclose(out["unigram"]["accuracy"], (y == u.argmax()).mean())
    # from the corrupted token alone: P(y, x=c) = 0.1 u(y) [y = c] (kept) + 0.1 u(y) / R (a random c), normalised
    R = len(task.replacement_ids)
    nll, hits = [], []
    for yi, xi in zip(y, x):
        q = u.copy() if xi == task.mask_id else 0.1 * u * (np.arange(len(u)) == xi) + 0.1 * u / R
        q /= q.sum()
        nll.append(-np.log(q[yi]))
        hits.append(q.argmax() == yi)
    np.testing.assert_allclose(out["unigram_input"]["loss"], np.mean(nll), rtol=1e-9)
    np.testing.assert_allclose(out["unigram_input"]["accuracy"], np.mean(hits))
    assert out["unigram_input"]["loss"] < out["unigram"]["loss"]


def test_errors_name_the_task_and_the_shape(text_ds, load_dataset):
    digits = load_dataset(DataConfig(name="digits"))
    with pytest.raises(DataError, match=r"task=masked_lm needs blocks of token ids .*\(8, 8, 1\) \(float\)"):
        setup(mlm_cfg(text_ds), dataset=digits)
    need = MaskedLM.outputs_needed(text_ds)
    wrong = mlm_cfg(text_ds, model=dataclasses.replace(mlm_cfg(text_ds).model, vocab_size=need + 5))
    with pytest.raises(ConfigError, match=f"logits over {need + 5} ids.*set model.vocab_size={need}"):
        setup(wrong, dataset=text_ds)
    pooled = mlm_cfg(text_ds, model=dataclasses.replace(mlm_cfg(text_ds).model, head="classify"))
    with pytest.raises(DataError, match=r"task=masked_lm needs logits \(16, vocabulary\).*model.head=mlm"):
        setup(pooled, dataset=text_ds)
    with pytest.raises(ConfigError, match=r"loss.mask_rate: expected a probability in \(0, 1\], got 0.0"):
        setup(mlm_cfg(text_ds, loss=LossConfig(mask_rate=0.0)), dataset=text_ds)
    with pytest.raises(ConfigError, match="loss.name=mse is not a masked-language-model loss"):
        MaskedLM.build(mlm_cfg(text_ds, loss=LossConfig(name="mse")), text_ds, None)
    with pytest.raises(ConfigError, match="task=masked_lm needs a vocabulary; data set 'proverbs' has none"):
        MaskedLM.outputs_needed(dataclasses.replace(text_ds, num_classes=None, info={}))
    with pytest.raises(DataError, match="reads one token array .* inputs tokens, label"):
        MaskedLM.build(mlm_cfg(text_ds), dataclasses.replace(text_ds, inputs=("tokens", "label")), None)
    only_special = {"tokenizer": {"kind": "wordpiece", "vocab_size": 2, "special": {"pad": 0, "mask": 1}}}
    with pytest.raises(DataError, match="no non-special token to predict"):
        MaskedLM.build(mlm_cfg(text_ds), dataclasses.replace(text_ds, num_classes=2, info=only_special), None)
