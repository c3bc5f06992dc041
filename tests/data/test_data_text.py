"""Text corpora: character vocabulary from the training span only, blocks inside their spans, real corpora."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import chronological_split, decode, encode, load
from jaxdl.errors import ConfigError, DataError


def test_vocab_from_training_span_only(tmp_path):
    text = "abcab" * 40 + "XYZ" * 10  # X, Y, Z occur only at the end: in the test span
    (tmp_path / "t.txt").write_text(text)
    ds = load(DataConfig(name="text", root=str(tmp_path / "t.txt"), block_size=8))
    assert ds.kind == "text" and ds.inputs == ds.targets == ("tokens",) and ds.input_shape == (9,)
    assert ds.info["vocab"] == ["<unk>", "a", "b", "c"] and ds.num_classes == 4
    assert ds.info["split"] == "blocks" and "split blocks" in ds.describe()
    test_tokens = ds.test.batch(np.arange(len(ds.test)))["tokens"]
    assert (test_tokens == 0).any() and test_tokens.max() <= 3  # unseen characters are <unk> (id 0)
    assert decode(encode("abz", ds.info["vocab"]), ds.info["vocab"]) == "ab\ufffd"
    n = len(text) + 1  # a newline is added at the end of a file that lacks one
    for split, sl in zip((ds.train, ds.val, ds.test), chronological_split(n, 0.15, 0.15)):
        s = split.view.starts
        assert s.min() >= sl.start and s.max() + 9 <= sl.stop  # blocks never cross a span
        assert np.all(np.diff(s) == 8)  # consecutive blocks overlap by one token
    train = ds.train.batch(np.arange(len(ds.train)))["tokens"]
    assert decode(train[0], ds.info["vocab"]) == text[:9]


def test_text_directory_glob_limits_and_errors(tmp_path):
    (tmp_path / "b.py").write_text("print('b')\n" * 30)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.py").write_text("x = 1\n" * 30)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load(DataConfig(name="text", root=str(tmp_path), glob="*.py", block_size=16, train_limit=3, eval_limit=1))
    assert ds.info["files"] == 2 and (len(ds.train), len(ds.val), len(ds.test)) == (3, 1, 1)
    assert "'" in ds.info["vocab"] and "=" in ds.info["vocab"]
    with pytest.raises(DataError, match=r"has no files matching '\*\.md' \(data.glob\)"):
        load(DataConfig(name="text", root=str(tmp_path), glob="*.md"))
    with pytest.raises(DataError, match=r"the val span has \d+ characters \(\d+ tokens\), fewer than one block"):
        load(DataConfig(name="text", root=str(tmp_path), glob="*.py", block_size=200))
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(DataError, match=r"bad\.txt' is not UTF-8: byte 3"):
        load(DataConfig(name="text", root=str(tmp_path / "bad.txt")))
    with pytest.raises(ConfigError, match="data.split='random' does not apply to text"):
        load(DataConfig(name="text", root=str(tmp_path), glob="*.py", split="random"))
    with pytest.raises(DataError, match="not found"):
        load(DataConfig(name="text", root=str(tmp_path / "nothing")))


def test_python_stdlib_corpus():
    ds = load(DataConfig(name="python_stdlib", block_size=64, train_limit=50, eval_limit=20))
    assert ds.kind == "text" and len(ds.train) == 50 and len(ds.val) == 20
    assert ds.info["files"] > 50 and "def" in decode(ds.train.batch(np.arange(50))["tokens"], ds.info["vocab"])


def test_shakespeare_corpus(load_dataset):
    ds = load_dataset(DataConfig(name="shakespeare", train_limit=10, eval_limit=10))
    assert ds.kind == "text" and ds.num_classes > 60 and "Shakespeare" in ds.description
