"""The store boundary: backend errors of an unreachable store leave ``VectorStore`` as one ``StoreError``,
which alone degrades classification to the head (search 503, feedback not indexed); a ``ValueError`` or
``RuntimeError`` from a bug surfaces as a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from qdrant_client.http.exceptions import ResponseHandlingException

from app.main import create_app
from app.runtime import Runtime
from indexing.sparse import SparseVector
from indexing.store import StoreError, VectorStore
from tests.factories import seed

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"


class RaisingClient:
    """A client whose every call raises ``exc`` (only the exception matters here)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __getattr__(self, name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            raise self.exc

        return call


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        ResponseHandlingException(ConnectionRefusedError("refused")),
        ConnectionResetError("reset"),
    ],
)
def test_backend_errors_become_store_error(exc: BaseException) -> None:
    store = VectorStore(RaisingClient(exc))
    with pytest.raises(StoreError, match="unreachable"):
        store.active_collection()
    with pytest.raises(StoreError):
        store.search_many(np.ones((1, 4), dtype=np.float32), 3)
    with pytest.raises(StoreError):
        store.hybrid_search_many(np.ones((1, 4), dtype=np.float32), [SparseVector((1,), (1.0,))], 3)


@pytest.mark.parametrize("exc", [ValueError("a bug"), RuntimeError("a bug"), TypeError("a bug")])
def test_other_errors_pass_the_store_boundary_unchanged(exc: BaseException) -> None:
    store = VectorStore(RaisingClient(exc))
    with pytest.raises(type(exc), match="a bug"):
        store.active_collection()


@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    seed(runtime, tmp_path)
    with TestClient(create_app(runtime.settings, runtime), raise_server_exceptions=False) as test_client:
        yield test_client


def _raise(exc: BaseException) -> Any:
    def call(*_: Any, **__: Any) -> Any:
        raise exc

    return call


def test_store_error_degrades_classify_to_the_head(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.store, "hybrid_search_many", _raise(StoreError("down")))
    monkeypatch.setattr(runtime.store, "upsert", _raise(StoreError("down")))
    body = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert body["index_used"] is False and body["neighbours"] == []
    assert client.post("/v1/search", json={"text": CARPENTER}).status_code == 503
    fb = client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "label": "Ledelse"})
    assert fb.status_code == 201 and fb.json()["indexed"] is False


@pytest.mark.parametrize("exc", [ValueError("a bug in the search"), RuntimeError("a bug in the search")])
def test_a_bug_in_the_store_is_a_500_not_a_head_only_answer(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    monkeypatch.setattr(runtime.store, "hybrid_search_many", _raise(exc))
    response = client.post("/v1/classify", json={"text": CARPENTER})
    assert response.status_code == 500 and response.json()["detail"] == "internal error"
    assert client.post("/v1/search", json={"text": CARPENTER}).status_code == 500


def test_an_old_layout_collection_asks_for_reindex_and_is_never_a_500(
    client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    """A collection built before named vectors (one unnamed vector): start-up says `jobclass reindex`,
    classify answers from the head, search and similar answer 503 with the same advice; a reindex fixes it."""
    from qdrant_client import models

    from app.errors import IncompatibleModelError
    from app.services.index import reindex

    old = "vacancies_old"
    runtime.store.client.create_collection(
        old,
        vectors_config=models.VectorParams(size=runtime.encoder.dim, distance=models.Distance.COSINE),  # type: ignore[arg-type]
        metadata={"embedding": runtime.settings.embedding_signature},
    )
    runtime.store.swap_alias(old)
    with pytest.raises(IncompatibleModelError, match="jobclass reindex"):
        runtime.check_index_compatible()
    body = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert body["index_used"] is False and body["neighbours"] == [] and body["label"]
    search = client.post("/v1/search", json={"text": CARPENTER})
    assert search.status_code == 503 and "jobclass reindex" in search.text
    similar = client.get("/v1/vacancies/anything/similar")
    assert similar.status_code in (404, 503)
    with runtime.sessions() as session:
        reindex(runtime, session)
    runtime.check_index_compatible()
    body = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert body["index_used"] is True and all(n["rank_score"] > 0 for n in body["neighbours"])
    hits = client.post("/v1/search", json={"text": CARPENTER, "k": 5}).json()["hits"]
    ranks = [h["rank_score"] for h in hits]
    assert len(hits) == 5 and ranks == sorted(ranks, reverse=True)
    assert all(-1.0 <= h["score"] <= 1.0 + 1e-6 for h in hits)
