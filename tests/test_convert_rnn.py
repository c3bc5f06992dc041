"""PyTorch import of nn.LSTM / nn.GRU / nn.Embedding / nn.Linear weights: key mapping, the recurrent families
(rnn_lm end to end against PyTorch's logits, `jaxdl convert` with model fields) and the errors that name tensors."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from jaxdl import cli, models  # noqa: E402
from jaxdl.convert import (RULES, convert_recurrent_state_dict, convert_state_dict, flatten, import_torch,  # noqa: E402
                           parse_model_fields, recurrent_key, rule_for)
from jaxdl.errors import CheckpointError, ConfigError  # noqa: E402
from jaxdl.transfer import load_variables  # noqa: E402

V, E, H, T = 7, 4, 6, 5


class TorchLM(nn.Module):
    """A PyTorch character LM with rnn_lm's layout: embedding → LSTM/GRU → linear head."""

    def __init__(self, cell="lstm", num_layers=1):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(E, H, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(H, V)

    def forward(self, tokens):
        return self.head(self.rnn(self.embedding(tokens))[0])


@pytest.mark.parametrize("key, path, transposed", [
    ("rnn.weight_ih_l1_reverse", "params/rnn/l1_reverse/weight_ih", True),
    ("rnn.bias_hh_l0", "params/rnn/l0/bias_hh", False),
    ("weight_hh_l2", "params/l2/weight_hh", True),
    ("encoder.rnn.bias_ih_l0_reverse", "params/encoder/rnn/l0_reverse/bias_ih", False),
    ("rnn.weight", None, None),
    ("rnn.weight_hr_l0", None, None),  # proj_size is not supported: reported as unexpected
])
def test_recurrent_key(key, path, transposed):
    assert recurrent_key(key) == (None if path is None else (path, transposed))


def test_bare_module_state_dict_and_prefix():
    torch.manual_seed(0)
    sd = nn.GRU(3, H, bidirectional=True).state_dict()
    params = convert_recurrent_state_dict(sd)["params"]
    assert sorted(params) == ["l0", "l0_reverse"]
    np.testing.assert_array_equal(params["l0_reverse"]["weight_ih"], sd["weight_ih_l0_reverse"].numpy().T)
    assert params["l0"]["weight_hh"].shape == (H, 3 * H)
    nested = flatten(convert_recurrent_state_dict(sd, prefix="encoder/rnn"))
    assert "params/encoder/rnn/l0/bias_hh" in nested
    with pytest.raises(CheckpointError, match="'fc.weight' is not an nn.LSTM/nn.GRU weight"):
        convert_recurrent_state_dict({"fc.weight": np.zeros((2, 2))})


def test_family_rule_tells_embedding_from_linear():
    assert {"rnn_lm", "rnn_classifier", "rnn_forecaster"} <= set(RULES)
    torch.manual_seed(0)
    ref = TorchLM("lstm", num_layers=2)
    sd = {k: v.numpy() for k, v in ref.state_dict().items()}
    for name in ("rnn_lm", "rnn_classifier", "rnn_forecaster"):
        flat = flatten(convert_state_dict(sd, name))
        assert sorted(flat) == sorted(
            ["params/embedding/embedding", "params/head/kernel", "params/head/bias"]
            + [f"params/rnn/l{k}/{w}" for k in (0, 1) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")])
        np.testing.assert_array_equal(flat["params/embedding/embedding"], sd["embedding.weight"])  # (V, E) as is
        np.testing.assert_array_equal(flat["params/head/kernel"], sd["head.weight"].T)  # (in, out)
        np.testing.assert_array_equal(flat["params/rnn/l1/weight_ih"], sd["rnn.weight_ih_l1"].T)
    with pytest.raises(ConfigError, match="rnn_lm"):
        rule_for("transformer_xl")


def _save(module, path):
    torch.save(module.state_dict(), path)
    return path


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_lm_end_to_end_logits_match_pytorch(cell, tmp_path):
    torch.manual_seed(1)
    ref = TorchLM(cell).eval()
    src = _save(ref, tmp_path / f"{cell}.pth")
    fields = parse_model_fields("rnn_lm", [f"model.cell={cell}", f"model.hidden_size={H}", f"model.embed_dim={E}"])
    assert fields == {"cell": cell, "hidden_size": H, "embed_dim": E}
    variables, report = import_torch(src, "rnn_lm", num_classes=V, input_shape=(T,), fields=fields)
    assert report.ok and report.converted == 7
    tokens = np.random.default_rng(0).integers(0, V, size=(2, T))
    model = models.get("rnn_lm", num_classes=V, input_shape=(T,), **fields)
    logits, _ = model.apply(variables, jnp.asarray(tokens, jnp.int32), train=False)
    with torch.no_grad():
        want = ref(torch.tensor(tokens)).numpy()
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5)


def test_cli_convert_with_model_fields(tmp_path, capsys):
    torch.manual_seed(2)
    src = _save(TorchLM("gru"), tmp_path / "lm.pth")
    dst = tmp_path / "lm.npz"
    rc = cli.main(["convert", str(src), str(dst), "--model", "rnn_lm", "--num-classes", str(V), "--input-shape",
                   str(T), "model.cell=gru", f"model.hidden_size={H}", f"model.embed_dim={E}"])
    assert rc == 0, capsys.readouterr().err
    variables, meta = load_variables(dst)
    assert meta["fields"] == {"cell": "gru", "hidden_size": H, "embed_dim": E}
    assert variables["params"]["rnn"]["l0"]["weight_hh"].shape == (H, 3 * H)


def test_cli_convert_bad_overrides(tmp_path, capsys):
    src = _save(TorchLM("gru"), tmp_path / "lm.pth")
    base = ["convert", str(src), str(tmp_path / "o.npz"), "--model", "rnn_lm", "--num-classes", str(V),
            "--input-shape", str(T)]
    assert cli.main([*base, "cell=gru"]) == 2
    assert "override 'cell=gru' is not a model field; expected model.FIELD=VALUE" in capsys.readouterr().err
    assert cli.main([*base, "model.hidden=8"]) == 2
    assert "'model.hidden'" in (err := capsys.readouterr().err) and "model.hidden_size" in err
    assert cli.main([*base, "model.hidden_size=big"]) == 2
    assert "model.hidden_size" in capsys.readouterr().err


def test_gru_file_into_lstm_model_names_the_tensors(tmp_path):
    src = _save(TorchLM("gru"), tmp_path / "gru.pth")
    with pytest.raises(CheckpointError) as info:
        import_torch(src, "rnn_lm", num_classes=V, input_shape=(T,),
                     fields={"cell": "lstm", "hidden_size": H, "embed_dim": E})
    msg = str(info.value)
    assert "shape mismatches" in msg
    assert f"params/rnn/l0/weight_ih file ({E}, {3 * H}) vs model ({E}, {4 * H})" in msg


def test_missing_and_unexpected_entries_are_listed(tmp_path):
    sd = TorchLM("lstm").state_dict()
    del sd["head.bias"]
    sd["rnn.weight_ih_l1"] = torch.zeros(4 * H, H)  # a second layer the model does not have
    torch.save(sd, tmp_path / "lm.pth")
    with pytest.raises(CheckpointError) as info:
        import_torch(tmp_path / "lm.pth", "rnn_lm", num_classes=V, input_shape=(T,),
                     fields={"hidden_size": H, "embed_dim": E})
    msg = str(info.value)
    assert "missing (the model has them, the file does not): params/head/bias" in msg
    assert "unexpected (in the file, not in the model): params/rnn/l1/weight_ih" in msg
