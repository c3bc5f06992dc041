"""Untrusted and malformed files: weight files (safetensors, PyTorch, .npz), data files (CIFAR batches) and config
files end in a clean ``error: <file>: <problem>`` from the CLI (exit 2) — never a traceback, never exit 0, and never
code run from a weight or data file.

Malformed safetensors files are written by hand here: an 8-byte little-endian header length, a JSON header, data.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jaxdl import cli
from jaxdl.convert import load_pretrained, load_variables, read_safetensors, read_state_dict, save_variables
from jaxdl.errors import CheckpointError, ConfigError, DataError

DATA16 = np.arange(4, dtype=np.float32).tobytes()  # 16 bytes: one (2, 2) float32 tensor


def safetensors_bytes(header, data: bytes = DATA16, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def t(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def convert(capsys, src: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    out = tmp_path / "out.npz"
    rc = cli.main(["convert", str(src), str(out), "--model", "resnet18", "--allow-missing", *extra])
    err = capsys.readouterr().err
    if rc != 0:
        assert not out.exists(), "a failed conversion must not write its output"
    return rc, err


MALFORMED_SAFETENSORS = {
    # name: (file bytes, a fragment of the expected problem)
    "negative data_offsets": (safetensors_bytes({"fc.weight": t(offsets=(-60, -44))}), "-60"),
    "offsets past the end": (safetensors_bytes({"fc.weight": t(offsets=(0, 1000))}), "offset"),
    "negative shape": (safetensors_bytes({"fc.weight": t(shape=(-1, 4))}), "-1"),
    "overlapping ranges": (safetensors_bytes({"fc.weight": t(), "fc.bias": t(shape=(2,), offsets=(8, 16))}),
                           "invalid offset for tensor `fc.bias`"),
    "a gap before the data": (safetensors_bytes({"fc.weight": t(shape=(2,), offsets=(8, 16))}), "offset"),
    "shape not matching the byte range": (safetensors_bytes({"fc.weight": t(shape=(3, 3))}), "shape"),
    "trailing bytes": (safetensors_bytes({"fc.weight": t(shape=(2,), offsets=(0, 8))}), "not fully covered"),
    "header length past the end": (safetensors_bytes({"fc.weight": t()}, length=5000), "header length"),
    "huge header length": (safetensors_bytes({}, b"", length=2**62), "header too large"),
    "too short": (b"\x01\x02\x03", "header too small"),
    "header not UTF-8": (safetensors_bytes(b"\xff\xfe{garbage}", b""), "UTF-8"),
    "header not JSON": (safetensors_bytes(b"{not json", b""), "JSON"),
    "header not an object": (safetensors_bytes([1, 2]), "JSON"),
    "float offsets": (safetensors_bytes({"fc.weight": t(offsets=(0.0, 16.0))}), "floating point"),
    "unknown dtype": (safetensors_bytes({"fc.weight": t(dtype="X99")}), "X99"),
    "complex dtype": (safetensors_bytes({"fc.weight": t(dtype="C64", shape=(2,))}), "unsupported dtype C64"),
    "shape overflow": (safetensors_bytes({"fc.weight": t(shape=(2**40, 2**40))}), "overflow"),
    "no tensors": (safetensors_bytes({}, b""), "holds no tensors"),
    "NaN weights": (safetensors_bytes({"fc.weight": t()}, np.full(4, np.nan, np.float32).tobytes()), "non-finite"),
}


@pytest.mark.parametrize("name", list(MALFORMED_SAFETENSORS))
def test_malformed_safetensors_is_a_clean_convert_error(name, tmp_path, capsys):
    data, problem = MALFORMED_SAFETENSORS[name]
    src = tmp_path / "w.safetensors"
    src.write_bytes(data)
    rc, err = convert(capsys, src, tmp_path)
    assert rc == 2, err
    assert err.startswith(f"error: {src}: "), err
    assert problem in err, err
    assert "Traceback" not in err
    with pytest.raises(CheckpointError, match=str(src)):
        read_safetensors(src)


def test_a_safetensors_header_is_never_read_as_weights(tmp_path):
    """The old hand-written reader sliced ``data[base + start:base + end]`` with negative offsets — the JSON header
    itself came back as the weights and `jaxdl convert` exited 0."""
    src = tmp_path / "w.safetensors"
    src.write_bytes(safetensors_bytes({"fc.weight": t(offsets=(-60, -44))}))
    with pytest.raises(CheckpointError, match="malformed safetensors file"):
        read_state_dict(src)


def test_valid_safetensors_still_read_including_bf16(tmp_path):
    import ml_dtypes

    from jaxdl.convert import write_safetensors

    arrays = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "fc.bias": np.arange(2, dtype=np.int64)}
    write_safetensors(tmp_path / "ok.safetensors", arrays)
    got = read_state_dict(tmp_path / "ok.safetensors")
    assert set(got) == set(arrays) and all(np.array_equal(got[k], arrays[k]) for k in arrays)
    bf = np.array([1.0, -2.5, 3.0, 0.5], ml_dtypes.bfloat16)
    (tmp_path / "bf.safetensors").write_bytes(safetensors_bytes({"w": t("BF16", (2, 2), (0, 8))}, bf.tobytes()))
    w = read_safetensors(tmp_path / "bf.safetensors")["w"]
    assert w.dtype == ml_dtypes.bfloat16 and np.array_equal(w.astype(np.float32), bf.astype(np.float32).reshape(2, 2))


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch files: truncated, garbled, and pickles that would run code
# ---------------------------------------------------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pth_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pth"
    torch.save({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, good)
    raw = good.read_bytes()
    files = {}

    def put(name, data, problem):
        p = tmp_path / f"{name}.pth"
        p.write_bytes(data)
        files[name] = (p, problem)

    put("truncated", raw[: len(raw) // 2], "not a readable PyTorch checkpoint")
    put("garbled", bytes(np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8)),
        "not a readable PyTorch checkpoint")
    put("empty", b"", "not a readable PyTorch checkpoint")
    marker = tmp_path / "code-ran"
    torch.save({"fc.weight": torch.ones(2), "evil": _RunsCode(marker)}, tmp_path / "zip_code.pth")
    files["zip pickle with code"] = (tmp_path / "zip_code.pth", "never unpickles")
    put("legacy pickle with code", pickle.dumps({"evil": _RunsCode(marker)}, protocol=2), "not a readable")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    files["not a dict"] = (tmp_path / "list.pth", "expected a state dict, found list")
    torch.save({"a": 1, "b": "text"}, tmp_path / "notensor.pth")
    files["no tensors"] = (tmp_path / "notensor.pth", "holds no tensors")
    torch.save({"fc.weight": torch.full((2, 2), float("inf"))}, tmp_path / "inf.pth")
    files["infinite weights"] = (tmp_path / "inf.pth", "non-finite")
    torch.save({"fc.weight": torch.ones(2, dtype=torch.complex64)}, tmp_path / "complex.pth")
    files["complex weights"] = (tmp_path / "complex.pth", "unsupported type")
    return files


def test_malformed_pth_files_are_clean_convert_errors_and_run_no_code(tmp_path, capsys):
    for name, (src, problem) in _pth_files(tmp_path).items():
        rc, err = convert(capsys, src, tmp_path)
        assert rc == 2, (name, err)
        assert err.startswith(f"error: {src}: ") and problem in err, (name, err)
        assert "weights_only` set to `False`" not in err, "never advise loading an untrusted file unsafely"
    assert not (tmp_path / "code-ran").exists(), "a weight file ran code"


def test_bf16_pth_converts(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"fc.weight": torch.ones(2, 3, dtype=torch.bfloat16)}, tmp_path / "bf.pth")
    assert read_state_dict(tmp_path / "bf.pth")["fc.weight"].dtype == np.float32


def test_convert_argument_errors_are_clean(tmp_path, capsys):
    src = tmp_path / "w.safetensors"
    src.write_bytes(safetensors_bytes({"fc.weight": t()}))
    rc, err = convert(capsys, src, tmp_path, "--input-shape", "abc")
    assert rc == 2 and err.startswith("error: --input-shape: ") and "'abc'" in err
    rc, err = convert(capsys, tmp_path / "absent.pth", tmp_path)
    assert rc == 2 and "absent.pth" in err and "not found" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc = cli.main(["convert", str(src), str(blocker / "sub" / "out.npz"), "--model", "resnet18", "--allow-missing"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "cannot write" in err, err


# ---------------------------------------------------------------------------------------------------------------------
# jaxdl variables files (.npz) and train.init_from
# ---------------------------------------------------------------------------------------------------------------------


def _bad_npz_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = save_variables(tmp_path / "good.npz", {"params": {"Dense_0": {"kernel": np.ones((2, 2), np.float32)}}})
    raw = good.read_bytes()
    files = {}

    def put(name, data, problem):
        p = tmp_path / f"{name.replace(' ', '_')}.npz"
        p.write_bytes(data)
        files[name] = (p, problem)

    put("truncated", raw[: len(raw) // 2], "not a jaxdl variables file")
    put("garbled", b"PK\x03\x04" + bytes(range(256)) * 2, "not a jaxdl variables file")
    put("random bytes", bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8)), "not a jaxdl")
    put("empty", b"", "not a jaxdl variables file")
    # a member whose compressed data is damaged
    np.savez_compressed(tmp_path / "z.npz", a=np.arange(1000.0))
    z = bytearray((tmp_path / "z.npz").read_bytes())
    z[100:140] = b"\0" * 40
    put("damaged member", bytes(z), "variables file")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}], dtype=object))
    files["object array (pickle)"] = (tmp_path / "obj.npz", "pickle")
    np.savez(tmp_path / "meta.npz", a=np.ones(2), __meta__=np.array("{not json"))
    files["metadata not JSON"] = (tmp_path / "meta.npz", "__meta__ entry is not JSON")
    np.savez(tmp_path / "nan.npz", **{"params/w": np.array([np.nan])})
    files["NaN"] = (tmp_path / "nan.npz", "non-finite")
    np.savez(tmp_path / "str.npz", **{"params/w": np.array(["a", "b"])})
    files["strings"] = (tmp_path / "str.npz", "unsupported type")
    np.savez(tmp_path / "clash.npz", **{"params/a": np.ones(1), "params/a/b": np.ones(1)})
    files["leaf and group"] = (tmp_path / "clash.npz", "params/a")
    np.save(tmp_path / "one.npy", np.ones(3))
    files["a .npy, not .npz"] = (tmp_path / "one.npy", "one array")
    with zipfile.ZipFile(tmp_path / "nothing.npz", "w") as zf:
        zf.writestr("readme.txt", "hi")
    files["a zip of other files"] = (tmp_path / "nothing.npz", "entry 'readme.txt' has unsupported type")
    np.savez(tmp_path / "only_meta.npz", __meta__=np.array("{}"))
    files["no arrays"] = (tmp_path / "only_meta.npz", "holds no arrays")
    return files


def test_malformed_variables_files_raise_checkpoint_errors_naming_the_file(tmp_path):
    for name, (path, problem) in _bad_npz_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_pretrained(str(path), "resnet18")
        assert str(path) in str(info.value) and problem in str(info.value), (name, str(info.value))


def test_init_from_a_malformed_file_is_a_clean_train_error(tmp_path, capsys):
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    rc = cli.main(["train", "digits_mlp:smoke", f"train.init_from={bad}", "train.steps=2", "train.progress=false",
                   "train.plots=false", "--workdir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {bad}: "), err
    st = tmp_path / "weights.safetensors"
    st.write_bytes(safetensors_bytes({"fc.weight": t(offsets=(-60, -44))}))
    rc = cli.main(["train", "digits_mlp:smoke", f"train.init_from={st}", "train.steps=2", "train.progress=false",
                   "train.plots=false", "--workdir", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {st}: malformed safetensors file"), err


def test_load_variables_round_trip_still_works(tmp_path):
    v = {"params": {"a": {"kernel": np.ones((2, 3), np.float32)}}, "batch_stats": {"bn": {"mean": np.zeros(3)}}}
    variables, meta = load_variables(save_variables(tmp_path / "v.npz", v, {"model": "x"}))
    assert meta == {"model": "x"} and variables["params"]["a"]["kernel"].shape == (2, 3)


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR batches
# ---------------------------------------------------------------------------------------------------------------------


def _cifar_dir(tmp_path: Path, bad: dict | None = None, which: str = "data_batch_3") -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        if name == which and bad:
            batch.update(bad)
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


BAD_CIFAR = {
    "float pixels": ({b"data": np.random.default_rng(0).random((20, 3072))}, "dtype float64"),
    "pixels above 255": ({b"data": np.full((20, 3072), 300, np.int16)}, "0..255"),
    "negative pixels": ({b"data": np.full((20, 3072), -1, np.int32)}, "0..255"),
    "wrong shape": ({b"data": np.zeros((20, 32, 32, 3), np.uint8)}, "expected (N, 3072)"),
    "float labels": ({b"labels": [0.5] * 20}, "not integers"),
    "ragged data": ({b"data": [[0] * 3072, [0] * 10]}, "malformed CIFAR-10 batch"),
    "labels out of range": ({b"labels": [10] * 20}, "labels span"),
    "label count": ({b"labels": [1] * 7}, "20 images but 7 labels"),
}


@pytest.mark.parametrize("name", list(BAD_CIFAR))
def test_malformed_cifar_batches_are_rejected_naming_the_file(name, tmp_path):
    from jaxdl.data.sources import cifar10

    bad, problem = BAD_CIFAR[name]
    root = _cifar_dir(tmp_path, bad)
    with pytest.raises(DataError) as info:
        cifar10(str(root))
    msg = str(info.value)
    assert problem in msg, msg
    assert "data_batch_3" in msg or str(root) in msg, msg


def test_malformed_cifar_and_code_in_a_batch_are_clean_train_errors(tmp_path, capsys):
    root = _cifar_dir(tmp_path, {b"data": np.full((20, 3072), 999, np.int32)})
    rc = cli.main(["train", "digits_mlp:smoke", "data.name=cifar10", f"data.root={root}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and str(root / "data_batch_3") in err, err
    marker = tmp_path / "code-ran"
    with open(root / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f, protocol=2)
    rc = cli.main(["train", "digits_mlp:smoke", "data.name=cifar10", f"data.root={root}"])
    err = capsys.readouterr().err
    assert rc == 2 and "refusing to load global" in err and str(root / "data_batch_3") in err, err
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Config files and run directories
# ---------------------------------------------------------------------------------------------------------------------

BAD_CONFIG_FILES = {
    "raises at import": ("import math\nx = 1 / 0\n", "line 2: running the file raised ZeroDivisionError"),
    "syntax error": ("def get_config(\n", "line 1: running the file raised SyntaxError"),
    "missing import": ("import no_such_module_xyz\n", "ModuleNotFoundError"),
    "get_config raises": ("def get_config(variant=None):\n    return {}['lr']\n",
                          "line 2: get_config() raised KeyError: 'lr'"),
    "get_config returns a dict": ("def get_config(variant=None):\n    return {}\n", "returned dict"),
    "no get_config": ("x = 1\n", "has no get_config()"),
    "bad override inside": ("from jaxdl.config import Config, apply_overrides\n"
                            "def get_config(variant=None):\n    return apply_overrides(Config(), ['optim.lr=nan'])\n",
                            "optim.lr: expected a finite number, got nan"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIG_FILES))
def test_malformed_config_files_are_clean_errors_naming_the_file(name, tmp_path, capsys):
    text, problem = BAD_CONFIG_FILES[name]
    path = tmp_path / "my_config.py"
    path.write_text(text)
    rc = cli.main(["train", str(path)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert problem in err, err
    if name != "bad override inside":
        assert "my_config.py" in err, err


BAD_CONFIG_JSON = {
    "not JSON": ('{"config": ', "not a JSON config file"),
    "not UTF-8": (b"\xff\xfe\x00", "not a JSON config file"),
    "no config object": ('{"seed": 1}', 'a "config" object'),
    "a section that is a number": ('{"config": {"train": 5}}', "train: expected a section"),
    "model that is a number": ('{"config": {"model": 3}}', "model: expected a section"),
    "unknown key": ('{"config": {"optim": {"lrr": 0.1}}}', "unknown config key 'optim.lrr'"),
    "wrong type": ('{"config": {"optim": {"lr": "fast"}}}', "optim.lr: expected float"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIG_JSON))
def test_malformed_config_json_is_a_clean_error_naming_the_file(name, tmp_path, capsys):
    text, problem = BAD_CONFIG_JSON[name]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in (["resume", str(run)], ["eval", str(run)]):
        rc = cli.main(command)
        err = capsys.readouterr().err
        assert rc == 2, (command, err)
        assert err.startswith(f"error: {run / 'config.json'}: ") and problem in err, (command, err)


def test_load_json_raises_config_error(tmp_path):
    from jaxdl.config import load_json

    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="c.json"):
        load_json(tmp_path / "c.json")


def test_experiment_whose_get_config_raises_is_a_clean_error(tmp_path, capsys):
    from jaxdl.cli import main

    bad = tmp_path / "bad_experiment.py"
    bad.write_text("def get_config():\n    raise RuntimeError('boom')\n")
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "bad_experiment.py, line 2: get_config() raised RuntimeError: boom" in err and "Traceback" not in err
