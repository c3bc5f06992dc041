"""Text corpora: character vocabulary from the training span only, blocks inside their spans, real corpora."""

from __future__ import annotations

from pathlib import Path

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


# ---------------------------------------------------------------------------------------------------------------------
# Subword tokenizers and packed documents
# ---------------------------------------------------------------------------------------------------------------------

DOCS = {"a.txt": "alpha beta gamma delta. " * 12 + "\n", "b.txt": "beta gamma alpha epsilon! " * 12 + "\n",
        "c.txt": "gamma delta epsilon zeta? " * 12 + "\n"}


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "docs"
    root.mkdir()
    for name, text in DOCS.items():
        (root / name).write_text(text)
    return root


def test_bpe_trained_on_training_span_only_and_spans_tokenised_apart(corpus, monkeypatch):
    from jaxdl.data import tokenize

    seen = []
    train = tokenize.train_tokenizer_file
    monkeypatch.setattr(tokenize, "train_tokenizer_file", lambda texts, *a, **k: seen.append(list(texts)) or train(
        seen[-1], *a, **k))
    cfg = DataConfig(name="text", root=str(corpus), tokenizer="bpe", vocab_size=300, block_size=8)
    ds = load(cfg)
    text = "".join(DOCS[k] for k in sorted(DOCS))
    spans = chronological_split(len(text), 0.15, 0.15)
    assert "".join(seen[0]) == text[spans[0]]  # the tokenizer saw the training span and nothing else
    load(DataConfig(name="text", root=str(corpus), tokenizer="bpe", vocab_size=300, block_size=8, documents=True,
                    tokenizer_chars=350))
    assert "".join(seen[1]) == text[:350]  # data.tokenizer_chars: the first characters only, across documents
    info = ds.info["tokenizer"]
    assert f"bpe vocabulary of {ds.num_classes} tokens" in ds.describe()
    # a corpus this small runs out of pairs seen twice before 300 tokens
    assert info["kind"] == "bpe" and info["vocab_size"] == ds.num_classes and 4 + 256 < ds.num_classes <= 300
    assert info["special"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "cls": 2, "sep": 3}
    tok = tokenize.load_tokenizer(info["json"])
    stream = ds.train.view.tokens
    for part, sl in zip(("train", "val", "test"), spans):
        a, b = ds.info["spans"][part]
        assert tokenize.decode(tok, stream[a:b]) == text[sl]  # each span is its own text: no token crosses
        assert ds.info["span_characters"][part] == sl.stop - sl.start and ds.info["span_tokens"][part] == b - a
        split = getattr(ds, part)
        assert split.view.starts.min() >= a and split.view.starts.max() + 9 <= b
    assert ds.info["spans"]["train"][1] < len(text[spans[0]]) / 2  # merges: fewer tokens than characters
    assert "vocab" not in ds.info and ds.train.names == ("tokens",)
    # a second load reads the cached tokenizer and the cached encoding
    calls = []
    monkeypatch.setattr(tokenize, "_encode_batch", lambda tok, texts: calls.append(1) or [])
    again = load(cfg)
    assert calls == [] and np.array_equal(again.train.view.tokens, stream)


def test_documents_pack_files_with_an_end_token_and_segment_ids(corpus):
    ds = load(DataConfig(name="text", root=str(corpus), block_size=16, documents=True))
    vocab, eod = ds.info["vocab"], ds.info["eod_id"]
    assert vocab[-1] == "<eod>" and eod == len(vocab) - 1 == ds.num_classes - 1 and ds.info["documents"] == 3
    assert ds.train.names == ("tokens", "segment_ids") and ds.inputs == ("tokens",)
    stream = ds.train.view.tokens
    # every file ends with <eod>; encode() ignores the <eod> entry, decode() shows it
    assert decode(stream, vocab) == "".join(DOCS[k] + "<eod>" for k in sorted(DOCS))
    assert np.array_equal(encode("alpha", vocab), encode("alpha", vocab[:-1]))
    b = ds.train.batch(np.arange(len(ds.train)))
    assert b["segment_ids"].shape == b["tokens"].shape == (len(ds.train), 17) and b["segment_ids"].dtype == np.int32
    seg, tok = b["segment_ids"], b["tokens"]
    assert (seg[:, 0] == 0).all() and (np.diff(seg, axis=1) >= 0).all() and seg.max() == 1
    # a new document starts right after an end-of-document token
    step = np.diff(seg, axis=1) == 1
    assert step.any() and (tok[:, :-1][step] == eod).all()
    assert len(ds.train) == len(load(DataConfig(name="text", root=str(corpus), block_size=16)).train)
    # the pure gather runs under jit on device storage (the scan driver's path) and agrees with the host batch
    import jax

    on_device = jax.jit(ds.train.gather)(jax.device_put(ds.train.storage()), np.arange(3))
    assert all(np.array_equal(np.asarray(on_device[k]), b[k][:3]) for k in ("tokens", "segment_ids"))


def test_bpe_documents_end_with_eos_and_wordpiece_and_file_tokenizers(corpus, tmp_path):
    from jaxdl.data import tokenize

    ds = load(DataConfig(name="text", root=str(corpus), tokenizer="bpe", vocab_size=280, block_size=8,
                         documents=True, tokenizer_chars=200))
    stream, spans = ds.train.view.tokens, ds.info["spans"]
    per_span = [int((stream[slice(*spans[p])] == 3).sum()) for p in ("train", "val", "test")]
    assert ds.info["eod_id"] == 3 and per_span == [2, 0, 1]  # files a and b end in the training span, c in test
    wp = load(DataConfig(name="text", root=str(corpus), tokenizer="wordpiece", vocab_size=100, block_size=8))
    assert wp.info["tokenizer"]["kind"] == "wordpiece" and wp.info["tokenizer"]["special"]["mask"] == 4
    path = ds.info["tokenizer"]["json"]
    for given in (path, str(Path(path).parent)):
        same = load(DataConfig(name="text", root=str(corpus), tokenizer=given, block_size=8))
        assert same.info["tokenizer"]["kind"] == "file" and same.num_classes == ds.num_classes
    assert tokenize.load_tokenizer(path).get_vocab_size() == ds.num_classes


def test_tokenizer_config_errors_name_the_key(corpus):
    def cfg(**kw):
        return DataConfig(name="text", root=str(corpus), block_size=8, **kw)

    with pytest.raises(ConfigError, match="data.tokenizer: unknown tokenizer 'sentencepiece'; expected one of char, "
                                          "bpe, wordpiece or a path"):
        load(cfg(tokenizer="sentencepiece"))
    with pytest.raises(DataError, match=r"data.tokenizer: tokenizer file '.*nowhere.json' not found"):
        load(cfg(tokenizer=str(corpus / "nowhere.json")))
    with pytest.raises(ConfigError, match="data.vocab_size: expected an int >= 1 for data.tokenizer=bpe, got 0"):
        load(cfg(tokenizer="bpe", vocab_size=0))
    with pytest.raises(ConfigError, match="data.tokenizer_chars: expected a positive int or None, got 0"):
        load(cfg(tokenizer="bpe", tokenizer_chars=0))
    from jaxdl.data import tokenize

    no_eos = tokenize.train_tokenizer_file(DOCS.values(), "bpe", 270, special_tokens=["<pad>"])
    with pytest.raises(DataError, match=r"data.documents=true needs an end-of-document token, but the tokenizer of "
                                        r"data.tokenizer='.*tokenizer.json' has none"):
        load(cfg(tokenizer=str(no_eos), documents=True))
    # 100 tokens fit in the training span but not in validation's ~130 characters
    with pytest.raises(DataError, match=r"the val span has \d+ characters \(\d+ tokens\), fewer than one block of "
                                        r"data.block_size \+ 1 = 101 tokens"):
        load(DataConfig(name="text", root=str(corpus), block_size=100, tokenizer="bpe", vocab_size=280))
