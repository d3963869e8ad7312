"""The index held in memory for bulk classification: the hybrid query answered with matrix products.

``classify-file`` asks one hybrid query per text. On short texts (job titles) that query, not the
embedding, was most of a row's time: about 3 ms, mostly turning some 48 candidates with their payloads
into Python objects. A bulk run can instead read the collection once (:meth:`MemoryIndex.load`: dense
vectors, BM25 vectors and the payload fields a hit carries) and answer each batch with numpy: the dense
prefetch is an exact cosine top-``k``, the sparse one a BM25 top-``k`` with the collection's IDF
(``ln(1 + (N − n + 0.5) / (n + 0.5))``, Qdrant's ``Modifier.IDF``), fused by RRF (``Σ 1/(rank + 2)``),
and the hits ordered as :meth:`indexing.store.VectorStore.hybrid_search_many` orders them (fused score,
then cosine, then vacancy id). Exact where a large collection's HNSW graph is approximate; ties at a
prefetch's own cut may break another way. The copy is a snapshot: points written after it was read are
not in it, which suits a bulk run against a fixed index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from indexing.sparse import SparseVector
from indexing.store import Hit, VectorStore, hit_of
from models.knn import RRF_K, idf

MAX_POINTS = 500_000  # above this a bulk run queries the store (≈ 0.8 GB of 384-dim float32 vectors here)
BLOCK = 1 << 22  # scores computed per block of queries: at most this many (≈ 16 MB of float32)


class TooLarge(ValueError):
    """The collection holds more points than an in-memory copy may."""


@dataclass(frozen=True)
class MemoryIndex:
    """A read-only copy of a collection: ``dense`` (n × d, L2-normalised), ``docs`` (n × terms, the BM25
    document parts, CSR), the IDF of each term column, the term id → column map and each point's payload
    fields (as a :class:`~indexing.store.Hit` to copy)."""

    dense: np.ndarray
    docs: sp.csr_matrix
    term_idf: np.ndarray
    columns: dict[int, int]
    points: list[Hit]  # each point's hit with score 0: its payload fields, read once

    @classmethod
    def load(cls, store: VectorStore, max_points: int | None = None) -> MemoryIndex:
        """Read every point of the store's live collection (raises :class:`TooLarge` above ``max_points``,
        default ``MAX_POINTS``)."""
        n = store.count()
        max_points = MAX_POINTS if max_points is None else max_points
        if n > max_points:
            raise TooLarge(f"the index holds {n} points, more than an in-memory copy may ({max_points})")
        dense: list[np.ndarray] = []
        sparse: list[SparseVector] = []
        payloads: list[dict[str, Any]] = []
        for payload, vectors in store.iter_points():
            payloads.append(payload)
            dense.append(vectors.dense)
            sparse.append(vectors.sparse)
        return cls.of(dense, sparse, payloads)

    @classmethod
    def of(
        cls, dense: Sequence[np.ndarray], sparse: Sequence[SparseVector], payloads: list[dict[str, Any]]
    ) -> MemoryIndex:
        """An index of these points (vectors and payloads in one order)."""
        columns: dict[int, int] = {}
        indptr, indices, values = [0], list[int](), list[float]()
        for vector in sparse:
            indices.extend(columns.setdefault(int(t), len(columns)) for t in vector.indices)
            values.extend(float(v) for v in vector.values)
            indptr.append(len(indices))
        docs = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(sparse), len(columns)),
        )
        raw = np.asarray(dense, dtype=np.float32).reshape(len(payloads), -1)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        matrix = (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)  # Qdrant normalises cosine vectors too
        term_idf = idf(np.bincount(docs.indices, minlength=len(columns)), len(payloads))
        return cls(matrix, docs, term_idf, columns, [hit_of(payload, 0.0) for payload in payloads])

    def __len__(self) -> int:
        return len(self.points)

    def hybrid_search_many(self, dense: np.ndarray, sparse: Sequence[SparseVector], k: int) -> list[list[Hit]]:
        """What :meth:`indexing.store.VectorStore.hybrid_search_many` returns for these queries without a
        filter (a bulk run searches the whole index)."""
        if len(sparse) != len(dense):
            raise ValueError(f"{len(dense)} dense but {len(sparse)} sparse query vectors")
        if len(dense) == 0 or len(self) == 0:
            return [[] for _ in range(len(dense))]
        queries = np.asarray(dense, dtype=np.float32)
        k = min(k, len(self))
        rows: list[list[Hit]] = []
        step = max(1, BLOCK // len(self))
        for start in range(0, len(queries), step):
            block = queries[start : start + step]
            cosines = block @ self.dense.T
            lexical = self._bm25(sparse[start : start + step])
            for i in range(len(block)):
                row = slice(lexical.indptr[i], lexical.indptr[i + 1])
                rows.append(self._fused(cosines[i], lexical.data[row], lexical.indices[row], k))
        return rows

    def _bm25(self, queries: Sequence[SparseVector]) -> sp.csr_matrix:
        """Each query's BM25 score of every document sharing a term with it (a sparse row per query)."""
        indptr, indices, values = [0], list[int](), list[float]()
        for q in queries:
            for term, weight in zip(q.indices, q.values, strict=True):
                column = self.columns.get(int(term))
                if column is not None:  # a term no document has scores nothing
                    indices.append(column)
                    values.append(float(weight) * self.term_idf[column])
            indptr.append(len(indices))
        weighted = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(queries), len(self.columns)),
        )
        return (weighted @ self.docs.T).tocsr()

    def _fused(self, cosine: np.ndarray, scores: np.ndarray, docs: np.ndarray, k: int) -> list[Hit]:
        """One query's hits: the dense and the sparse top ``k`` (``scores`` of the documents ``docs`` that
        share a term with it) fused by RRF, ordered as the store orders them."""
        dense_top = _top(cosine, k)
        rrf: dict[int, float] = {}
        for rank, point in enumerate(dense_top):
            rrf[int(point)] = 1.0 / (rank + RRF_K)
        positive = scores > 0
        scores, docs = scores[positive], docs[positive]
        for rank, j in enumerate(_top(scores, k)):
            point = int(docs[j])
            rrf[point] = rrf.get(point, 0.0) + 1.0 / (rank + RRF_K)
        points = self.points
        cos = {p: float(cosine[p]) for p in rrf}
        best = sorted(rrf, key=lambda p: (-round(rrf[p], 6), -round(cos[p], 6), points[p].vacancy_id))[:k]
        return [_scored(points[p], cos[p], rrf[p]) for p in best]


def _scored(point: Hit, score: float, rank_score: float) -> Hit:
    """``point``'s hit with these scores (positional: a bulk run builds some thirty per text)."""
    return Hit(
        point.vacancy_id,
        point.label,
        score,
        point.source,
        point.snippet,
        point.created_at,
        point.text_hash,
        point.labelled_at,
        rank_score,
    )


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, highest first."""
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]
