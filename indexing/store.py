"""Qdrant vector store for labelled vacancies.

One code path for a Qdrant server (``url=``), local mode on disk (``path=``) and ``":memory:"``.
Collections are versioned (``vacancies_v3``) behind an alias (``vacancies``); a rebuild fills a new
collection and swaps the alias in one atomic call, so readers never see a half-built index. Reads and
writes name the alias itself (never a collection looked up a moment earlier), so a swap between the
look-up and the query cannot send a request to a collection that was just dropped. While a rebuild runs,
single-point writes (feedback) go to the live collection and to the one being built.

Two backends implement :class:`StoreClient`, the client methods ``VectorStore`` uses: qdrant-client's
``QdrantClient`` (server or local mode) and ``indexing.edge_store.EdgeClient`` (the embedded engine).
``tests/integration/test_store_congruence.py`` checks that they answer alike. Whatever a backend raises
when the store is unreachable or refuses (HTTP/gRPC/connection errors, edge engine errors) leaves
``VectorStore`` as one :class:`StoreError`; any other exception is a bug and propagates unchanged.

Every point carries two named vectors: ``"dense"`` (the embedding, cosine) and ``"lexical"`` (the BM25
sparse vector of its stored text, ``indexing.sparse.LexicalEncoder.documents``; the collection applies
IDF). :meth:`VectorStore.hybrid_search_many` runs one Qdrant query per text: a dense and a sparse
prefetch of ``k`` each, fused by reciprocal rank (``Fusion.RRF``), which is what
``models.knn.hybrid_votes`` simulates offline. A collection of the older layout (one unnamed vector)
answers every query with a ``StoreError`` that says to run ``jobclass reindex``.

Known difference: after points are deleted, the embedded engine keeps counting them in the IDF statistics
of the sparse vectors until its segments are vacuumed, while local mode recomputes IDF at once; BM25 scores
(and so a sparse ranking) can then differ slightly between the two until the next rebuild.
"""

from __future__ import annotations

import functools
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, ParamSpec, Protocol, TypeVar, runtime_checkable

import grpc
import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from indexing.sparse import SparseVector

Backend = Literal["local", "edge"]

_POINT_NAMESPACE = uuid.UUID("6c1f1d3e-8f0b-4b7e-9a53-0b7d2a3f4c11")

DENSE = "dense"  # the embedding (cosine)
LEXICAL = "lexical"  # the BM25 sparse vector of the stored text (IDF applied by the collection)
LAYOUT = "dense+lexical"  # ``metadata["layout"]`` of a collection with both named vectors
NEEDS_REINDEX = (
    "the collection behind {alias!r} has the old layout (one unnamed vector, no lexical vectors): "
    "run `jobclass reindex` to rebuild it with dense + lexical vectors"
)


class StoreError(RuntimeError):
    """The vector store is unavailable or not in the expected state."""


class StoreLockedError(StoreError):
    """Qdrant local mode allows one process per folder, and another process holds it."""


# What the backends raise when the store cannot answer: qdrant-client's UnexpectedResponse and
# ResponseHandlingException (ApiException), gRPC and HTTP transport errors, refused or reset connections
# (OSError). The edge engine's errors are EdgeError, a StoreError already.
BACKEND_ERRORS: tuple[type[BaseException], ...] = (ApiException, grpc.RpcError, httpx.HTTPError, OSError)


class CollectionInfo(Protocol):
    @property
    def config(self) -> Any: ...  # ``.metadata``: the dict given to ``create_collection``


class StoreClient(Protocol):
    """The client methods ``VectorStore`` calls: a subset of ``QdrantClient``'s API, which
    ``indexing.edge_store.EdgeClient`` implements over the embedded engine."""

    def get_aliases(self) -> models.CollectionsAliasesResponse: ...
    def get_collections(self) -> models.CollectionsResponse: ...
    def create_collection(
        self,
        collection_name: str,
        vectors_config: dict[str, models.VectorParams],
        *,
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> bool: ...
    def create_payload_index(
        self, collection_name: str, field_name: str, field_schema: models.PayloadSchemaType
    ) -> models.UpdateResult: ...
    def update_collection_aliases(self, change_aliases_operations: Sequence[models.AliasOperations]) -> bool: ...
    def delete_collection(self, collection_name: str) -> bool: ...
    def get_collection(self, collection_name: str) -> CollectionInfo: ...
    def count(self, collection_name: str, count_filter: None = None, exact: bool = True) -> models.CountResult: ...
    def upsert(
        self, collection_name: str, points: Sequence[models.PointStruct], wait: bool = True
    ) -> models.UpdateResult: ...
    def delete(
        self, collection_name: str, points_selector: models.PointIdsList, wait: bool = True
    ) -> models.UpdateResult: ...
    def retrieve(
        self,
        collection_name: str,
        ids: Sequence[str],
        with_payload: bool = True,
        with_vectors: bool | list[str] = False,
    ) -> list[models.Record]: ...
    def scroll(
        self,
        collection_name: str,
        *,
        limit: int = 10,
        offset: Any = None,
        with_payload: bool = True,
        with_vectors: bool | list[str] = False,
    ) -> tuple[list[models.Record], Any]: ...
    def query_batch_points(
        self, collection_name: str, requests: Sequence[models.QueryRequest]
    ) -> list[models.QueryResponse]: ...
    def close(self) -> None: ...


@runtime_checkable
class ArrayUpsert(Protocol):
    """A backend that takes points as arrays (ids, a float32 matrix, payloads, sparse vectors) without
    per-point models."""

    def upsert_arrays(
        self,
        collection_name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[SparseVector] | None = None,
    ) -> int: ...


P = ParamSpec("P")
R = TypeVar("R")


def _store_boundary(method: Callable[P, R]) -> Callable[P, R]:
    """Backend errors of an unreachable or refusing store leave as one ``StoreError``."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except StoreError:
            raise
        except BACKEND_ERRORS as exc:
            raise StoreError(f"vector store unreachable or refused the request: {type(exc).__name__}: {exc}") from exc

    return wrapper


def point_id(vacancy_id: str) -> str:
    """Qdrant ids must be integers or UUIDs: derive a stable UUID from the vacancy id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, vacancy_id))


@dataclass(frozen=True)
class VacancyPoint:
    vacancy_id: str
    vector: np.ndarray
    label: str
    source: str
    created_at: datetime
    text: str = ""
    text_hash: str = ""
    labelled_at: datetime | None = None  # when the label was last set; naive values are UTC
    sparse: SparseVector | None = None  # BM25 of ``text`` (LexicalEncoder.documents); None: no lexical terms
    revision: int = 0  # the database row's revision this point was written from (newer never loses to older)

    def payload(self) -> dict[str, Any]:
        labelled = self.labelled_at or self.created_at
        if labelled.tzinfo is None:
            labelled = labelled.replace(tzinfo=UTC)
        return {
            "vacancy_id": self.vacancy_id,
            "label": self.label,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "labelled_at": labelled.timestamp(),
            "snippet": self.text[:300],
            "text_hash": self.text_hash,
            "revision": self.revision,
        }


@dataclass(frozen=True)
class Hit:
    vacancy_id: str
    label: str
    score: float
    source: str = ""
    snippet: str = ""
    created_at: str | None = None
    text_hash: str = ""
    labelled_at: float = 0.0
    rank_score: float | None = None  # the hybrid query's fused (RRF) score; None for a dense-only search


@dataclass(frozen=True)
class StoredVectors:
    """A stored point's named vectors: its embedding and its BM25 document vector."""

    dense: np.ndarray
    sparse: SparseVector


EMPTY_SPARSE = SparseVector((), ())


@dataclass(frozen=True)
class SearchFilter:
    labels: Sequence[str] | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    exclude_ids: Sequence[str] = field(default_factory=tuple)

    def to_qdrant(self) -> models.Filter | None:
        must: list[models.Condition] = []
        must_not: list[models.Condition] = []
        if self.labels:
            must.append(models.FieldCondition(key="label", match=models.MatchAny(any=list(self.labels))))
        if self.source:
            must.append(models.FieldCondition(key="source", match=models.MatchValue(value=self.source)))
        if self.since or self.until:
            must.append(
                models.FieldCondition(key="created_at", range=models.DatetimeRange(gte=self.since, lte=self.until))
            )
        if self.exclude_ids:
            must_not.append(models.HasIdCondition(has_id=[point_id(v) for v in self.exclude_ids]))
        if not must and not must_not:
            return None
        return models.Filter(must=must or None, must_not=must_not or None)


def connect(
    url: str | None = None, path: str | None = None, api_key: str | None = None, backend: Backend = "local"
) -> StoreClient:
    """A client for a server (``url``), a local folder (``path``) or memory (``path=":memory:"``).

    Without a URL, ``backend="local"`` is qdrant-client's local mode (brute force in Python) and
    ``backend="edge"`` the embedded Qdrant engine (HNSW, payload indexes; see ``indexing.edge_store``).
    """
    try:
        if url:
            return QdrantClient(url=url, api_key=api_key, timeout=30)
        if backend == "edge":
            from indexing.edge_store import EdgeClient

            return EdgeClient(path)
        if path in (None, ":memory:"):
            return QdrantClient(":memory:")
        return QdrantClient(path=path)
    except RuntimeError as exc:  # local mode raises RuntimeError when the folder is locked
        if "already accessed" in str(exc):
            raise StoreLockedError(
                f"the Qdrant folder {path} is in use by another process (a running `jobclass serve`?). "
                "Stop that process, call the server's admin endpoint instead, "
                "or run a Qdrant server and set JOBCLASS_QDRANT_URL."
            ) from exc
        raise


class VectorStore:
    def __init__(self, client: StoreClient, alias: str = "vacancies") -> None:
        self.client = client
        self.alias = alias
        self.building: str | None = None  # a collection being rebuilt: single writes go there too
        self._hybrid: set[str] = set()  # collections known to have the dense + lexical layout

    # ---- collections and aliases -------------------------------------------------------
    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    @_store_boundary
    def active_collection(self) -> str | None:
        return self._aliases().get(self.alias)

    @_store_boundary
    def exists(self) -> bool:
        return self.active_collection() is not None

    def _versions(self) -> list[tuple[int, str]]:
        pattern = re.compile(rf"^{re.escape(self.alias)}_v(\d+)$")
        found = []
        for c in self.client.get_collections().collections:
            m = pattern.match(c.name)
            if m:
                found.append((int(m.group(1)), c.name))
        return sorted(found)

    @_store_boundary
    def next_version_name(self) -> str:
        """The next versioned collection name behind the alias (``vacancies_v4`` after ``vacancies_v3``)."""
        versions = self._versions()
        return f"{self.alias}_v{(versions[-1][0] + 1) if versions else 1}"

    @_store_boundary
    def abandoned_versions(self) -> list[str]:
        """Versioned collections (``<alias>_vN``) that no alias points to and that are not being built
        here: what a rebuild killed before its swap leaves behind (its own clean-up never ran)."""
        targets = set(self._aliases().values())
        return [name for _, name in self._versions() if name not in targets and name != self.building]

    @_store_boundary
    def create_version(self, dim: int, metadata: dict[str, Any] | None = None) -> str:
        """Create the next versioned collection (not yet behind the alias) with the named vectors
        ``"dense"`` (``dim``, cosine) and ``"lexical"`` (sparse, IDF); ``metadata["layout"]`` records it."""
        name = self.next_version_name()
        self.client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={**(metadata or {}), "layout": LAYOUT},
        )
        self._hybrid.add(name)
        for key, schema in (
            ("label", models.PayloadSchemaType.KEYWORD),
            ("source", models.PayloadSchemaType.KEYWORD),
            ("vacancy_id", models.PayloadSchemaType.KEYWORD),
            ("created_at", models.PayloadSchemaType.DATETIME),
        ):
            with warnings.catch_warnings():  # local mode accepts payload indexes as no-ops and says so
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                self.client.create_payload_index(name, field_name=key, field_schema=schema)
        return name

    @_store_boundary
    def swap_alias(self, collection: str, *, drop_old: bool = True) -> str | None:
        """Point the alias at ``collection`` atomically; drop the collection it pointed at before."""
        old = self.active_collection()
        ops: list[models.AliasOperations] = []
        if old is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        ops.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=ops)
        if drop_old and old is not None and old != collection:
            self.client.delete_collection(old)
        return old

    @_store_boundary
    def collection_metadata(self) -> dict[str, Any]:
        name = self.active_collection()
        if name is None:
            return {}
        return dict(self.client.get_collection(name).config.metadata or {})

    @_store_boundary
    def count(self, collection: str | None = None) -> int:
        target = collection or self.active_collection()
        if target is None:
            return 0
        return int(self.client.count(target, exact=True).count)

    # ---- points -------------------------------------------------------------------------
    @_store_boundary
    def upsert(self, points: Iterable[VacancyPoint], *, collection: str | None = None) -> int:
        """Write to ``collection``, or else to the live collection and any collection being built."""
        if collection is not None:
            targets = [collection]
        else:
            building = self.building
            targets = [self._require_hybrid(), *([building] if building else [])]
        points = list(points)
        if not points:
            return 0
        ids = [point_id(p.vacancy_id) for p in points]
        payloads = [p.payload() for p in points]
        vectors = np.stack([p.vector for p in points]).astype(np.float32)
        sparse = [p.sparse or EMPTY_SPARSE for p in points]
        client = self.client
        if isinstance(client, ArrayUpsert):  # the embedded engine: no per-point pydantic models
            for target in targets:
                client.upsert_arrays(target, ids, vectors, payloads, sparse)
            return len(points)
        batch = [
            models.PointStruct(id=i, vector={DENSE: v, LEXICAL: _qdrant_sparse(sv)}, payload=pl)
            for i, v, sv, pl in zip(ids, vectors.tolist(), sparse, payloads, strict=True)
        ]
        for target in targets:
            client.upsert(target, points=batch, wait=True)
        return len(points)

    @_store_boundary
    def delete(self, vacancy_ids: Sequence[str], *, collection: str | None = None) -> None:
        """Delete from ``collection``, or else from the live collection and any collection being built."""
        if collection is not None:
            targets = [collection]
        else:
            building = self.building
            targets = [self._require_active(), *([building] if building else [])]
        if not vacancy_ids:
            return
        selector = models.PointIdsList(points=[point_id(v) for v in vacancy_ids])
        for target in targets:
            self.client.delete(target, points_selector=selector, wait=True)

    @_store_boundary
    def vector_of(self, vacancy_id: str) -> np.ndarray | None:
        stored = self.vectors_of(vacancy_id)
        return stored.dense if stored is not None else None

    @_store_boundary
    def vectors_of(self, vacancy_id: str) -> StoredVectors | None:
        """The stored point's dense and sparse vectors (None when it is not stored)."""
        target = self._require_hybrid()
        records = self.client.retrieve(target, ids=[point_id(vacancy_id)], with_payload=False, with_vectors=True)
        return _stored_vectors(records[0].vector) if records else None

    def iter_points(self, page: int = 1024) -> Iterator[tuple[dict[str, Any], StoredVectors]]:
        """Every point of the live collection with its payload and both vectors, read a page at a time."""
        offset: Any = None
        while True:
            records, offset = self._scroll_page(offset, page)
            for record in records:
                vectors = _stored_vectors(record.vector)
                if vectors is not None:
                    yield record.payload or {}, vectors
            if offset is None or not records:
                return

    @_store_boundary
    def _scroll_page(self, offset: Any, page: int) -> tuple[list[models.Record], Any]:
        target = self._require_hybrid()
        return self.client.scroll(target, limit=page, offset=offset, with_payload=True, with_vectors=True)

    @_store_boundary
    def indexed_revision(self, vacancy_id: str) -> int | None:
        """The revision the live point of ``vacancy_id`` was written from (0 for points written before
        revisions existed); None when it is not indexed."""
        records = self.client.retrieve(self._require_hybrid(), ids=[point_id(vacancy_id)], with_payload=True)
        if not records:
            return None
        return int((records[0].payload or {}).get("revision") or 0)

    def search(self, vector: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[Hit]:
        return self.search_many(vector[None, :], k, flt)[0]

    @_store_boundary
    def search_many(self, vectors: np.ndarray, k: int, flt: SearchFilter | None = None) -> list[list[Hit]]:
        """Dense-only nearest neighbours (cosine), best first."""
        if len(vectors) == 0:
            return []
        target = self._require_hybrid()
        query_filter = flt.to_qdrant() if flt else None
        requests = [
            models.QueryRequest(
                query=v.astype(np.float32).tolist(), using=DENSE, limit=k, filter=query_filter, with_payload=True
            )
            for v in vectors
        ]
        responses = self.client.query_batch_points(target, requests=requests)
        # Equal scores in a stable order (by vacancy id): every backend, and every rebuild of a collection,
        # lists the same neighbours the same way.
        return [sorted((_hit(p) for p in r.points), key=lambda h: (-h.score, h.vacancy_id)) for r in responses]

    @_store_boundary
    def hybrid_search_many(
        self,
        dense: np.ndarray,
        sparse: Sequence[SparseVector],
        k: int,
        flt: SearchFilter | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[list[Hit]]:
        """One hybrid query per text, batched: a dense prefetch (``k``) and a sparse prefetch (``k``; left out
        when the text has no lexical term), both under the filter, fused by RRF (``Σ 1/(rank + 2)``).

        Each hit carries ``rank_score`` (the fused score) and ``score`` (its cosine to the query). The cosines
        come from the engine, never from returned vectors (turning 384 floats per hit into Python objects was
        most of a batch's time): the same batch holds each text's dense query (the prefetch's own ``k``), and
        the few hits only the sparse side found get theirs from one more dense query restricted to their ids.
        The fusion is asked for every candidate (up to ``2k``) and the top ``k`` kept here in one order on
        every backend — fused score, then cosine, then vacancy id — which is the order ``models.knn.rrf_fuse``
        gives (a point of the dense list before a sparse-only one of equal score). Ties at a prefetch's own
        cut are Qdrant's to break."""
        if len(dense) == 0:
            return []
        if len(sparse) != len(dense):
            raise ValueError(f"{len(dense)} dense but {len(sparse)} sparse query vectors")
        target = self._require_hybrid()
        if exclude_ids:
            flt = replace(flt or SearchFilter(), exclude_ids=[*(flt.exclude_ids if flt else ()), *exclude_ids])
        query_filter = flt.to_qdrant() if flt else None
        queries = [v.tolist() for v in np.asarray(dense, dtype=np.float32)]
        requests = []
        for v, sv in zip(queries, sparse, strict=True):
            prefetch = [models.Prefetch(query=v, using=DENSE, limit=k, filter=query_filter)]
            if sv:
                prefetch.append(models.Prefetch(query=_qdrant_sparse(sv), using=LEXICAL, limit=k, filter=query_filter))
            fused = models.FusionQuery(fusion=models.Fusion.RRF)
            requests.append(
                models.QueryRequest(prefetch=prefetch, query=fused, limit=k * len(prefetch), with_payload=True)
            )
            requests.append(models.QueryRequest(query=v, using=DENSE, limit=k, filter=query_filter, with_payload=False))
        responses = self.client.query_batch_points(target, requests=requests)
        answers = responses[0::2]
        cosines = [{str(p.id): float(p.score) for p in r.points} for r in responses[1::2]]
        self._sparse_only_cosines(target, queries, answers, cosines)
        rows = []
        for answer, cosine in zip(answers, cosines, strict=True):
            hits = [_hit(p, cosine.get(str(p.id), 0.0), float(p.score)) for p in answer.points]
            hits.sort(key=lambda h: (-round(h.rank_score or 0.0, 6), -round(h.score, 6), h.vacancy_id))
            rows.append(hits[:k])
        return rows

    def _sparse_only_cosines(
        self,
        target: str,
        queries: Sequence[list[float]],
        answers: Sequence[models.QueryResponse],
        cosines: list[dict[str, float]],
    ) -> None:
        """Add to ``cosines`` those of the hits the dense query did not return: one dense query per text,
        restricted to those ids, in one batch."""
        missing = [[p.id for p in a.points if str(p.id) not in c] for a, c in zip(answers, cosines, strict=True)]
        asked = [i for i, ids in enumerate(missing) if ids]
        if not asked:
            return
        requests = [
            models.QueryRequest(
                query=queries[i],
                using=DENSE,
                limit=len(missing[i]),
                filter=models.Filter(must=[models.HasIdCondition(has_id=missing[i])]),
                with_payload=False,
            )
            for i in asked
        ]
        for i, response in zip(asked, self.client.query_batch_points(target, requests=requests), strict=True):
            cosines[i].update((str(p.id), float(p.score)) for p in response.points)

    @_store_boundary
    def drop(self, collection: str) -> None:
        """Delete ``collection`` (a failed or discarded rebuild)."""
        self.client.delete_collection(collection)

    def _require_active(self) -> str:
        """The alias, once it is known to exist: requests name the alias, which Qdrant resolves
        atomically, so a concurrent swap never leaves a request pointing at a dropped collection."""
        if self.active_collection() is None:
            raise StoreError(f"no collection behind alias {self.alias!r}: run `jobclass reindex`")
        return self.alias

    def _require_hybrid(self) -> str:
        """The alias, once its collection is known to have the dense + lexical layout (else a StoreError
        that says to reindex: an old collection is never queried with vector names it lacks)."""
        name = self.active_collection()
        if name is None:
            raise StoreError(f"no collection behind alias {self.alias!r}: run `jobclass reindex`")
        if name not in self._hybrid:
            if (self.client.get_collection(name).config.metadata or {}).get("layout") != LAYOUT:
                raise StoreError(NEEDS_REINDEX.format(alias=self.alias))
            self._hybrid.add(name)
        return self.alias

    @_store_boundary
    def has_hybrid_layout(self) -> bool | None:
        """Whether the live collection has the dense + lexical layout (None: there is no collection)."""
        if self.active_collection() is None:
            return None
        try:
            self._require_hybrid()
        except StoreError:
            return False
        return True


def _qdrant_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def _stored_vectors(named: Any) -> StoredVectors | None:
    """A record's named vectors as :class:`StoredVectors`; None without a dense one (the old layout)."""
    if not isinstance(named, dict) or DENSE not in named:
        return None
    lexical = named.get(LEXICAL)
    sparse = (
        SparseVector(tuple(int(i) for i in lexical.indices), tuple(float(v) for v in lexical.values))
        if isinstance(lexical, models.SparseVector)
        else EMPTY_SPARSE
    )
    return StoredVectors(np.asarray(named[DENSE], dtype=np.float32), sparse)


def _hit(point: models.ScoredPoint, score: float | None = None, rank_score: float | None = None) -> Hit:
    """The hit of a point; ``score`` (default: the point's own) and ``rank_score`` for a hybrid answer."""
    return hit_of(point.payload or {}, float(point.score) if score is None else score, rank_score, point.id)


def hit_of(payload: dict[str, Any], score: float, rank_score: float | None = None, fallback_id: Any = None) -> Hit:
    """The hit of a point's payload, with its ``score`` (cosine) and ``rank_score`` (RRF); ``fallback_id``
    (the point's id) names it when the payload has no vacancy id."""
    return Hit(
        vacancy_id=str(payload.get("vacancy_id", fallback_id)),
        label=str(payload.get("label", "")),
        score=score,
        rank_score=rank_score,
        source=str(payload.get("source", "")),
        snippet=str(payload.get("snippet", "")),
        created_at=payload.get("created_at"),
        text_hash=str(payload.get("text_hash", "")),
        labelled_at=float(payload.get("labelled_at") or 0.0),
    )
