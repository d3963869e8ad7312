"""The embedded Qdrant engine (edge backend) answers like qdrant-client's local mode.

Every test runs the same operations through :class:`VectorStore` on both backends and compares the
answers (ids, order, payloads, scores to 1e-5), qdrant-client style: the same upserts, searches with and
without payload filters, excluded ids, alias swaps, deletes and metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from indexing.edge_store import EdgeClient
from indexing.store import Hit, SearchFilter, StoreError, StoreLockedError, VacancyPoint, VectorStore, connect

DIM = 16
LABELS = ["Bygge og anlæg", "Handel og service", "IT og telekommunikation"]
SOURCES = ["sample", "feedback"]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _points(n: int, seed: int = 0) -> list[VacancyPoint]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(LABELS), DIM))
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
                text=f"vacancy {i}",
                text_hash=f"h{i}",
            )
        )
    return out


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
    assert local.collection_metadata() == edge.collection_metadata() == {"embedding": {"model": "fake"}}
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
        assert store.count() == 40 and store.collection_metadata() == {"embedding": {"model": "fake2"}}
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
        assert reopened.collection_metadata() == {"embedding": {"model": "fake"}}
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
