"""all-MiniLM-L6-v2 offline: the packaged safetensors through the BERT converter, the package's tokenizer, mean
pooling and L2 normalisation reproduce sentence-transformers' similarities."""

from __future__ import annotations

import numpy as np
import pytest
from jaxdl_testing import missing_data

from jaxdl.errors import DataError

SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


@pytest.fixture(scope="module")
def encoder():
    from jaxdl.text_embeddings import SentenceEncoder

    try:
        return SentenceEncoder.from_packaged("all_minilm_l6_v2")
    except DataError as e:
        if "not installed" not in str(e):
            raise
        missing_data(str(e))


def test_similarities_match_sentence_transformers(encoder):
    e = encoder.encode(SENTENCES)
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    # sentence-transformers' model card values for these sentences
    np.testing.assert_allclose([sim[0, 1], sim[0, 2], sim[1, 2]], [0.6660, 0.1046, 0.1411], atol=1e-3)


def test_tokenizer_and_bucketed_compilation(encoder):
    batch = encoder.tokenize(SENTENCES)
    assert batch["tokens"].shape == (3, 32)  # padded to the 32-token bucket
    assert batch["tokens"][0, 0] == 101 and batch["tokens"][0, 7] == 102  # [CLS] the weather … [SEP]
    assert batch["tokens"][0, 1] == 1996  # "The" lowercased by the tokenizer's normaliser
    assert batch["token_mask"].sum(1).tolist() == [8, 9, 8]
    e = encoder.encode(SENTENCES)
    traces = encoder.traces[0]
    other = encoder.encode(["A cat sat on the mat.", "Completely different words here", "Rain again."])
    assert encoder.traces[0] == traces  # same buckets: no new compilation
    assert other.shape == (3, 384)
    # order and batch composition do not change an embedding (padding is masked out)
    np.testing.assert_allclose(encoder.encode(SENTENCES[::-1] + ["x"])[:3][::-1], e, atol=1e-5)
    long = encoder.tokenize(["word " * 600])
    assert long["tokens"].shape == (1, 256) and long["tokens"][0, -1] == 102  # truncated to max_seq_length


def test_rejects_a_single_string(encoder):
    with pytest.raises(DataError, match="list of strings"):
        encoder.encode("The weather is lovely today.")
