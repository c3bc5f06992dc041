"""Tokenizers trained with the ``tokenizers`` library, and the disk cache of tokenizers and encoded corpora."""

import numpy as np
import pytest

from jaxdl.data import tokenize as T
from jaxdl.errors import ConfigError, DataError

TEXTS = ["Hello world, hello there! The world says hello.",
         "def f(x):\n    return x  # ünïcode 😀 tabs\tand  spaces",
         "the quick brown fox jumps over the lazy dog; the dog sleeps"] * 4


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDL_CACHE_DIR", str(tmp_path))
    return tmp_path / "tokens"


def test_bpe_round_trips_exactly_with_specials_first(cache):
    tok = T.train_tokenizer(TEXTS, "bpe", vocab_size=300, min_frequency=1)
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert T.special_ids(tok) == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "cls": 2, "sep": 3}
    assert tok.get_vocab_size() == 300
    unseen = "Ωmega λ — never seen in training!\r\n  trailing "
    for s in TEXTS[:3] + [unseen]:
        (ids,) = T.encode_texts(tok, [s], cache_dir=False)
        assert ids.dtype == np.int32 and T.decode(tok, ids) == s
        assert not (ids < 4).any()  # no special token is added, and byte-level BPE never needs <unk>
    # merges shorten the text: fewer tokens than UTF-8 bytes on the training text
    (ids,) = T.encode_texts(tok, [TEXTS[0]], cache_dir=False)
    assert len(ids) < len(TEXTS[0].encode()) / 2


def test_wordpiece_keeps_case_and_marks_continuations(cache):
    tok = T.train_tokenizer(TEXTS, "wordpiece", vocab_size=200, min_frequency=1)
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert T.special_ids(tok) == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "cls": 2, "sep": 3, "mask": 4}
    (ids,) = T.encode_texts(tok, ["Hello hello"], cache_dir=False)
    pieces = [tok.id_to_token(int(i)) for i in ids]
    assert pieces[0].startswith("H") and any(p.startswith("h") for p in pieces)  # case kept
    assert T.decode(tok, ids) == "Hello hello"
    (ids,) = T.encode_texts(tok, ["Hellos"], cache_dir=False)
    assert any(tok.id_to_token(int(i)).startswith("##") for i in ids)
    (ids,) = T.encode_texts(tok, ["Ω"], cache_dir=False)
    assert ids.tolist() == [1]  # an uncovered word is [UNK]


def test_training_is_deterministic_and_cached(tmp_path):
    a = T.train_tokenizer_file(TEXTS, "bpe", 280, min_frequency=1, cache_dir=tmp_path / "a")
    b = T.train_tokenizer_file(TEXTS, "bpe", 280, min_frequency=1, cache_dir=tmp_path / "b")
    assert a != b and a.read_text() == b.read_text()  # two independent trainings agree
    mtime = a.stat().st_mtime_ns
    assert T.train_tokenizer_file(TEXTS, "bpe", 280, min_frequency=1, cache_dir=tmp_path / "a") == a
    assert a.stat().st_mtime_ns == mtime  # found, not retrained
    # any input in the key gives another entry
    assert T.train_tokenizer_file(TEXTS, "bpe", 281, min_frequency=1, cache_dir=tmp_path / "a") != a
    assert T.train_tokenizer_file(TEXTS[:-1], "bpe", 280, min_frequency=1, cache_dir=tmp_path / "a") != a


def test_encoded_corpus_is_read_from_cache(cache, monkeypatch):
    tok = T.train_tokenizer(TEXTS, "bpe", vocab_size=280, min_frequency=1)
    first = T.encode_texts(tok, TEXTS[:3])
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and files[0].name == T.corpus_key(tok, TEXTS[:3]) + ".npz"
    calls = []
    monkeypatch.setattr(T, "_encode_batch", lambda tok, texts: calls.append(texts) or [])
    again = T.encode_texts(tok, TEXTS[:3])
    assert calls == [] and all(np.array_equal(x, y) and y.dtype == np.int32 for x, y in zip(first, again))
    T.encode_texts(tok, ["another text"])  # a different corpus is a miss
    assert calls == [["another text"]]
    # the text boundaries are part of the key
    assert T.corpus_key(tok, ["ab", "c"]) != T.corpus_key(tok, ["a", "bc"])


def test_damaged_cache_entry_is_recomputed(cache):
    tok = T.train_tokenizer(TEXTS, "bpe", vocab_size=280, min_frequency=1)
    first = T.encode_texts(tok, TEXTS[:2])
    (f,) = cache.glob("*.npz")
    f.write_bytes(b"garbage")
    again = T.encode_texts(tok, TEXTS[:2])
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_load_tokenizer_file_dir_and_errors(cache, tmp_path):
    path = T.train_tokenizer_file(TEXTS, "wordpiece", 150, min_frequency=1)
    assert T.load_tokenizer(path).to_str() == T.load_tokenizer(path.parent).to_str()
    with pytest.raises(DataError, match=r"tokenizer file '.*nowhere' not found"):
        T.load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"tokenizer file '.*empty/tokenizer.json' not found"):
        T.load_tokenizer(tmp_path / "empty")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"tokenizer file '.*bad.json' cannot be read"):
        T.load_tokenizer(bad)


def test_bad_training_arguments_name_the_culprit(cache):
    with pytest.raises(ConfigError, match="tokenizer kind 'unigram' is unknown; expected one of bpe, wordpiece"):
        T.train_tokenizer(TEXTS, "unigram")
    with pytest.raises(ConfigError, match="tokenizer vocab_size: expected an int >= 1, got 0"):
        T.train_tokenizer(TEXTS, "bpe", vocab_size=0)
    with pytest.raises(ConfigError, match="tokenizer min_frequency: expected an int >= 0, got -1"):
        T.train_tokenizer(TEXTS, "bpe", min_frequency=-1)


def test_special_ids_recognise_gpt2_names(cache):
    tok = T.train_tokenizer(TEXTS, "bpe", 270, special_tokens=["<|endoftext|>"], min_frequency=1)
    assert T.special_ids(tok) == {"eos": 0}


def test_token_characters_sum_to_the_decoded_length(cache):
    bpe = T.train_tokenizer(TEXTS, "bpe", 300, min_frequency=1)
    chars = T.token_characters(bpe)
    assert chars.shape == (300,) and (chars[:4] == 0).all()  # special tokens add no characters
    for s in ["plain ascii", "ünïcode 😀 — λ split across byte tokens", TEXTS[1]]:
        (ids,) = T.encode_texts(bpe, [s], cache_dir=False)
        assert chars[ids].sum() == len(s)
    wp = T.train_tokenizer(TEXTS, "wordpiece", 150, min_frequency=1)
    wchars = T.token_characters(wp)
    (ids,) = T.encode_texts(wp, ["Hellos world"], cache_dir=False)
    assert wchars[ids].sum() == len("Hellosworld")  # pieces without ##; the space is not a token
