"""ResNet: parameter counts and torchvision names, PyTorch parity through the documented weight mapping, CIFAR stem,
width multiplier, zero-init residual, batch norm train/eval behaviour, training on a tiny batch, error messages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdl.models as models
from jaxdl import config as config_lib
from jaxdl.errors import ConfigError, ModelInputError
from jaxdl.losses import cross_entropy
from jaxdl.models.resnet import stage_widths

COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
          "resnet152": 60_192_808}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_resnet_param_counts(name):
    assert models.get(name, num_classes=1000, input_shape=(224, 224, 3)).param_count() == COUNTS[name]


def _shapes(name, shape=(224, 224, 3), **fields):
    variables = models.get(name, num_classes=1000, input_shape=shape, **fields).abstract_variables()
    return jax.tree.map(jnp.shape, variables["params"]), jax.tree.map(jnp.shape, variables["batch_stats"])


def test_resnet_torchvision_names():
    params, stats = _shapes("resnet18")
    assert set(params) == {"conv1", "bn1", "fc"} | {f"layer{k}_{j}" for k in (1, 2, 3, 4) for j in (0, 1)}
    assert params["conv1"] == {"kernel": (7, 7, 3, 64)}  # no bias
    assert set(params["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2"}  # identity shortcut
    assert set(params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"}
    assert params["layer2_0"]["downsample_conv"] == {"kernel": (1, 1, 64, 128)}
    assert params["fc"] == {"kernel": (512, 1000), "bias": (1000,)}
    assert set(stats["layer2_0"]["downsample_bn"]) == {"mean", "var"}

    params, _ = _shapes("resnet50")
    assert set(params["layer1_0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_conv",
                                       "downsample_bn"}  # 64 → 256 channels: projection in the first block
    assert params["layer2_0"]["conv2"]["kernel"] == (3, 3, 128, 128)  # stride 2 lives here (v1.5)
    assert params["layer4_2"]["conv3"]["kernel"] == (1, 1, 512, 2048)
    assert params["fc"]["kernel"] == (2048, 1000)
    params, _ = _shapes("resnet101")
    assert "layer3_22" in params and "layer3_23" not in params  # 23 blocks in stage 3


@pytest.mark.parametrize("name,shape,expected", [
    ("resnet18", (224, 224, 3), (2, 10)), ("resnet50", (32, 32, 3), (2, 10)), ("resnet34", (1, 1, 3), (2, 10)),
    ("resnet18_cifar", (32, 32, 3), (2, 10)), ("resnet50_cifar", (28, 28, 1), (2, 10)),
])
def test_resnet_output_shapes(name, shape, expected):
    model = models.get(name, num_classes=10, input_shape=shape)
    out = jax.eval_shape(lambda v, x: model.apply(v, x)[0], model.abstract_variables(2),
                         jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    assert out.shape == expected


def test_cifar_stem_forward_on_rgb_and_grayscale():
    for shape in [(32, 32, 3), (28, 28, 1)]:
        model = models.get("resnet18_cifar", num_classes=10, width=0.25)
        x = jax.random.normal(jax.random.key(1), (2, *shape))
        variables = model.init(jax.random.key(0), x)
        assert variables["params"]["conv1"]["kernel"].shape == (3, 3, shape[-1], 16)
        assert "layer1_0" in variables["params"] and "downsample_conv" not in variables["params"]["layer1_0"]
        out, state = model.apply(variables, x)
        assert out.shape == (2, 10) and np.all(np.isfinite(out))
        assert state == {"batch_stats": variables["batch_stats"]}
    # (B, H, W) grayscale batches get a channel axis
    np.testing.assert_allclose(model(variables, x[..., 0]), out, rtol=1e-5, atol=1e-6)


def test_width_multiplier():
    assert stage_widths(1.0) == (64, 128, 256, 512)
    assert stage_widths(0.25) == (16, 32, 64, 128)
    assert stage_widths(0.001) == (1, 1, 1, 1)  # never zero
    full = models.get("resnet18_cifar", num_classes=10, input_shape=(32, 32, 3)).param_count()
    half = models.get("resnet18_cifar", num_classes=10, width=0.5, input_shape=(32, 32, 3)).param_count()
    assert 0.24 < half / full < 0.26  # ~width²
    params, _ = _shapes("resnet50", width=0.5)
    assert params["conv1"]["kernel"] == (7, 7, 3, 32) and params["fc"]["kernel"] == (1024, 1000)
    with pytest.raises(ConfigError, match="model.width"):
        models.get("resnet18", width=0.0, num_classes=10)


@pytest.mark.parametrize("name,last_bn", [("resnet18_cifar", "bn2"), ("resnet50_cifar", "bn3")])
def test_zero_init_residual_and_torchvision_init(name, last_bn):
    x = jnp.zeros((1, 8, 8, 3))
    plain = models.get(name, num_classes=10, width=0.25).init(jax.random.key(0), x)["params"]
    zero = models.get(name, num_classes=10, width=0.25, zero_init_residual=True).init(jax.random.key(0), x)["params"]
    blocks = [k for k in zero if k.startswith("layer")]
    assert len(blocks) == (8 if name.startswith("resnet18") else 16)
    for b in blocks:
        assert np.all(zero[b][last_bn]["scale"] == 0) and np.all(plain[b][last_bn]["scale"] == 1)
        assert np.all(zero[b]["bn1"]["scale"] == 1)
        if "downsample_bn" in zero[b]:
            assert np.all(zero[b]["downsample_bn"]["scale"] == 1)
    # Kaiming-normal (fan_out) convs as in torchvision: std √(2 / (k·k·out))
    kernel = plain["layer4_0"]["conv2"]["kernel"]  # (3, 3, c, c)
    np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (9 * kernel.shape[-1])), rtol=0.15)
    bound = 1 / np.sqrt(plain["fc"]["kernel"].shape[0])  # PyTorch's default Linear init: U(±1/√fan_in)
    assert np.abs(plain["fc"]["kernel"]).max() <= bound and np.abs(plain["fc"]["bias"]).max() <= bound


def test_batch_norm_train_updates_statistics_eval_does_not():
    model = models.get("resnet18_cifar", num_classes=10, width=0.25, input_shape=(12, 12, 3))
    x = jax.random.normal(jax.random.key(1), (4, 12, 12, 3)) * 2.0 + 1.0
    variables = model.init(jax.random.key(0), x)
    stats = variables["batch_stats"]
    assert set(stats["bn1"]) == {"mean", "var"} and np.all(stats["bn1"]["mean"] == 0)

    out_eval, state = model.apply(variables, x)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), state["batch_stats"], stats))
    out_train, new_state = model.apply(variables, x, train=True)
    new = new_state["batch_stats"]
    assert jax.tree.structure(new) == jax.tree.structure(stats)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), new, stats))
    assert all(changed)  # every running mean and variance moved
    # inputs have mean ≈ 1 per channel, so the stem conv's batch mean is far from 0 and 0.1 of it lands in running
    assert np.abs(new["bn1"]["mean"]).max() > 1e-3
    assert not np.allclose(out_train, out_eval)
    # eval mode is per-example (running statistics); train mode normalises with the batch
    np.testing.assert_allclose(model(variables, x[:1]), out_eval[:1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(model.apply(variables, x[:2], train=True)[0], out_train[:2], atol=1e-4)
    # evaluating with the updated statistics differs from evaluating with the initial ones
    assert not np.allclose(model(dict(variables, **new_state), x), out_eval)


def test_resnet18_cifar_loss_goes_down():
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (8, 16, 16, 3))
    y = jax.random.randint(ky, (8,), 0, 10)
    model = models.get("resnet18_cifar", num_classes=10, width=0.25, input_shape=(16, 16, 3))
    variables = model.init(jax.random.key(0), x)
    params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    def loss_fn(p, s):
        logits, new_state = model.apply({"params": p, **s}, x, train=True)
        return cross_entropy(logits, y), new_state

    @jax.jit
    def step(params, state, opt_state):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state, loss

    losses = []
    for _ in range(15):
        params, state, opt_state, loss = step(params, state, opt_state)
        losses.append(float(loss))
    final = float(jax.jit(loss_fn)(params, state)[0])
    assert np.all(np.isfinite(losses)) and np.isfinite(final)
    assert final < 0.5 * losses[0], losses + [final]


def test_wrong_input_shape_names_the_model():
    model = models.get("resnet50", num_classes=10, input_shape=(224, 224, 3))
    with pytest.raises(ModelInputError, match=r"'resnet50' expects inputs of shape \(batch, 224, 224, 3\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)))
    with pytest.raises(ModelInputError, match="'resnet18_cifar'.*batch axis missing"):
        models.get("resnet18_cifar", num_classes=10, input_shape=(32, 32, 3)).init(jax.random.key(0),
                                                                                  jnp.zeros((32, 32, 3)))


def test_resnet_variants_through_the_config_layer():
    cfg = config_lib.apply_overrides(config_lib.Config(), ["model.name=resnet50", "model.num_classes=10"])
    assert (cfg.model.name, cfg.model.depth, cfg.model.stem, cfg.model.width) == ("resnet50", 50, "imagenet", 1.0)
    assert isinstance(cfg.model, models.ResNetConfig)
    cfg = config_lib.apply_overrides(cfg, ["model.name=resnet34_cifar", "model.width=0.5",
                                           "model.zero_init_residual=true"])
    assert (cfg.model.depth, cfg.model.stem, cfg.model.width, cfg.model.zero_init_residual) == (34, "cifar", 0.5, True)
    assert cfg.model.num_classes == 10  # kept across the family switch
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg  # config.json round trip
    assert models.from_config(cfg.model, input_shape=(32, 32, 3)).name == "resnet34_cifar"
    with pytest.raises(ConfigError, match="model.name=resnet50"):
        models.get("resnet18", depth=50, num_classes=10)
    with pytest.raises(ConfigError, match="model.stem"):
        models.get("resnet18", stem="tiny", num_classes=10)
    assert models.MODELS.get("resnet18").example_shape == (224, 224, 3)
    assert models.MODELS.get("resnet18_cifar").example_shape == (32, 32, 3)


# --------------------------------------------------------------------------------------------------------------------
# PyTorch parity through the documented name mapping (a compact torchvision-layout reference, since torchvision
# itself is not a dependency)
# --------------------------------------------------------------------------------------------------------------------


def _torch_resnet(torch, depth, width, num_classes):
    nn = torch.nn
    kind, blocks = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}[depth]
    expansion = 1 if kind == "basic" else 4

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            out = planes * expansion
            if kind == "basic":
                self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
                self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            else:
                self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
                self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
                self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
                self.bn3 = nn.BatchNorm2d(out)
            self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != out:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            o = torch.relu(self.bn1(self.conv1(x)))
            o = self.bn2(self.conv2(o))
            if kind == "bottleneck":
                o = self.bn3(self.conv3(torch.relu(o)))
            return torch.relu(o + (x if self.downsample is None else self.downsample(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            widths = stage_widths(width)
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            inplanes = widths[0]
            for k, (planes, n) in enumerate(zip(widths, blocks)):
                layer = []
                for j in range(n):
                    layer.append(Block(inplanes, planes, 2 if k > 0 and j == 0 else 1))
                    inplanes = planes * expansion
                setattr(self, f"layer{k + 1}", nn.Sequential(*layer))
            self.fc = nn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            for k in range(1, 5):
                x = getattr(self, f"layer{k}")(x)
            return self.fc(x.mean(dim=(2, 3)))

    return Net()


def _to_jax(state_dict):
    """torchvision-style state dict → jaxdl variables, as the module docstring describes."""
    params, stats = {}, {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked":
            continue
        leaf = parts[-1]
        path = parts[:-1]
        if len(path) >= 2 and path[0].startswith("layer"):  # layer1.0.conv1 → layer1_0/conv1
            path = [f"{path[0]}_{path[1]}", *path[2:]]
        if path[-2:-1] == ["downsample"]:  # downsample.0 / downsample.1
            path = [*path[:-2], "downsample_conv" if path[-1] == "0" else "downsample_bn"]
        v = value.detach().numpy()
        is_bn = path[-1].startswith("bn") or path[-1] == "downsample_bn"
        if leaf in ("running_mean", "running_var"):
            tree, name = stats, {"running_mean": "mean", "running_var": "var"}[leaf]
        elif is_bn:
            tree, name = params, {"weight": "scale", "bias": "bias"}[leaf]
        elif v.ndim == 4:
            tree, name, v = params, "kernel", v.transpose(2, 3, 1, 0)
        else:
            tree, name, v = params, ("kernel" if leaf == "weight" else "bias"), (v.T if leaf == "weight" else v)
        for p in path:
            tree = tree.setdefault(p, {})
        tree[name] = jnp.asarray(v)
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("depth", [18, 50])
def test_matches_pytorch_through_the_name_mapping(depth):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _torch_resnet(torch, depth, width=0.125, num_classes=5)
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 33, 29)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()

    model = models.get(f"resnet{depth}", num_classes=5, width=0.125)
    variables = _to_jax(net.state_dict())
    xj = jnp.asarray(x.transpose(0, 2, 3, 1))
    reference = jax.tree.map(jnp.shape, jax.eval_shape(model.init, jax.random.key(0), xj))
    assert jax.tree.map(jnp.shape, variables) == reference  # the mapping covers every variable, shapes agree
    np.testing.assert_allclose(np.asarray(model(variables, xj)), expected, rtol=1e-4, atol=1e-4)
