"""Parallel corpora: bible_en_es alignment, held-out books, tokenizer trained on training pairs only, padding, EOS,
dropping and truncation, and the errors a user can reach."""

from __future__ import annotations

import numpy as np
import pytest

from jaxdl import data as data_lib
from jaxdl.config import DataConfig
from jaxdl.data import parallel, tokenize
from jaxdl.data.core import evenly_spaced
from jaxdl.errors import ConfigError, DataError
from jaxdl_testing import missing_data

BIBLE = dict(name="bible_en_es", tokenizer="bpe", vocab_size=600, train_limit=400, max_source_len=40,
             max_target_len=40)


def _bible(cfg):
    try:
        return cfg, parallel.bible_en_es(cfg)
    except DataError as e:
        if "not installed" in str(e) or "not found" in str(e):
            missing_data(str(e))
        raise


@pytest.fixture(scope="module")
def bible():
    """``(cfg, source, dataset)`` of a small bible_en_es (400 training pairs, a 600-token BPE)."""
    cfg, src = _bible(DataConfig(**BIBLE))
    return cfg, src, data_lib.load(cfg)


def _pairs(n=60):
    words = ["sun", "moon", "star", "sea", "land", "tree", "stone", "fire"]
    es = {"sun": "sol", "moon": "luna", "star": "estrella", "sea": "mar", "land": "tierra", "tree": "arbol",
          "stone": "piedra", "fire": "fuego"}
    rng = np.random.default_rng(0)
    src, tgt = [], []
    for _ in range(n):
        w = list(rng.choice(words, size=int(rng.integers(1, 5))))
        src.append("the " + " and the ".join(w))
        tgt.append("el " + " y el ".join(es[x] for x in w))
    return tuple(src), tuple(tgt)


def test_john_3_16_is_aligned(bible):
    _, src, _ = bible
    i = src.refs.index("John 3:16")
    assert src.source[i].startswith("For God so loved the world, that he gave his only begotten Son")
    assert src.target[i].startswith("Porque de tal manera amó Dios al mundo, que ha dado á su Hijo unigénito")
    assert src.groups[i] == "John"
    # the KJV's paragraph sign and stray markers are gone; every kept verse is non-empty on both sides
    assert not any("¶" in t or "\\nd" in t for t in src.source)
    assert all(s and t for s, t in zip(src.source, src.target))
    assert src.info["verses"] == 31102 and len(src.source) == 31102 - src.info["skipped_empty"]


def test_held_out_books_are_disjoint_from_training(bible):
    cfg, src, ds = bible
    (train, val, test), strategy = parallel._split(src, cfg)
    groups = np.asarray(src.groups)
    assert strategy == "held-out groups"
    assert set(groups[val]) == set(parallel.BIBLE_VAL_BOOKS)
    assert set(groups[test]) == set(parallel.BIBLE_TEST_BOOKS)
    assert not set(groups[train]) & (set(groups[val]) | set(groups[test]))
    assert len(train) + len(val) + len(test) == len(groups)
    # both testaments in each held-out part
    assert {"Ruth", "Gal"} <= set(groups[val]) and {"Esth", "Eph"} <= set(groups[test])
    # the held-out texts of the data set are those books' verses, in order, untruncated
    assert [r.split()[0] for r in ds.info["text"]["val"]["refs"]] == list(groups[val])
    assert ds.info["text"]["test"]["target"] == [src.target[i] for i in test]
    assert len(ds.val) == len(val) and len(ds.test) == len(test)


def test_tokenizer_is_trained_on_the_training_pairs_only(bible):
    cfg, src, ds = bible
    (train, _, _), _ = parallel._split(src, cfg)
    train = train[evenly_spaced(len(train), cfg.train_limit)]
    texts = [src.source[i] for i in train] + [src.target[i] for i in train]
    # the tokenizer cache is keyed by a hash of the training texts: the same file means the same texts
    expected = tokenize.train_tokenizer_file(texts, "bpe", cfg.vocab_size)
    assert ds.info["tokenizer"]["json"] == str(expected.resolve())
    assert ds.info["tokenizer"]["special"]["pad"] == 0 and ds.num_classes == ds.info["tokenizer"]["vocab_size"]


def test_arrays_padding_eos_dropping_and_truncation(bible):
    cfg, _, ds = bible
    eos = ds.info["tokenizer"]["special"]["eos"]
    for part in ("train", "val", "test"):
        a = getattr(ds, part).view.arrays
        assert set(a) == {"source", "source_mask", "target", "target_mask"}
        for k in ("source", "target"):
            ids, mask = a[k], a[f"{k}_mask"]
            assert ids.dtype == np.int32 and ids.shape == mask.shape and ids.shape[1] <= 40
            n = mask.sum(1)
            assert np.all(ids[np.arange(len(ids)), n - 1] == eos)  # every sequence ends with EOS ...
            assert np.all(ids[mask == 0] == 0) and np.all(np.diff(mask, axis=1) <= 0)  # ... then padding only
    info = ds.info
    assert info["dropped"]["train"] > 0 and info["pairs"]["train"] == 400 - info["dropped"]["train"]
    assert info["truncated"]["val"] > 0 and info["pairs"]["val"] == len(info["text"]["val"]["source"])
    assert ds.kind == "seq2seq" and ds.inputs == ("source", "source_mask")


def test_random_split_of_a_user_corpus():
    src, tgt = _pairs()
    cfg = DataConfig(tokenizer="bpe", vocab_size=300, max_source_len=32, max_target_len=32, val_fraction=0.2,
                     test_fraction=0.2)
    ds = data_lib.load(cfg, source=parallel.ParallelSource(src, tgt, name="toy"))
    assert ds.info["split"] == "random" and len(ds.train) + len(ds.val) + len(ds.test) == 60
    assert ds.info["text"]["val"]["refs"][0].startswith("#")


def test_errors_name_the_culprit(tmp_path):
    src, tgt = _pairs()
    toy = parallel.ParallelSource(src, tgt, name="toy")
    base = dict(tokenizer="bpe", vocab_size=300)
    with pytest.raises(DataError, match="apt-get install sword-text-kjv sword-text-sparv"):
        parallel.bible_en_es(DataConfig(name="bible_en_es", root=str(tmp_path)))
    with pytest.raises(ConfigError, match="data.tokenizer='char'.*set data.tokenizer=bpe"):
        data_lib.load(DataConfig(), source=toy)
    with pytest.raises(ConfigError, match="data.max_source_len: expected an int >= 2"):
        data_lib.load(DataConfig(max_source_len=1, **base), source=toy)
    with pytest.raises(ConfigError, match="data.split='random'.*use auto"):
        data_lib.load(DataConfig(split="random", **base), source=toy)
    with pytest.raises(DataError, match="every training pair is longer than data.max_source_len=2"):
        data_lib.load(DataConfig(max_source_len=2, **base), source=toy)
    with pytest.raises(DataError, match="3 source texts but 2 target texts"):
        parallel.ParallelSource(("a", "b", "c"), ("x", "y"))
    with pytest.raises(DataError, match="val_groups Acts have no pairs"):
        g = ("A",) * 30 + ("B",) * 30
        data_lib.load(DataConfig(**base), source=parallel.ParallelSource(src, tgt, g, val_groups=("Acts",)))
    no_pad = tokenize.train_tokenizer_file(list(src + tgt), "bpe", 300, special_tokens=["<unk>", "</s>"],
                                           cache_dir=tmp_path)
    with pytest.raises(DataError, match="needs a padding token with id 0"):
        data_lib.load(DataConfig(tokenizer=str(no_pad)), source=toy)
