"""Sparse lexical vectors for Qdrant's hybrid search, computed client-side once for every backend.

BM25 term weights from the embedded Qdrant engine's own model (``qdrant_edge.Bm25``): word tokens,
lower-cased, stop words removed (Danish and English by default), Snowball-stemmed ("tømrere",
"tømrer" → one term), hashed to 32-bit term ids. Documents carry the BM25 term-frequency part; the
collection applies IDF (``Modifier.IDF``), so a query's score is Σ idf(t)·tf-part(t) over shared
terms. Computing the vectors here rather than with a server-side model keeps the embedded engine,
qdrant-client's local mode and a Qdrant server congruent: each gets the very same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SNOWBALL = frozenset(
    {"arabic", "armenian", "danish", "dutch", "english", "finnish", "french", "german", "greek", "hungarian"}
    | {"italian", "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish", "tamil", "turkish"}
)


@dataclass(frozen=True)
class SparseVector:
    """Term ids (sorted, unique) and weights: the shape every Qdrant client takes."""

    indices: tuple[int, ...]
    values: tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.indices)


class LexicalEncoder:
    """BM25 sparse vectors for documents (indexed vacancies) and queries (texts to classify or search)."""

    def __init__(
        self,
        language: str = "danish",
        stopwords: Sequence[str] = ("danish", "english"),
        *,
        k: float = 1.2,
        b: float = 0.75,
        avg_len: float = 120.0,
    ) -> None:
        import qdrant_edge as q

        if language not in SNOWBALL:
            raise ValueError(f"no Snowball stemmer for {language!r}; choose one of {', '.join(sorted(SNOWBALL))}")
        self.language = language
        self.stopwords = tuple(stopwords)
        self.k, self.b, self.avg_len = k, b, avg_len
        stop_set = q.StopwordsSet(languages={getattr(q.Language, s.capitalize()) for s in self.stopwords})
        stemmer = q.SnowballParams(getattr(q.SnowballLanguage, language.capitalize()))
        config = q.Bm25Config(k=k, b=b, avg_len=avg_len, language=None, stemmer=stemmer, stopwords=stop_set)
        self._model: Any = q.Bm25(config)

    @property
    def signature(self) -> dict[str, Any]:
        """What makes two sets of vectors comparable (stored with the collection)."""
        return {
            "model": "bm25",
            "language": self.language,
            "stopwords": list(self.stopwords),
            "k": self.k,
            "b": self.b,
            "avg_len": self.avg_len,
        }

    def documents(self, texts: Sequence[str]) -> list[SparseVector]:
        return [_sorted(self._model.embed_document(t)) for t in texts]

    def queries(self, texts: Sequence[str]) -> list[SparseVector]:
        return [_sorted(self._model.embed_query(t)) for t in texts]


def _sorted(vector: Any) -> SparseVector:
    pairs = sorted(zip(vector.indices, vector.values, strict=True))
    return SparseVector(tuple(int(i) for i, _ in pairs), tuple(float(v) for _, v in pairs))


def to_csr(*groups: Sequence[SparseVector]) -> list[Any]:
    """Each group of vectors as a scipy CSR matrix, all over one compact term-column space (the 32-bit
    term ids mapped to 0..T−1 in order of first appearance), for the offline maths in ``models.knn``."""
    import numpy as np
    import scipy.sparse as sp

    columns: dict[int, int] = {}
    for group in groups:
        for vector in group:
            for term in vector.indices:
                columns.setdefault(term, len(columns))
    out = []
    for group in groups:
        rows = [r for r, v in enumerate(group) for _ in v.indices]
        cols = [columns[t] for v in group for t in v.indices]
        vals = [w for v in group for w in v.values]
        out.append(sp.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(len(group), len(columns))))
    return out
