"""k-nearest-neighbour vote: neighbours' labels and similarities → a class probability vector."""

from __future__ import annotations

from typing import Any

import numpy as np


def knn_vote(
    labels: np.ndarray,
    scores: np.ndarray,
    n_classes: int,
    *,
    k: int | None = None,
    temperature: float = 0.05,
    class_prior: np.ndarray | None = None,
) -> np.ndarray:
    """Similarity-weighted vote.

    ``labels`` and ``scores`` are ``(n, m)`` arrays of neighbour class indices and cosine similarities,
    best first; the first ``k`` columns vote (all when ``k`` is None). Each neighbour weighs
    ``exp(score / temperature)``: a small temperature trusts the closest neighbours most. With a
    ``class_prior`` the votes of each class are divided by its prior (class-balanced voting).
    Rows with no neighbours (label < 0 marks padding) get the uniform distribution.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != scores.shape:
        raise ValueError("labels and scores must be (n, m) arrays of the same shape")
    if k is not None:
        labels, scores = labels[:, :k], scores[:, :k]
    n = labels.shape[0]
    probs = np.zeros((n, n_classes), dtype=np.float64)
    if labels.shape[1] == 0:
        return np.full((n, n_classes), 1.0 / n_classes)
    valid = labels >= 0
    # Subtract the row maximum before exponentiating: same weights, no overflow.
    shifted = np.where(valid, scores, -np.inf) / temperature
    row_max = np.max(shifted, axis=1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(valid, np.exp(shifted - row_max), 0.0)
    rows = np.repeat(np.arange(n), labels.shape[1])
    np.add.at(probs, (rows, np.where(valid, labels, 0).ravel()), weights.ravel())
    if class_prior is not None:
        probs = probs / np.maximum(np.asarray(class_prior, dtype=np.float64), 1e-12)
    totals = probs.sum(axis=1, keepdims=True)
    empty = totals[:, 0] <= 0
    probs[~empty] /= totals[~empty]
    probs[empty] = 1.0 / n_classes
    return probs


def exact_neighbours(
    queries: np.ndarray, corpus: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine neighbours of L2-normalised vectors: (indices, scores), best first.

    Used to tune the vote offline; in production the neighbours come from the vector store.
    With ``exclude_self`` the queries are the corpus and each row skips itself (leave-one-out).
    """
    sims = queries @ corpus.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    k = min(k, corpus.shape[0] - (1 if exclude_self else 0))
    idx = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    part = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-part, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(sims, idx, axis=1)


# ---- lexical and hybrid neighbours (what Qdrant's sparse and hybrid queries return) -------------------
RRF_K = 2  # Qdrant's default ranking constant: score = Σ 1 / (rank + RRF_K), rank from 0
CHUNK = 512


def idf(document_frequency: np.ndarray, n_documents: int) -> np.ndarray:
    """Qdrant's IDF modifier: ``ln(1 + (N − n + 0.5) / (n + 0.5))``."""
    df = np.asarray(document_frequency, dtype=np.float64)
    return np.log1p((n_documents - df + 0.5) / (df + 0.5))


def sparse_neighbours(
    queries: Any, corpus: Any, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force BM25 neighbours: ``queries`` (term weights, 1 per query term) and ``corpus``
    (BM25 term-frequency parts) are scipy sparse matrices over the same term columns; the score of a
    document is Σ idf(t)·q(t)·d(t), IDF over the corpus. Returns (indices, scores), best first; a
    query that shares no term with a document scores 0 for it (ties keep corpus order)."""
    import scipy.sparse as sp

    corpus = sp.csr_matrix(corpus)
    df = np.bincount(corpus.indices, minlength=corpus.shape[1])
    weighted = sp.csr_matrix(queries).multiply(idf(df, corpus.shape[0])[None, :]).tocsr()
    k = min(k, corpus.shape[0] - (1 if exclude_self else 0))
    corpus_t = corpus.T.tocsc()
    idx = np.zeros((weighted.shape[0], k), dtype=np.int64)
    scores = np.zeros((weighted.shape[0], k), dtype=np.float64)
    for start in range(0, weighted.shape[0], CHUNK):  # a dense block of CHUNK × corpus scores at a time
        sims = np.asarray((weighted[start : start + CHUNK] @ corpus_t).todense(), dtype=np.float64)
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        idx[start : start + CHUNK], scores[start : start + CHUNK] = order, np.take_along_axis(sims, order, axis=1)
    return idx, scores


def rrf_fuse(
    rankings: list[np.ndarray], limit: int, *, valid: list[np.ndarray] | None = None, k: int = RRF_K
) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal-rank fusion of several ``(n, m)`` index arrays (best first) into the top ``limit``
    (indices, scores) per row, as Qdrant's ``Fusion.RRF`` does: ``Σ 1 / (rank + k)``; ties keep the
    order in which points were first met (ranking by ranking, rank by rank). ``valid`` masks entries
    a prefetch did not return (a sparse query with no shared term returns nothing). Rows with fewer
    candidates are padded with index -1 and score 0."""
    n = rankings[0].shape[0]
    out_idx = np.full((n, limit), -1, dtype=np.int64)
    out_scores = np.zeros((n, limit), dtype=np.float64)
    for row in range(n):
        scores: dict[int, float] = {}
        for r, ranking in enumerate(rankings):
            keep = valid[r][row] if valid is not None else np.ones(ranking.shape[1], dtype=bool)
            for rank, point in enumerate(ranking[row][keep]):
                scores[int(point)] = scores.get(int(point), 0.0) + 1.0 / (rank + k)
        best = sorted(scores.items(), key=lambda item: -item[1])[:limit]  # stable: first met wins ties
        for j, (point, score) in enumerate(best):
            out_idx[row, j], out_scores[row, j] = point, score
    return out_idx, out_scores


def hybrid_votes(
    queries_x: np.ndarray,
    corpus_x: np.ndarray,
    corpus_y: np.ndarray,
    queries_sparse: Any,
    corpus_sparse: Any,
    k: int,
    *,
    exclude_self: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The vote arrays a hybrid query gives: the top ``k`` of dense (cosine) and sparse (BM25) neighbours
    fused by RRF, as Qdrant's ``prefetch`` + ``Fusion.RRF`` returns them, and then weighed two ways:
    ``"cosine"`` (the candidates re-ordered by their cosine similarity) and ``"rank"`` (their RRF score).
    Returns ``{weighting: (labels, scores)}``, best first, padded with label -1."""
    d_idx, _ = exact_neighbours(queries_x, corpus_x, k, exclude_self=exclude_self)
    s_idx, s_scores = sparse_neighbours(queries_sparse, corpus_sparse, k, exclude_self=exclude_self)
    idx, rrf = rrf_fuse([d_idx, s_idx], d_idx.shape[1], valid=[np.ones(d_idx.shape, dtype=bool), s_scores > 0])
    present = idx >= 0
    safe = np.where(present, idx, 0)
    cosine = np.where(present, np.einsum("nd,nkd->nk", queries_x, corpus_x[safe]), -np.inf)
    order = np.argsort(-cosine, axis=1, kind="stable")
    by_cos = np.take_along_axis(safe, order, axis=1)
    cos_present = np.take_along_axis(present, order, axis=1)
    labels_rank = np.where(present, corpus_y[safe], -1)
    labels_cos = np.where(cos_present, corpus_y[by_cos], -1)
    cos_scores = np.where(cos_present, np.take_along_axis(cosine, order, axis=1), 0.0)
    return {"cosine": (labels_cos, cos_scores), "rank": (labels_rank, np.where(present, rrf, 0.0))}
