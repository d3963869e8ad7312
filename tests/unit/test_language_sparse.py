"""indexing.language (the cheap language guess) and indexing.sparse (BM25 vectors for hybrid search)."""

from __future__ import annotations

import pytest

from indexing.language import UNDETERMINED, detect_language
from indexing.sparse import LexicalEncoder


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Vi søger en erfaren tømrer til tagarbejde i Aarhus. Du har svendebrev og kørekort.", "da"),
        ("Truckfører søges til lager i Brøndby", "da"),
        ("We are looking for an experienced carpenter to join our team in Aarhus.", "en"),
        ("Vi söker en snickare till vårt team i Göteborg. Du har erfarenhet av takarbete.", "sv"),
        ("Vi søker en tømrer til vårt team i Bergen. Du har erfaring og jobb", "nb"),
        ("Wir suchen einen Tischler für unser Team in Hamburg und bieten eine feste Stelle.", "de"),
        ("Szukamy stolarza do pracy w naszej firmie, doświadczenie jest wymagane.", "pl"),
    ],
)
def test_detects_the_languages_a_job_board_sees(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["", "Tømrer", "SOSU", "12345 !!!"])
def test_too_little_text_is_undetermined(text: str) -> None:
    assert detect_language(text) == UNDETERMINED


def test_sparse_vectors_stem_danish_and_drop_stop_words() -> None:
    enc = LexicalEncoder()
    doc, other = enc.documents(["Tømrere til tagarbejde og nybyggeri", "sygeplejerske til nattevagt"])
    (query,) = enc.queries(["tømrer"])
    assert set(query.indices) <= set(doc.indices)  # "tømrere" and "tømrer" are one term
    assert not set(query.indices) & set(other.indices)
    assert len(doc.indices) == 3  # "til" and "og" are stop words
    assert list(doc.indices) == sorted(doc.indices)
    assert all(v > 0 for v in doc.values) and query.values == (1.0,)
    assert not enc.queries(["og til i"])[0]  # only stop words: an empty vector
    assert enc.documents(["Tømrere til tagarbejde og nybyggeri"]) == [doc]  # deterministic


def test_unknown_stemmer_language_is_refused() -> None:
    with pytest.raises(ValueError, match="Snowball"):
        LexicalEncoder(language="polish")
