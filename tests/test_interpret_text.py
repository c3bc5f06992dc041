"""Token-level integrated gradients: completeness, padding, errors; ``jaxdl explain`` on a text classification run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import interpret, models
from jaxdl.errors import DataError, JaxdlError
from jaxdl_testing import missing_data

TOKENS = jnp.array([[2, 5, 9, 17, 3, 0, 0], [2, 11, 3, 0, 0, 0, 0]], jnp.int32)
MASK = (TOKENS > 0).astype(jnp.int32)
INPUTS = {"tokens": TOKENS, "token_mask": MASK}


@pytest.fixture(scope="module")
def classifiers():
    """A tiny BERT (mean pooling) and a tiny LSTM classifier with random weights, initialised under jit."""
    out = {}
    for name, fields in (("bert", {"vocab_size": 20, "d_model": 8, "num_layers": 1, "num_heads": 2, "ffn_dim": 16,
                                   "max_positions": 8, "pooling": "mean"}),
                         ("lstm", {"cell": "lstm", "embed_dim": 8, "vocab_size": 20, "hidden_size": 8,
                                   "pooling": "mean"})):
        m = models.get("bert" if name == "bert" else "rnn_classifier", num_classes=3, **fields)
        out[name] = (m.module, jax.jit(m.init)(jax.random.key(1), INPUTS))
    return out


@pytest.mark.parametrize("name, baseline", [("bert", "pad"), ("lstm", "zero")])
def test_attributions_are_complete_and_padding_gets_none(classifiers, name, baseline):
    module, variables = classifiers[name]
    target = jnp.array([0, 2])
    out = interpret.token_integrated_gradients(module, variables, INPUTS, target, baseline=baseline, steps=64)
    a = np.asarray(out["attributions"])
    assert a.shape == (2, 7)
    delta = np.asarray(out["score"] - out["baseline_score"])
    assert np.abs(delta).min() > 1e-3  # the input's embeddings move the logit: completeness is not 0 = 0
    np.testing.assert_allclose(a.sum(axis=1), delta, atol=2e-4 + 1e-3 * np.abs(delta).max())
    assert (a[np.asarray(MASK) == 0] == 0).all()  # padding is masked out of the model
    logits = module.apply(variables, **INPUTS)
    np.testing.assert_allclose(out["score"], np.asarray(logits)[[0, 1], [0, 2]], rtol=1e-5, atol=1e-6)


def test_token_attribution_errors(classifiers):
    module, variables = classifiers["bert"]
    with pytest.raises(JaxdlError, match="unknown baseline 'mask'; expected one of pad, zero"):
        interpret.token_integrated_gradients(module, variables, INPUTS, jnp.array([0, 0]), baseline="mask")
    with pytest.raises(JaxdlError, match="inputs need 'tokens'"):
        interpret.token_integrated_gradients(module, variables, {"token_mask": MASK}, jnp.array([0, 0]))
    mlp = models.get("mlp", num_classes=3, widths=(4,))
    with pytest.raises(JaxdlError, match="model MLP has no token-embedding table"):
        interpret.token_integrated_gradients(mlp.module, {"params": {}}, INPUTS, jnp.array([0, 0]))
    html = interpret.token_attribution_html(["[CLS]", "<to>", "be"], [0.5, -1.0, 0.0], title="t")
    assert "&lt;to&gt;" in html and "rgb(0,0,255)" in html and "rgb(255,127,127)" in html


def test_explain_writes_token_attributions_for_a_text_run(tmp_path, capsys):
    from jaxdl import cli
    from jaxdl.config import apply_overrides, load_config
    from jaxdl.train import fit

    cfg = apply_overrides(load_config("passages_text:smoke"),
                          {"data.train_limit": 16, "data.eval_limit": 6, "train.steps": 2, "train.eval_every": 2,
                           "train.checkpoint_every": 2, "train.plots": False})
    try:
        fit(cfg, workdir=tmp_path / "run")
    except DataError as e:
        missing_data(str(e))
    run = str(tmp_path / "run")
    assert cli.main(["explain", run, "--examples", "2", "--steps", "16"]) == 0
    out = json.loads((tmp_path / "run" / "explain" / "tokens.json").read_text())
    assert out["baseline"] == "pad" and len(out["examples"]) == 2
    for ex in out["examples"]:
        assert ex["tokens"][0] == "[CLS]" and ex["tokens"][-1] == "[SEP]"
        assert len(ex["attributions"]) == len(ex["tokens"]) and ex["label"] in ("comedy", "history", "tragedy")
        assert abs(ex["completeness_gap"]) < 1e-2 * max(1.0, abs(ex["score"] - ex["baseline_score"]))
        assert ex["text"] and set(ex["probabilities"]) == {"comedy", "history", "tragedy"}
    html = (tmp_path / "run" / "explain" / "tokens.html").read_text()
    assert html.count("<h3>") == 2 and "[CLS]" in html
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["explain", run, "--examples", "0"]) == 2  # checked before the run is restored
    assert "--examples and --steps must be at least 1, got 0 and 64" in capsys.readouterr().err


def test_explain_text_rejects_a_target_that_is_not_a_class():
    from argparse import Namespace
    from types import SimpleNamespace

    from jaxdl import cli
    from jaxdl.errors import ConfigError

    run = SimpleNamespace(model=SimpleNamespace(module=object(), name="bert"),
                          dataset=SimpleNamespace(name="shakespeare_passages", num_classes=3,
                                                  class_names=("comedy", "history", "tragedy")))
    with pytest.raises(ConfigError, match=r"--target 7 is not a class of 'shakespeare_passages' \(0 … 2\)"):
        cli.explain_text(Namespace(target=7, examples=2, steps=8, baseline="pad", out=None, run_dir="r"), run, {})
