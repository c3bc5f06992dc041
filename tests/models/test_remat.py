"""``model.remat=blocks``: the same variables (paths and values), outputs and gradients as without it; pretrained
weights load unchanged; families without blocks refuse it by name; and the compiled step keeps less memory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import models
from jaxdl.errors import ConfigError
from jaxdl.models.gpt import convert_gpt2_state_dict

KEY = jax.random.key(0)
# the equality checks compare two programs compiled the same way: skip LLVM's optimisations (a third of the compile time)
FAST = {"xla_backend_optimization_level": 0}
TOKENS = jax.random.randint(jax.random.key(1), (2, 8), 0, 16)
GPT = dict(num_classes=16, d_model=16, num_heads=2, num_layers=2, context_length=8, dropout=0.1)
RESNET = dict(num_classes=3, width=0.0625)  # 4, 8, 16, 32 channels
IMAGES = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))

# every family with blocks: (registry name, config fields, example input)
FAMILIES = [
    ("resnet18_cifar", RESNET, IMAGES),
    ("resnet50", RESNET, IMAGES),
    ("vgg11_bn", dict(num_classes=3), jnp.zeros((1, 32, 32, 3))),
    ("efficientnet_b0", dict(num_classes=3), IMAGES),
    ("gpt", GPT, TOKENS),
    ("llama", dict(num_classes=16, d_model=16, num_heads=2, num_kv_heads=1, mlp_dim=24, context_length=8), TOKENS),
    ("bert", dict(num_classes=2, vocab_size=16, max_positions=8, d_model=16, num_heads=2, ffn_dim=32), TOKENS),
    ("t5", dict(num_classes=16, d_model=16, d_kv=8, d_ff=32, num_heads=2), {"source": TOKENS, "target_in": TOKENS}),
    ("unet", dict(num_classes=1, channels=(8, 8), attention_levels=(1,), groups=4, heads=2),
     {"x": IMAGES[..., :1], "t": jnp.array([1, 5])}),
]


def shapes(tree):
    return jax.tree_util.tree_map_with_path(lambda p, a: (jax.tree_util.keystr(p), a.shape, a.dtype), tree)


@pytest.mark.parametrize("name, fields, x", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_variable_paths_and_shapes_do_not_change(name, fields, x):
    plain, remat = (models.get(name, remat=r, **fields) for r in ("none", "blocks"))
    want = jax.eval_shape(plain.init, KEY, x)  # shapes only: nothing is compiled
    got = jax.eval_shape(remat.init, KEY, x)
    assert shapes(got) == shapes(want)
    # the remat model really differs: its program calls the blocks through jax.checkpoint (primitive remat)
    jaxpr = str(jax.make_jaxpr(lambda v: remat.apply(v, x, train=True, rng=KEY)[0])(got))
    assert "remat" in jaxpr


def _values_outputs_grads(name, fields, x):
    plain, remat = (models.get(name, remat=r, **fields) for r in ("none", "blocks"))
    # RBG keys: the initialisers compile in a fraction of threefry's time; one program initialises both models
    key = jax.random.key(0, impl="rbg")
    init_both = jax.jit(lambda k: (plain.init(k, x), remat.init(k, x)))
    va, vb = init_both.lower(key).compile(compiler_options=FAST)(key)
    for a, b in zip(jax.tree.leaves(va), jax.tree.leaves(vb), strict=True):
        np.testing.assert_array_equal(a, b)

    def loss(params, model):
        # training mode: batch statistics, dropout and stochastic depth all run (same key, same masks)
        out, state = model.apply({**va, "params": params}, x, train=True, rng=jax.random.key(3))
        return jnp.sum(jnp.sin(out)), (out, state)

    def both(params):
        return (jax.value_and_grad(loss, has_aux=True)(params, plain),
                jax.value_and_grad(loss, has_aux=True)(params, remat))

    compiled = jax.jit(both).lower(va["params"]).compile(compiler_options=FAST)
    ((la, (oa, sa)), ga), ((lb, (ob, sb)), gb) = compiled(va["params"])
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    np.testing.assert_allclose(ob, oa, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves((ga, sa)), jax.tree.leaves((gb, sb)), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ga))


def test_resnet_values_outputs_gradients_and_batch_stats_equal():
    _values_outputs_grads("resnet18_cifar", RESNET, IMAGES)


def test_gpt_values_outputs_and_gradients_equal_with_dropout():
    _values_outputs_grads("gpt", GPT, TOKENS)


def test_pretrained_gpt2_weights_load_into_the_remat_model():
    """A Hugging Face GPT-2 state dict converts onto the same names with remat on; both models give one output."""
    rng = np.random.default_rng(0)
    D, V, C = 16, 16, 8
    sd = {"wte.weight": rng.normal(size=(V, D)), "wpe.weight": rng.normal(size=(C, D)),
          "ln_f.weight": rng.normal(size=D), "ln_f.bias": rng.normal(size=D)}
    for i in range(2):
        for name, shape in (("ln_1.weight", D), ("ln_1.bias", D), ("ln_2.weight", D), ("ln_2.bias", D),
                            ("attn.c_attn.weight", (D, 3 * D)), ("attn.c_attn.bias", 3 * D),
                            ("attn.c_proj.weight", (D, D)), ("attn.c_proj.bias", D),
                            ("mlp.c_fc.weight", (D, 4 * D)), ("mlp.c_fc.bias", 4 * D),
                            ("mlp.c_proj.weight", (4 * D, D)), ("mlp.c_proj.bias", D)):
            sd[f"h.{i}.{name}"] = 0.1 * rng.normal(size=shape)
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), convert_gpt2_state_dict(sd))
    plain, remat = (models.get("gpt", remat=r, **GPT) for r in ("none", "blocks"))
    assert shapes(variables) == shapes(jax.eval_shape(remat.init, KEY, TOKENS))
    outputs = jax.jit(lambda v: (remat(v, TOKENS), plain(v, TOKENS))).lower(variables)
    got, want = outputs.compile(compiler_options=FAST)(variables)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, fields", [("mlp", dict(widths=(4,))), ("lenet5", {}), ("alexnet", {}),
                                          ("rnn_lm", {}), ("vae", {}), ("dcgan", {})])
def test_models_without_blocks_refuse_remat_by_name(name, fields):
    with pytest.raises(ConfigError, match=rf"model\.remat='blocks': model '{name}' has no residual or transformer "
                                          r"blocks to rematerialise; use model\.remat=none"):
        models.get(name, num_classes=3, remat="blocks", **fields)
    models.get(name, num_classes=3, remat="none", **fields)  # the default builds


def test_unknown_remat_value_is_named():
    with pytest.raises(ConfigError, match=r"model\.remat: expected one of none, blocks, got 'layers'"):
        models.get("resnet18", num_classes=3, remat="layers")


def test_remat_lowers_the_compiled_steps_temporary_memory():
    """XLA's own accounting of the compiled gradient program (``memory_analysis().temp_size_in_bytes``): with
    blocks rematerialised the step keeps fewer activations. XLA:CPU's default pipeline removes jax.checkpoint's
    optimization barriers (pass ``cse_barrier_expander``) and CSE then folds the recomputation back into the forward
    pass; with that pass disabled the barriers stay, as on an accelerator."""
    x = jnp.zeros((4, 64), jnp.int32)
    fields = dict(num_classes=64, d_model=32, num_heads=2, num_layers=4, context_length=64)
    temp = {}
    for remat in ("none", "blocks"):
        model = models.get("gpt", remat=remat, **fields)
        variables = jax.eval_shape(model.init, KEY, x)

        def loss(params):
            logits, _ = model.apply({"params": params}, x)  # (B, T, V)
            return jnp.sum(jax.nn.log_softmax(logits))

        lowered = jax.jit(jax.grad(loss)).lower(variables["params"])
        compiled = lowered.compile(compiler_options={**FAST, "xla_disable_hlo_passes": "cse_barrier_expander"})
        temp[remat] = compiled.memory_analysis().temp_size_in_bytes
    assert temp["blocks"] < 0.8 * temp["none"], temp
