"""The embedded Qdrant engine (edge backend) answers like qdrant-client's local mode.

Every test runs the same operations through :class:`VectorStore` on both backends and compares the
answers (ids, order, payloads, scores to 1e-5), qdrant-client style: the same upserts (dense + BM25
sparse named vectors), dense, sparse-only and hybrid (prefetch + RRF) queries with and without payload
filters, excluded ids, alias swaps, deletes and metadata. The hybrid answers also equal what
``models.knn.hybrid_votes`` (the offline simulation training tunes on) computes for the same corpus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from indexing import memory_index
from indexing.edge_store import EdgeClient
from indexing.memory_index import MemoryIndex
from indexing.sparse import LexicalEncoder, SparseVector, to_csr
from indexing.store import (
    LAYOUT,
    LEXICAL,
    Hit,
    SearchFilter,
    StoreError,
    StoreLockedError,
    VacancyPoint,
    VectorStore,
    connect,
)
from models.knn import hybrid_votes

DIM = 16
LABELS = ["Bygge og anlæg", "Handel og service", "IT og telekommunikation"]
SOURCES = ["sample", "feedback"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = [
    ["tømrer", "tag", "byggeplads", "murer", "stillads", "beton"],
    ["butik", "kasse", "kunde", "salg", "varer", "lager"],
    ["udvikler", "python", "kode", "netværk", "server", "database"],
]
QUERY_TEXTS = ["tømrer til byggeplads", "python udvikler med server", "salg i butik", "kunde og kode", "og i"]
_LEXICAL = LexicalEncoder()


def _letters(n: int) -> str:
    out = ""
    for _ in range(3):
        n, r = divmod(n, 26)
        out += chr(97 + r)
    return out


def _text(i: int, c: int, rng: np.random.Generator) -> str:
    """Words of the class and some of another, then ``i`` filler words of its own: every text has its own
    length, so no two BM25 scores tie (Qdrant breaks ties at a prefetch's cut in its own way)."""
    words = [*rng.choice(WORDS[c], 3), *rng.choice(WORDS[(c + 1) % 3], int(rng.integers(0, 2)))]
    return " ".join([*words, *(f"fyld{_letters(i)}{_letters(j)}" for j in range(i % 40))])


def _points(n: int, seed: int = 0) -> list[VacancyPoint]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), DIM))
    texts = [_text(i, i % len(LABELS), rng) for i in range(n)]
    sparse = _LEXICAL.documents(texts)
    out = []
    for i in range(n):
        c = i % len(LABELS)
        v = centres[c] + 0.6 * rng.normal(size=DIM)
        out.append(
            VacancyPoint(
                vacancy_id=f"v-{seed}-{i:04d}",
                vector=(v / np.linalg.norm(v)).astype(np.float32),
                label=LABELS[c],
                source=SOURCES[i % 2],
                created_at=T0 + timedelta(days=i),
                text=texts[i],
                text_hash=f"h{i}",
                sparse=sparse[i],
            )
        )
    return out


def _sparse_queries(n: int) -> list[SparseVector]:
    return _LEXICAL.queries([QUERY_TEXTS[i % len(QUERY_TEXTS)] for i in range(n)])


def _queries(n: int, seed: int = 7) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[VectorStore, VectorStore]]:
    local = VectorStore(QdrantClient(":memory:"))
    edge = VectorStore(EdgeClient(str(tmp_path / "edge")))
    yield local, edge
    local.client.close()
    edge.client.close()


def _both(stores: tuple[VectorStore, VectorStore], points: list[VacancyPoint]) -> None:
    for store in stores:
        name = store.create_version(DIM, metadata={"embedding": {"model": "fake"}})
        store.upsert(points, collection=name)
        store.swap_alias(name)


def _same(a: list[Hit], b: list[Hit]) -> None:
    assert [h.vacancy_id for h in a] == [h.vacancy_id for h in b]
    assert [h.rank_score is None for h in a] == [h.rank_score is None for h in b]
    np.testing.assert_allclose([h.rank_score or 0.0 for h in a], [h.rank_score or 0.0 for h in b], atol=1e-5)
    assert [h.label for h in a] == [h.label for h in b]
    assert [h.source for h in a] == [h.source for h in b]
    assert [h.created_at for h in a] == [h.created_at for h in b]
    assert [h.labelled_at for h in a] == [h.labelled_at for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_search_and_metadata_agree(stores: tuple[VectorStore, VectorStore]) -> None:
    local, edge = stores
    _both(stores, _points(120))
    assert local.count() == edge.count() == 120
    assert local.active_collection() == edge.active_collection() == "vacancies_v1"
    meta = {"embedding": {"model": "fake"}, "layout": LAYOUT}
    assert local.collection_metadata() == edge.collection_metadata() == meta
    queries = _queries(8)
    rows_l, rows_e = local.search_many(queries, 10), edge.search_many(queries, 10)
    assert len(rows_e) == 8 and all(len(r) == 10 for r in rows_e)
    for a, b in zip(rows_l, rows_e, strict=True):
        _same(a, b)
    _same(local.search(queries[0], 5), edge.search(queries[0], 5))


@pytest.mark.parametrize(
    "flt",
    [
        SearchFilter(labels=[LABELS[0]]),
        SearchFilter(labels=[LABELS[1], LABELS[2]], source="feedback"),
        SearchFilter(since=T0 + timedelta(days=30), until=T0 + timedelta(days=90)),
        SearchFilter(since=datetime(2024, 2, 1)),  # a naive datetime is UTC on both
        SearchFilter(exclude_ids=[f"v-0-{i:04d}" for i in range(0, 120, 2)]),
        SearchFilter(labels=["no such label"]),
    ],
    ids=["label", "labels+source", "since+until", "naive-since", "exclude-ids", "empty"],
)
def test_filtered_search_agrees(stores: tuple[VectorStore, VectorStore], flt: SearchFilter) -> None:
    local, edge = stores
    _both(stores, _points(120))
    queries = _queries(5)
    rows_l, rows_e = local.search_many(queries, 7, flt), edge.search_many(queries, 7, flt)
    for a, b in zip(rows_l, rows_e, strict=True):
        _same(a, b)
    if flt.labels == ["no such label"]:
        assert rows_e == [[]] * 5
    for row in rows_e:
        for hit in row:
            if flt.labels:
                assert hit.label in flt.labels
            if flt.source:
                assert hit.source == flt.source
            assert hit.vacancy_id not in set(flt.exclude_ids)


def test_upsert_overwrite_delete_and_vector_agree(stores: tuple[VectorStore, VectorStore]) -> None:
    local, edge = stores
    points = _points(60)
    _both(stores, points)
    changed = VacancyPoint(**{**points[3].__dict__, "label": LABELS[2], "source": "feedback"})
    for store in stores:
        assert store.upsert([changed]) == 1
        store.delete([points[5].vacancy_id, "never-stored"])
    assert local.count() == edge.count() == 59
    assert local.vector_of(points[5].vacancy_id) is None and edge.vector_of(points[5].vacancy_id) is None
    v_local, v_edge = local.vector_of(points[3].vacancy_id), edge.vector_of(points[3].vacancy_id)
    assert v_local is not None and v_edge is not None
    np.testing.assert_allclose(v_local, v_edge, atol=1e-6)
    [hit_l], [hit_e] = local.search(points[3].vector, 1), edge.search(points[3].vector, 1)
    _same([hit_l], [hit_e])
    assert hit_e.label == LABELS[2] and hit_e.source == "feedback" and hit_e.score == pytest.approx(1.0, abs=1e-5)


def test_rebuild_swap_drops_old_collection_on_both(stores: tuple[VectorStore, VectorStore]) -> None:
    local, edge = stores
    _both(stores, _points(30, seed=1))
    new_points = _points(40, seed=2)
    for store in stores:
        name = store.create_version(DIM, metadata={"embedding": {"model": "fake2"}})
        assert name == "vacancies_v2"
        store.building = name
        store.upsert(new_points[:1])  # a single write during a rebuild reaches both collections
        store.upsert(new_points[1:], collection=name)
        assert store.count("vacancies_v1") == 31
        assert store.swap_alias(name) == "vacancies_v1"
        store.building = None
    for store in stores:
        names = {c.name for c in store.client.get_collections().collections}
        assert names == {"vacancies_v2"}
        assert store.count() == 40 and store.collection_metadata() == {
            "embedding": {"model": "fake2"},
            "layout": LAYOUT,
        }
    q = _queries(3)
    for a, b in zip(local.search_many(q, 5), edge.search_many(q, 5), strict=True):
        _same(a, b)


def test_without_alias_both_raise_store_error(stores: tuple[VectorStore, VectorStore]) -> None:
    for store in stores:
        assert not store.exists() and store.count() == 0 and store.collection_metadata() == {}
        with pytest.raises(StoreError):
            store.search(_queries(1)[0], 3)
        with pytest.raises(StoreError):
            store.upsert(_points(1))
        assert store.search_many(np.zeros((0, DIM), np.float32), 3) == []


def test_edge_persists_and_locks_its_folder(tmp_path: Path) -> None:
    path = str(tmp_path / "edge")
    store = VectorStore(connect(path=path, backend="edge"))
    name = store.create_version(DIM, metadata={"embedding": {"model": "fake"}})
    points = _points(25)
    store.upsert(points, collection=name)
    store.swap_alias(name)
    before = store.search(points[0].vector, 5)
    with pytest.raises(StoreLockedError, match="in use by another process"):
        connect(path=path, backend="edge")
    store.client.close()
    reopened = VectorStore(connect(path=path, backend="edge"))
    try:
        assert reopened.active_collection() == name and reopened.count() == 25
        assert reopened.collection_metadata() == {"embedding": {"model": "fake"}, "layout": LAYOUT}
        _same(before, reopened.search(points[0].vector, 5))
    finally:
        reopened.client.close()


def test_edge_optimize_builds_hnsw_and_keeps_answers(tmp_path: Path) -> None:
    """After the index build the answers stay exact on this small, well-separated set."""
    client = EdgeClient(str(tmp_path / "edge"), background_optimize=False)
    store = VectorStore(client)
    local = VectorStore(QdrantClient(":memory:"))
    try:
        points = _points(300)
        for s in (store, local):
            name = s.create_version(DIM)
            s.upsert(points, collection=name)
            s.swap_alias(name)
        client.optimize("vacancies")
        q = _queries(4)
        for a, b in zip(local.search_many(q, 5), store.search_many(q, 5), strict=True):
            _same(a, b)
    finally:
        client.close()
        local.client.close()


# ---- sparse and hybrid -----------------------------------------------------------------------------
FILTERS = [
    None,
    SearchFilter(labels=[LABELS[0]]),
    SearchFilter(labels=[LABELS[1], LABELS[2]], source="feedback"),
    SearchFilter(since=T0 + timedelta(days=30), until=T0 + timedelta(days=90)),
    SearchFilter(exclude_ids=[f"v-0-{i:04d}" for i in range(0, 120, 2)]),
    SearchFilter(labels=["no such label"]),
]
FILTER_IDS = ["none", "label", "labels+source", "since+until", "exclude-ids", "empty"]


def _sparse_only(store: VectorStore, query: SparseVector, k: int, flt: SearchFilter | None) -> list[tuple[str, float]]:
    """A sparse-only query through the backend client (the store itself only runs dense and hybrid ones)."""
    [response] = store.client.query_batch_points(
        store.alias,
        requests=[
            models.QueryRequest(
                query=models.SparseVector(indices=list(query.indices), values=list(query.values)),
                using=LEXICAL,
                limit=k,
                filter=flt.to_qdrant() if flt else None,
                with_payload=True,
            )
        ],
    )
    return [(str((p.payload or {})["vacancy_id"]), float(p.score)) for p in response.points]


def test_sparse_vectors_are_stored_alike(stores: tuple[VectorStore, VectorStore]) -> None:
    points = _points(30)
    _both(stores, points)
    for p in points[:5]:
        got = [store.vectors_of(p.vacancy_id) for store in stores]
        assert all(g is not None for g in got)
        assert p.sparse and all(g.sparse == p.sparse for g in got if g is not None)
        np.testing.assert_allclose(got[0].dense, got[1].dense, atol=1e-6)  # type: ignore[union-attr]
    assert all(store.vectors_of("never-stored") is None for store in stores)


@pytest.mark.parametrize("flt", FILTERS, ids=FILTER_IDS)
def test_sparse_only_query_agrees(stores: tuple[VectorStore, VectorStore], flt: SearchFilter | None) -> None:
    local, edge = stores
    _both(stores, _points(120))
    for query in _sparse_queries(4):
        a, b = _sparse_only(local, query, 8, flt), _sparse_only(edge, query, 8, flt)
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-5)
        if flt is None:
            assert len(a) == 8  # the query terms occur in the corpus


@pytest.mark.parametrize("flt", FILTERS, ids=FILTER_IDS)
def test_hybrid_query_agrees(stores: tuple[VectorStore, VectorStore], flt: SearchFilter | None) -> None:
    local, edge = stores
    _both(stores, _points(120))
    dense, sparse = _queries(len(QUERY_TEXTS)), _sparse_queries(len(QUERY_TEXTS))
    assert not sparse[-1]  # "og i": stop words only, so that row runs the dense prefetch alone
    rows_l, rows_e = local.hybrid_search_many(dense, sparse, 7, flt), edge.hybrid_search_many(dense, sparse, 7, flt)
    for a, b in zip(rows_l, rows_e, strict=True):
        _same(a, b)
    if flt is not None and flt.labels == ["no such label"]:
        assert rows_e == [[]] * len(QUERY_TEXTS)
        return
    for q, row in zip(dense, rows_e, strict=True):
        assert len(row) == 7
        ranks = [h.rank_score or 0.0 for h in row]
        assert ranks == sorted(ranks, reverse=True) and ranks[0] <= 1.0 + 1e-6  # at most 1/2 + 1/2
        stored = {h.vacancy_id: edge.vector_of(h.vacancy_id) for h in row}
        for hit in row:  # score is the cosine of the dense vectors
            assert hit.score == pytest.approx(float(q @ stored[hit.vacancy_id]), abs=1e-5)
            if flt is not None:
                assert not flt.labels or hit.label in flt.labels
                assert not flt.source or hit.source == flt.source
                assert hit.vacancy_id not in set(flt.exclude_ids)
    # the stop-word row is the dense ranking alone: RRF scores 1/2, 1/3, …
    np.testing.assert_allclose(np.array([h.rank_score or 0.0 for h in rows_e[-1]]), 1 / (np.arange(7) + 2), rtol=1e-6)


def test_hybrid_exclude_ids_and_empty_batch(stores: tuple[VectorStore, VectorStore]) -> None:
    local, edge = stores
    points = _points(60)
    _both(stores, points)
    own = points[4]
    assert own.sparse is not None
    for store in stores:
        [row] = store.hybrid_search_many(own.vector[None, :], [own.sparse], 5)
        assert row[0].vacancy_id == own.vacancy_id and row[0].score == pytest.approx(1.0, abs=1e-5)
        assert row[0].rank_score == pytest.approx(1.0, abs=1e-6)  # first in both prefetches
        [row] = store.hybrid_search_many(own.vector[None, :], [own.sparse], 5, exclude_ids=[own.vacancy_id])
        assert own.vacancy_id not in {h.vacancy_id for h in row} and len(row) == 5
        assert store.hybrid_search_many(np.zeros((0, DIM), np.float32), [], 5) == []
    a = local.hybrid_search_many(own.vector[None, :], [own.sparse], 5, exclude_ids=[own.vacancy_id])
    b = edge.hybrid_search_many(own.vector[None, :], [own.sparse], 5, exclude_ids=[own.vacancy_id])
    _same(a[0], b[0])


def test_hybrid_query_is_what_hybrid_votes_simulates(stores: tuple[VectorStore, VectorStore]) -> None:
    """``models.knn.hybrid_votes`` (what training tunes the vote on) picks the very candidates, in the very
    order and with the very RRF scores, that the store's hybrid query returns on both backends."""
    points = _points(90, seed=3)
    _both(stores, points)
    k = 6
    corpus_x = np.stack([p.vector for p in points])
    dense, sparse = _queries(len(QUERY_TEXTS), seed=11), _sparse_queries(len(QUERY_TEXTS))
    corpus_csr, queries_csr = to_csr([p.sparse or SparseVector((), ()) for p in points], sparse)
    ids = np.arange(len(points))  # each point its own "label": the vote arrays name the candidates
    votes = hybrid_votes(dense, corpus_x, ids, queries_csr, corpus_csr, k)
    rank_ids, rank_scores = votes["rank"]
    cos_ids, cos_scores = votes["cosine"]
    for store in stores:
        rows = store.hybrid_search_many(dense, sparse, k)
        for i, row in enumerate(rows):
            assert [h.vacancy_id for h in row] == [points[j].vacancy_id for j in rank_ids[i] if j >= 0]
            np.testing.assert_allclose(
                np.array([h.rank_score or 0.0 for h in row]), rank_scores[i][rank_ids[i] >= 0], atol=1e-6
            )
            by_cosine = sorted(row, key=lambda h: -h.score)
            assert [h.vacancy_id for h in by_cosine] == [points[j].vacancy_id for j in cos_ids[i] if j >= 0]
            np.testing.assert_allclose([h.score for h in by_cosine], cos_scores[i][cos_ids[i] >= 0], atol=1e-5)


def test_old_layout_collection_asks_for_reindex(tmp_path: Path) -> None:
    """A collection of the layout before named vectors: queries and writes say to reindex (a StoreError)."""
    for client in (QdrantClient(":memory:"), EdgeClient(str(tmp_path / "edge"))):
        client.create_collection(
            "vacancies_v1",
            vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            metadata={"embedding": {"model": "fake"}},
        )
        store = VectorStore(client)
        store.swap_alias("vacancies_v1")
        assert store.has_hybrid_layout() is False
        calls: list[Callable[[VectorStore], object]] = [
            lambda st: st.hybrid_search_many(_queries(1), _sparse_queries(1), 3),
            lambda st: st.search_many(_queries(1), 3),
            lambda st: st.upsert(_points(1)),
            lambda st: st.vectors_of("v-0-0000"),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="jobclass reindex"):
                call(store)
        name = store.create_version(DIM, {"embedding": {"model": "fake"}})
        store.upsert(_points(5), collection=name)
        store.swap_alias(name)
        assert (
            store.has_hybrid_layout() is True
            and len(store.hybrid_search_many(_queries(1), _sparse_queries(1), 3)[0]) == 3
        )
        client.close()


def test_every_point_scrolls_out_with_its_vectors(stores: tuple[VectorStore, VectorStore]) -> None:
    points = _points(50)
    _both(stores, points)
    for store in stores:
        read = list(store.iter_points(page=16))  # four pages
        assert sorted(p["vacancy_id"] for p, _ in read) == sorted(p.vacancy_id for p in points)
        by_id = {p.vacancy_id: p for p in points}
        for payload, vectors in read:
            own = by_id[payload["vacancy_id"]]
            np.testing.assert_allclose(vectors.dense, own.vector, atol=1e-6)
            assert vectors.sparse.indices == (own.sparse.indices if own.sparse else ())
            assert payload["label"] == own.label


def test_the_in_memory_index_answers_as_the_store(
    stores: tuple[VectorStore, VectorStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``indexing.memory_index`` (a bulk run's copy of the index) gives the hybrid query's hits, in the same
    order with the same cosine and RRF scores, as both backends; one query per block of scores as well."""
    _both(stores, _points(120))
    dense, sparse = _queries(len(QUERY_TEXTS)), _sparse_queries(len(QUERY_TEXTS))
    for store in stores:
        memory = MemoryIndex.load(store)
        assert len(memory) == 120
        for block in (memory_index.BLOCK, 120):  # all queries in one product, then one query per product
            monkeypatch.setattr(memory_index, "BLOCK", block)
            want, got = store.hybrid_search_many(dense, sparse, 7), memory.hybrid_search_many(dense, sparse, 7)
            for a, b in zip(want, got, strict=True):
                _same(a, b)
    assert memory.hybrid_search_many(np.zeros((0, DIM), np.float32), [], 5) == []
    with pytest.raises(memory_index.TooLarge, match="120 points"):
        MemoryIndex.load(stores[1], max_points=100)
