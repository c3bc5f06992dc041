"""shakespeare_passages: spoken lines only, whole plays held out, MiniLM tokens with [CLS] … [SEP] and a mask."""

import dataclasses

import numpy as np
import pytest

from jaxdl.config import DataConfig
from jaxdl.data import passages as P
from jaxdl.errors import ConfigError, DataError
from jaxdl_testing import missing_data

PLAY = """HAMLET

Persons Represented

HAMLET, Prince of Denmark.

SCENE. Elsinore.

ACT I.

SCENE I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him
Bernardo.]

BERNARDO.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself. [Aside.]

1 Clown.
Is she to be buried?

Duke of York.
Speak to me.
[Exit Ghost.]

Killing swine.

THE END
"""


def test_spoken_lines_drop_persons_headings_directions_and_speakers():
    assert P.spoken_lines(PLAY) == ["Who's there?", "Nay, answer me: stand, and unfold yourself.",
                                    "Is she to be buried?", "Speak to me.", "Killing swine."]
    with pytest.raises(DataError, match="no 'ACT I' / 'PROLOGUE' / 'INDUCTION' line"):
        P.spoken_lines("SONNET 1\n\nFrom fairest creatures we desire increase,\n")


def test_passages_are_consecutive_words_without_a_short_remainder():
    words = tuple(f"w{i}" for i in range(10))
    assert P.passages(words, 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7"]


def test_held_out_plays_are_whole_plays_of_every_kind_and_disjoint():
    assert len(P.PLAYS) == 36
    assert {g for _, g in P.PLAYS.values()} == set(P.CLASS_NAMES)
    for seed in (0, 1):
        plays = P.held_out_plays(seed)
        parts = [set(plays[k]) for k in ("train", "val", "test")]
        assert sum(map(len, parts)) == 36 and len(set.union(*parts)) == 36
        for part in ("val", "test"):
            kinds = [P.PLAYS[s][1] for s in plays[part]]
            assert all(kinds.count(k) == P.PLAYS_HELD_OUT for k in P.CLASS_NAMES)
    assert P.held_out_plays(0) == P.held_out_plays(0) and P.held_out_plays(0) != P.held_out_plays(1)


@pytest.fixture(scope="module")
def ds():
    from jaxdl import data

    try:
        return data.load(DataConfig(name="shakespeare_passages", block_size=24, passage_words=16, train_limit=90,
                                    eval_limit=60))
    except DataError as e:
        missing_data(str(e))


def test_dataset_splits_labels_lengths_and_masks(ds):
    assert ds.inputs == ("tokens", "token_mask") and ds.targets == ("label",)
    assert ds.class_names == ("comedy", "history", "tragedy") and ds.num_classes == 3
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 60, 60)
    plays = ds.info["plays"]
    assert not set(plays["train"]) & set(plays["val"]) and not set(plays["train"]) & set(plays["test"])
    assert not set(plays["val"]) & set(plays["test"])
    special = ds.info["tokenizer"]["special"]
    for split in (ds.train, ds.val, ds.test):
        b = split.batch(np.arange(len(split)))
        tokens, mask, label = b["tokens"], b["token_mask"], b["label"]
        assert tokens.shape == mask.shape == (len(split), 24) and tokens.dtype == mask.dtype == np.int32
        assert np.bincount(label, minlength=3).min() >= 10  # stratified subsets keep all three kinds
        n = mask.sum(1)
        assert (n > 2).all() and (n <= 24).all()
        assert (mask == (np.arange(24)[None] < n[:, None])).all()  # real tokens first, then padding
        assert (tokens[:, 0] == special["cls"]).all()
        assert (tokens[np.arange(len(n)), n - 1] == special["sep"]).all()
        assert (tokens[mask == 0] == special["pad"]).all()
    # 16 words of Shakespeare do not always fit in 22 word pieces: some passages were truncated
    assert 0 < ds.info["counts"]["train"]["truncated"] <= 90


def test_bad_configs_name_the_key():
    from jaxdl import data

    base = DataConfig(name="shakespeare_passages")
    for fields, match in (({"passage_words": 0}, "data.passage_words: expected an int >= 1, got 0"),
                          ({"block_size": 2}, "data.block_size: shakespeare_passages needs at least 3 tokens"),
                          ({"split": "random"}, "data.split='random': shakespeare_passages holds out whole plays"),
                          ({"tokenizer": "bpe"}, "data.tokenizer='bpe': shakespeare_passages always tokenizes"),
                          ({"context": 8}, "data.context does not apply to the text classification data set")):
        with pytest.raises(ConfigError, match=match):
            data.load(dataclasses.replace(base, **fields))
