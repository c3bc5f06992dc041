import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdl import augment as A
from jaxdl.config import (AugmentConfig, Config, DataConfig, OptimConfig, TrainConfig, apply_overrides,
                          model_config)
from jaxdl.errors import ConfigError
from jaxdl.train.step import make_hparams, signature

KEY = jax.random.PRNGKey(0)
IMG = jnp.arange(8 * 8 * 3, dtype=jnp.float32).reshape(8, 8, 3) / 100.0


def test_random_crop_shifts_content_and_zero_pads():
    out = A.random_crop(IMG, KEY, 2)
    assert out.shape == IMG.shape
    # every output row/col is either a shifted input row/col or zero padding
    found = False
    for dy in range(5):
        for dx in range(5):
            ref = jnp.pad(IMG, ((2, 2), (2, 2), (0, 0)))[dy:dy + 8, dx:dx + 8]
            found |= bool(jnp.array_equal(ref, out))
    assert found
    assert jnp.array_equal(A.random_crop(IMG, KEY, 0), IMG)


def test_flip_probability_extremes():
    assert jnp.array_equal(A.flip(IMG, KEY, 0.0), IMG)
    assert jnp.array_equal(A.flip(IMG, KEY, 1.0), IMG[:, ::-1])
    flips = [bool(jnp.array_equal(A.flip(IMG, jax.random.PRNGKey(i), 0.5), IMG[:, ::-1])) for i in range(200)]
    assert 0.35 < np.mean(flips) < 0.65


def test_cutout_zeroes_a_square():
    ones = jnp.ones((16, 16, 1))
    out = A.cutout(ones, KEY, 4.0)
    zeros = int((out == 0).sum())
    assert 4 <= zeros <= 16  # a 4x4 square, clipped at the border
    assert jnp.array_equal(A.cutout(ones, KEY, 0.0), ones)


def test_resized_crop_full_scale_square_is_identity_and_shapes_hold():
    same = A.random_resized_crop(IMG, KEY, 1.0, ratio=(1.0, 1.0))
    np.testing.assert_allclose(same, IMG, atol=1e-5)
    out = A.random_resized_crop(IMG, KEY, 0.1)
    assert out.shape == IMG.shape and jnp.isfinite(out).all()
    assert not jnp.allclose(out, IMG)


def test_color_jitter_zero_strength_is_identity():
    np.testing.assert_allclose(A.color_jitter(IMG, KEY, 0.0), IMG, atol=1e-6)
    assert not jnp.allclose(A.color_jitter(IMG, KEY, 0.5), IMG)


def test_mixup_blends_images_and_labels_consistently():
    x = jax.random.normal(KEY, (6, 4, 4, 1))
    y = jax.nn.one_hot(jnp.arange(6) % 3, 3)
    xm, ym = A.mixup(x, y, jax.random.PRNGKey(3), 0.4)
    np.testing.assert_allclose(ym.sum(-1), 1.0, rtol=1e-6)
    lam = float(ym.max(-1).min())  # the larger share of each row is lambda or 1 - lambda
    assert 0.5 <= lam <= 1.0
    same_x, same_y = A.mixup(x, y, jax.random.PRNGKey(3), 0.0)  # alpha 0: off
    assert jnp.array_equal(same_x, x) and jnp.array_equal(same_y, y)


def test_cutmix_label_weights_equal_pasted_area():
    x = jnp.stack([jnp.full((8, 8, 1), float(i)) for i in range(4)])
    y = jax.nn.one_hot(jnp.arange(4), 4)
    xc, yc = A.cutmix(x, y, jax.random.PRNGKey(5), 1.0)
    for i in range(4):
        own = float((xc[i] == i).mean())
        assert yc[i, i] == pytest.approx(own, abs=1e-6) or own == 1.0


def test_strengths_are_traced_without_retracing():
    cfg = AugmentConfig(ops=("crop", "flip", "cutout", "resized_crop", "jitter", "mixup", "cutmix"))
    aug = A.make_augment(cfg, num_classes=3)
    traces = []

    @jax.jit
    def run(batch, hp):
        traces.append(1)
        return aug(batch, KEY, hp)

    batch = {"x": jax.random.normal(KEY, (4, 8, 8, 3)), "y": jnp.array([0, 1, 2, 0])}
    for s in (0.0, 0.3, 0.9):
        hp = make_hparams(apply_overrides(Config(augment=cfg), {"augment.flip": s, "augment.cutout": 4 * s,
                                                                "augment.jitter": s, "augment.mixup": s,
                                                                "augment.cutmix": s, "augment.crop_scale": 1 - s / 2}))
        out = run(batch, hp)
        assert out["x"].shape == (4, 8, 8, 3) and out["y"].shape == (4, 3)
        np.testing.assert_allclose(out["y"].sum(-1), 1.0, rtol=1e-5)
    assert len(traces) == 1


def test_strengths_are_dynamic_in_the_signature():
    base = Config(augment=AugmentConfig(ops=("flip", "mixup")))
    a = apply_overrides(base, {"augment.flip": 0.1, "augment.mixup": 0.2})
    b = apply_overrides(base, {"augment.flip": 0.9, "augment.mixup": 1.0})
    assert signature(a) == signature(b)
    assert signature(a) != signature(apply_overrides(base, {"augment.ops": ("flip",)}))


def test_errors_name_the_culprit():
    with pytest.raises(ConfigError, match=r"augment.ops: unknown augmentation 'flipp'.*'flip'"):
        A.make_augment(AugmentConfig(ops=("flipp",)), 10)
    aug = A.make_augment(AugmentConfig(ops=("flip",)), 10)
    with pytest.raises(ConfigError, match=r"need image batches \(B, H, W, C\), got shape \(4, 64\)"):
        aug({"x": jnp.zeros((4, 64)), "y": jnp.zeros(4, jnp.int32)}, KEY, make_hparams(Config()))
    assert A.make_augment(AugmentConfig(), 10) is None


def test_training_with_augmentation(tmp_path):
    from jaxdl.train import fit

    cfg = Config(name="aug", model=model_config("mlp", widths=(32,)), data=DataConfig(name="digits"),
                 optim=OptimConfig(lr=3e-3), augment=AugmentConfig(ops=("crop", "cutout", "mixup"), crop_padding=1,
                                                                   cutout=2.0),
                 train=TrainConfig(batch_size=64, steps=80, progress=False, plots=False, driver="scan"))
    result = fit(cfg, workdir=tmp_path)
    assert result.summary["test"]["accuracy"] > 0.5
