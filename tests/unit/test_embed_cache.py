from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from indexing.cache import EmbeddingCache, encode_cached
from indexing.embed import split_chunks
from tests.fakes import FakeEncoder


def test_chunks_split_sentences_and_keep_short_fragments() -> None:
    text = "Carpenter wanted in Aarhus.\nYour tasks:\n- roofs\n- floors\nWe offer a good salary and a nice team!"
    assert split_chunks(text) == [
        "Carpenter wanted in Aarhus. Your tasks: - roofs - floors",  # short fragments join their neighbour
        "We offer a good salary and a nice team!",
    ]


def test_long_chunks_are_cut() -> None:
    chunks = split_chunks("word " * 300, max_words=120)
    assert [len(c.split()) for c in chunks] == [120, 120, 60]


@given(st.text(max_size=400))
def test_chunking_keeps_every_word(text: str) -> None:
    chunks = split_chunks(text)
    assert chunks
    if text.split():
        assert " ".join(chunks).split() == text.split()


def test_cache_returns_the_same_vectors_and_skips_the_encoder(tmp_path: Path) -> None:
    encoder = FakeEncoder()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    texts = ["nurse on a ward", "python developer", "nurse on a ward"]
    first = encode_cached(encoder, texts, cache)
    assert encoder.calls == [2]  # the duplicate is embedded once
    second = encode_cached(encoder, texts, cache)
    assert encoder.calls == [2]  # all from the cache
    assert np.array_equal(first, second) and np.array_equal(first[0], first[2])
    other = FakeEncoder(name="another-model")
    encode_cached(other, texts[:1], cache)
    assert other.calls == [1]  # keyed by model
    cache.close()
