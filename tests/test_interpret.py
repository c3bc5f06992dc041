import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import interpret, models
from jaxdl.errors import JaxdlError


@pytest.fixture(scope="module")
def lenet():
    model = models.get("lenet5", num_classes=10, input_shape=(8, 8, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    return model, variables, x


def test_integrated_gradients_completeness(lenet):
    model, variables, x = lenet
    f = lambda z: model(variables, z)  # noqa: E731
    target = jnp.array([0, 3, 7])
    attr = interpret.integrated_gradients(f, x, target, steps=64)
    gap = f(x)[jnp.arange(3), target] - f(jnp.zeros_like(x))[jnp.arange(3), target]
    total = attr.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(total, gap, rtol=0.01, atol=1e-4)


def test_saliency_and_smoothgrad(lenet):
    model, variables, x = lenet
    f = lambda z: model(variables, z)  # noqa: E731
    target = jnp.array([1, 2, 3])
    sal = interpret.saliency(f, x, target)
    assert sal.shape == (3, 8, 8) and (sal >= 0).all() and sal.max() > 0
    # sigma 0: every noisy copy is x itself, so SmoothGrad equals the vanilla gradient
    sg0 = interpret.smoothgrad(f, x, target, jax.random.PRNGKey(0), n=4, sigma=0.0)
    np.testing.assert_allclose(sg0, sal, rtol=1e-5, atol=1e-7)
    sg = interpret.smoothgrad(f, x, target, jax.random.PRNGKey(0), n=8, sigma=0.2)
    assert sg.shape == (3, 8, 8) and not jnp.allclose(sg, sal)
    # per-example: the attribution of example 0 does not depend on the others
    alone = interpret.saliency(f, x[:1], target[:1])
    np.testing.assert_allclose(alone[0], sal[0], rtol=1e-5, atol=1e-7)


def test_grad_cam_on_a_conv_layer(lenet):
    model, variables, x = lenet
    layers = interpret.conv_layers(model.module, variables, x)
    assert layers[:2] == ["c1", "c3"]
    cam = interpret.grad_cam(model.module, variables, x, jnp.array([0, 1, 2]), layer="c3")
    assert cam.shape == (3, 8, 8) and float(cam.min()) >= -1e-6 and float(cam.max()) <= 1 + 1e-6
    with pytest.raises(JaxdlError, match=r"no layer named 'c9'; layers: .*c3"):
        interpret.grad_cam(model.module, variables, x, jnp.array([0, 1, 2]), layer="c9")
    with pytest.raises(JaxdlError, match="needs a \\(B, H, W, C\\) feature map"):
        interpret.grad_cam(model.module, variables, x, jnp.array([0, 1, 2]), layer="f6")


def test_overlay_writes_png(tmp_path, lenet):
    _, _, x = lenet
    interpret.overlay(x[0], jnp.ones((8, 8)), tmp_path / "o.png", title="t")
    assert (tmp_path / "o.png").stat().st_size > 1000


def test_explain_command_writes_overlays(tmp_path, capsys):
    from PIL import Image

    from jaxdl import cli

    run = tmp_path / "run"
    assert cli.main(["train", "configs/digits_mlp.py:smoke", "model.name=lenet5", "--workdir", str(run)]) == 0
    img = np.zeros((8, 8), np.uint8)
    img[1:7, 3:5] = 255  # a "1"
    Image.fromarray(img).save(tmp_path / "one.png")
    assert cli.main(["explain", str(run), "--image", str(tmp_path / "one.png")]) == 0
    out = capsys.readouterr().out
    assert "predicted class" in out
    names = sorted(p.name for p in (run / "explain").glob("*.png"))
    assert names == ["one_grad_cam_c3.png", "one_integrated_gradients.png", "one_saliency.png",
                     "one_smoothgrad.png"]
    assert cli.main(["explain", str(run), "--image", str(tmp_path / "missing.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
