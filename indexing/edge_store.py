"""An embedded Qdrant engine (``qdrant-edge-py``) behind the subset of the ``QdrantClient`` API that
:class:`indexing.store.VectorStore` uses.

qdrant-client's local mode is a brute-force Python store: fine for thousands of points, slow past ~20k.
Qdrant Edge runs the real engine in-process (HNSW, payload indexes, segments on disk). It has no
collections or aliases, so this module keeps one Edge shard per collection in a folder and emulates the
rest with qdrant-client's own request and response models:

- ``<root>/collections/<name>/`` is the shard; ``<root>/collections/<name>.json`` its vector size,
  distance, named vectors and metadata;
- ``<root>/aliases.json`` maps alias → collection; it is rewritten with an atomic rename, so
  ``update_collection_aliases`` (delete + create in one call) swaps an alias atomically, as on a server;
- a collection dropped while a query still holds it is closed and removed when that query finishes;
- ``<root>/.lock`` (an exclusive ``flock``) lets one process own the folder, like local mode; a second
  process gets a ``RuntimeError`` saying the folder is "already accessed by another instance".

HNSW segments are built by ``optimize``: :meth:`EdgeClient.optimize` runs it for a collection (a bulk
load calls it), and an upsert that leaves more than ``optimize_after`` points unindexed starts it in a
background thread. Until then the newest points are searched exactly (in Rust), so results are complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
from qdrant_client.http import models

from indexing.sparse import SparseVector
from indexing.store import StoreError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")

_SCHEMAS: dict[str, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "datetime": qe.PayloadSchemaType.Datetime,
    "text": qe.PayloadSchemaType.Text,
    "uuid": qe.PayloadSchemaType.Uuid,
}
_MODIFIERS: dict[models.Modifier, qe.Modifier] = {models.Modifier.IDF: qe.Modifier.Idf}
_DISTANCES: dict[models.Distance, qe.Distance] = {
    models.Distance.COSINE: qe.Distance.Cosine,
    models.Distance.DOT: qe.Distance.Dot,
    models.Distance.EUCLID: qe.Distance.Euclid,
}


@dataclass(frozen=True)
class EdgeCollectionConfig:
    metadata: dict[str, Any] | None
    size: int
    distance: str
    dense: str = ""  # the dense vector's name ("" for an unnamed vector)
    sparse: tuple[str, ...] = ()  # the sparse vectors' names


@dataclass(frozen=True)
class EdgeCollectionInfo:
    """What ``get_collection`` answers: the parts of ``models.CollectionInfo`` the store reads."""

    config: EdgeCollectionConfig
    points_count: int
    indexed_vectors_count: int
    segments_count: int


@dataclass
class _Collection:
    name: str
    shard: qe.EdgeShard
    config: EdgeCollectionConfig
    users: int = 0
    dropped: bool = False
    optimizing: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # one optimize (or snapshot) at a time
    writes: threading.Lock = field(default_factory=threading.Lock)  # updates wait while a snapshot is taken


class EdgeError(StoreError):
    """An error raised by the Qdrant Edge engine (it raises plain ``Exception``), or a closed client: a
    ``StoreError``, so the service treats it as the store being unavailable."""


F = TypeVar("F", bound=Callable[..., Any])


def _translated(method: F) -> F:
    """Re-raise the engine's plain ``Exception`` as :class:`EdgeError` (a ``StoreError``: the classify
    fallback to the head alone); Python's own errors (a bug, a bad argument) pass unchanged."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (RuntimeError, ValueError, NotImplementedError, TypeError, KeyError):
            raise
        except Exception as exc:
            raise EdgeError(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def _edge_id(point_id: Any) -> str | int:
    if isinstance(point_id, int) or (isinstance(point_id, str) and len(point_id) == 36):
        return point_id  # an int or a UUID string: the engine parses (and checks) it
    return str(uuid.UUID(str(point_id)))


def _client_id(point_id: Any) -> str | int:
    return point_id if isinstance(point_id, int) else str(point_id)


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    return str(value)


def _match(match: Any) -> Any:
    if isinstance(match, models.MatchValue):
        return qe.MatchValue(match.value)
    if isinstance(match, models.MatchAny):
        return qe.MatchAny(list(match.any))  # type: ignore[arg-type]
    if isinstance(match, models.MatchExcept):
        return qe.MatchExcept(list(match.except_))  # type: ignore[arg-type]
    if isinstance(match, models.MatchText):
        return qe.MatchText(match.text)
    raise NotImplementedError(f"match {type(match).__name__} is not supported by the edge backend")


def _condition(cond: Any) -> Any:
    if isinstance(cond, models.Filter):
        return to_edge_filter(cond)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition({_edge_id(i) for i in cond.has_id})
    if isinstance(cond, models.FieldCondition):
        if cond.match is not None:
            return qe.FieldCondition(key=cond.key, match=_match(cond.match))
        rng = cond.range
        if isinstance(rng, models.DatetimeRange):
            return qe.FieldCondition(
                key=cond.key,
                range=qe.RangeDateTime(gte=_iso(rng.gte), gt=_iso(rng.gt), lte=_iso(rng.lte), lt=_iso(rng.lt)),
            )
        if isinstance(rng, models.Range):
            return qe.FieldCondition(key=cond.key, range=qe.RangeFloat(gte=rng.gte, gt=rng.gt, lte=rng.lte, lt=rng.lt))
    raise NotImplementedError(f"condition {cond!r} is not supported by the edge backend")


def to_edge_filter(flt: models.Filter | None) -> qe.Filter | None:
    """Translate a qdrant-client filter (must / should / must_not of field, id and nested filters)."""
    if flt is None:
        return None

    def conds(items: Any) -> list[Any] | None:
        if items is None:
            return None
        return [_condition(c) for c in (items if isinstance(items, list) else [items])]

    return qe.Filter(must=conds(flt.must), should=conds(flt.should), must_not=conds(flt.must_not))


def _as_list(items: Any) -> list[Any]:
    if items is None:
        return []
    return list(items) if isinstance(items, list) else [items]


def _edge_vector(vector: Any) -> Any:
    """A point's vector (a list, or a dict of named dense lists and ``models.SparseVector``) for the engine."""
    if isinstance(vector, dict):
        return {name: _edge_vector(v) for name, v in vector.items()}
    if isinstance(vector, models.SparseVector):
        return qe.SparseVector(list(vector.indices), list(vector.values))
    return list(vector)


def _client_vector(vector: Any, with_vectors: bool | list[str]) -> Any:
    """The engine's vector (a list, or a dict of named ones) as qdrant-client returns it."""
    if not isinstance(vector, dict):
        return vector
    names = with_vectors if isinstance(with_vectors, list) else list(vector)
    return {
        name: models.SparseVector(indices=list(v.indices), values=list(v.values))
        if isinstance(v, qe.SparseVector)
        else v
        for name, v in vector.items()
        if name in names
    }


def _edge_query(query: Any, using: str | None) -> Any:
    if query is None:
        return None
    if isinstance(query, models.FusionQuery):
        if query.fusion == models.Fusion.RRF:
            return qe.Fusion.Rrf(k=2)  # Qdrant's default ranking constant (Σ 1 / (rank + 2))
        if query.fusion == models.Fusion.DBSF:
            return qe.Fusion.Dbsf()
        raise NotImplementedError(f"fusion {query.fusion!r} is not supported by the edge backend")
    if isinstance(query, models.NearestQuery):
        query = query.nearest
    if isinstance(query, models.SparseVector):
        return qe.Query.Nearest(qe.SparseVector(list(query.indices), list(query.values)), using=using)
    if isinstance(query, np.ndarray):
        query = query.tolist()
    if isinstance(query, list) and query and isinstance(query[0], float):  # tolist() of a float array: as it is
        return qe.Query.Nearest(query, using=using)
    if isinstance(query, list) and all(isinstance(x, int | float) for x in query):
        return qe.Query.Nearest([float(x) for x in query], using=using)
    raise NotImplementedError(f"query {type(query).__name__} is not supported by the edge backend")


def _edge_params(params: models.SearchParams | None) -> Any:
    if params is None:
        return None
    q = params.quantization
    quantization = (
        qe.QuantizationSearchParams(ignore=bool(q.ignore), rescore=q.rescore, oversampling=q.oversampling)
        if q is not None
        else None
    )
    return qe.SearchParams(hnsw_ef=params.hnsw_ef, exact=bool(params.exact), quantization=quantization)


def _edge_prefetch(prefetch: models.Prefetch) -> Any:
    return qe.Prefetch(
        limit=prefetch.limit if prefetch.limit is not None else 10,
        query=_edge_query(prefetch.query, prefetch.using),
        prefetches=[_edge_prefetch(p) for p in _as_list(prefetch.prefetch)] or None,
        params=_edge_params(prefetch.params),
        filter=to_edge_filter(prefetch.filter),
        score_threshold=prefetch.score_threshold,
    )


class EdgeClient:
    """The ``QdrantClient`` methods :class:`~indexing.store.VectorStore` calls, on Qdrant Edge shards.

    ``path=":memory:"`` (or None) uses a temporary folder removed on :meth:`close`.
    ``hnsw`` / ``quantization`` set the shard configuration of collections created by this client.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        hnsw: qe.HnswIndexConfig | None = None,
        quantization: Any = None,
        optimize_after: int = 20_000,
        background_optimize: bool = True,
    ) -> None:
        self._temporary = path in (None, ":memory:")
        self.root = Path(tempfile.mkdtemp(prefix="jobclass-edge-") if self._temporary else str(path))
        (self.root / "collections").mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the client's lifetime
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise RuntimeError(
                f"Storage folder {self.root} is already accessed by another instance of the edge store"
            ) from exc
        self.hnsw = hnsw or qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000)
        self.quantization = quantization
        self.optimize_after = optimize_after
        self.background_optimize = background_optimize
        self._mutex = threading.RLock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._aliases: dict[str, str] = self._read_aliases()
        self._collections: dict[str, _Collection] = {}
        for meta in sorted((self.root / "collections").glob("*.json")):
            name = meta.stem
            if (self.root / "collections" / name).is_dir():
                self._collections[name] = self._open(name, json.loads(meta.read_text()))

    # ---- persistence -----------------------------------------------------------------------
    def _read_aliases(self) -> dict[str, str]:
        path = self.root / "aliases.json"
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    def _write_json(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: readers of the file see the old or the new content

    def _open(self, name: str, meta: dict[str, Any]) -> _Collection:
        shard = qe.EdgeShard.load(str(self.root / "collections" / name))
        config = EdgeCollectionConfig(
            meta.get("metadata"),
            int(meta["size"]),
            str(meta["distance"]),
            str(meta.get("dense", "")),
            tuple(meta.get("sparse", ())),
        )
        return _Collection(name, shard, config)

    # ---- collections and aliases -----------------------------------------------------------
    def _resolve(self, name: str) -> str:
        return self._aliases.get(name, name)

    def _acquire(self, name: str) -> _Collection:
        with self._mutex:
            if self._closed:
                raise EdgeError("the edge store is closed")
            coll = self._collections.get(self._resolve(name))
            if coll is None:
                raise ValueError(f"Collection {name} not found")
            coll.users += 1
            return coll

    def _release(self, coll: _Collection) -> None:
        with self._mutex:
            coll.users -= 1
            remove = coll.dropped and coll.users == 0 and not coll.optimizing
        if remove:
            self._destroy(coll)

    def _destroy(self, coll: _Collection) -> None:
        coll.shard.close()
        shutil.rmtree(self.root / "collections" / coll.name, ignore_errors=True)

    def get_aliases(self) -> models.CollectionsAliasesResponse:
        with self._mutex:
            items = list(self._aliases.items())
        return models.CollectionsAliasesResponse(
            aliases=[models.AliasDescription(alias_name=a, collection_name=c) for a, c in items]
        )

    def get_collections(self) -> models.CollectionsResponse:
        with self._mutex:
            names = sorted(self._collections)
        return models.CollectionsResponse(collections=[models.CollectionDescription(name=n) for n in names])

    def collection_exists(self, collection_name: str) -> bool:
        with self._mutex:
            return self._resolve(collection_name) in self._collections

    def create_collection(
        self,
        collection_name: str,
        vectors_config: models.VectorParams | dict[str, models.VectorParams],
        *,
        sparse_vectors_config: dict[str, models.SparseVectorParams] | None = None,
        metadata: dict[str, Any] | None = None,
        **_: Any,
    ) -> bool:
        """One dense vector (unnamed, or one named entry of a dict) and any sparse vectors (named)."""
        if not _NAME.match(collection_name):
            raise ValueError(f"invalid collection name {collection_name!r}")
        if isinstance(vectors_config, dict):
            if len(vectors_config) != 1:
                raise NotImplementedError("the edge backend keeps one dense vector per collection")
            [(dense_name, params)] = vectors_config.items()
        else:
            dense_name, params = "", vectors_config
        sparse_names = tuple(sparse_vectors_config or {})
        with self._mutex:
            if collection_name in self._collections:
                raise ValueError(f"Collection {collection_name} already exists")
            folder = self.root / "collections" / collection_name
            shutil.rmtree(folder, ignore_errors=True)  # leftovers of a drop interrupted by a crash
            dense = qe.EdgeVectorParams(size=params.size, distance=_DISTANCES[params.distance])
            config = qe.EdgeConfig(
                vectors={dense_name: dense} if dense_name else dense,
                sparse_vectors={
                    name: qe.EdgeSparseVectorParams(modifier=_MODIFIERS.get(sp.modifier) if sp.modifier else None)
                    for name, sp in (sparse_vectors_config or {}).items()
                }
                or None,
                hnsw_config=self.hnsw,
                quantization_config=self.quantization,
            )
            shard = qe.EdgeShard.create(str(folder), config)
            distance = str(params.distance.value)
            meta = {
                "size": params.size,
                "distance": distance,
                "dense": dense_name,
                "sparse": list(sparse_names),
                "metadata": metadata,
            }
            self._write_json(folder.with_suffix(".json"), meta)
            self._collections[collection_name] = _Collection(
                collection_name,
                shard,
                EdgeCollectionConfig(metadata, params.size, distance, dense_name, sparse_names),
            )
        return True

    def delete_collection(self, collection_name: str, **_: Any) -> bool:
        with self._mutex:
            name = self._resolve(collection_name)
            coll = self._collections.pop(name, None)
            if coll is None:
                return False
            self._aliases = {a: c for a, c in self._aliases.items() if c != name}
            self._write_json(self.root / "aliases.json", self._aliases)
            (self.root / "collections" / f"{name}.json").unlink(missing_ok=True)
            coll.dropped = True
            remove = coll.users == 0 and not coll.optimizing
        if remove:
            self._destroy(coll)
        return True

    @_translated
    def get_collection(self, collection_name: str) -> EdgeCollectionInfo:
        coll = self._acquire(collection_name)
        try:
            info = coll.shard.info()
            return EdgeCollectionInfo(coll.config, info.points_count, info.indexed_vectors_count, info.segments_count)
        finally:
            self._release(coll)

    def update_collection_aliases(self, change_aliases_operations: Sequence[models.AliasOperations], **_: Any) -> bool:
        with self._mutex:
            aliases = dict(self._aliases)
            for op in change_aliases_operations:
                if isinstance(op, models.DeleteAliasOperation):
                    aliases.pop(op.delete_alias.alias_name, None)
                elif isinstance(op, models.CreateAliasOperation):
                    target = op.create_alias.collection_name
                    if target not in self._collections:
                        raise ValueError(f"Collection {target} not found")
                    aliases[op.create_alias.alias_name] = target
                elif isinstance(op, models.RenameAliasOperation):
                    old = op.rename_alias.old_alias_name
                    aliases[op.rename_alias.new_alias_name] = aliases.pop(old)
                else:
                    raise NotImplementedError(f"alias operation {op!r}")
            self._write_json(self.root / "aliases.json", aliases)
            self._aliases = aliases  # one assignment: readers see the old or the new mapping
        return True

    def create_payload_index(
        self, collection_name: str, field_name: str, field_schema: models.PayloadSchemaType | str, **_: Any
    ) -> models.UpdateResult:
        key = field_schema.value if isinstance(field_schema, models.PayloadSchemaType) else str(field_schema)
        coll = self._acquire(collection_name)
        try:
            with coll.writes:
                coll.shard.update(qe.UpdateOperation.create_field_index(field_name, _SCHEMAS[key]))
        finally:
            self._release(coll)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    # ---- points ----------------------------------------------------------------------------
    @_translated
    def count(
        self, collection_name: str, count_filter: models.Filter | None = None, exact: bool = True
    ) -> models.CountResult:
        coll = self._acquire(collection_name)
        try:
            n = coll.shard.count(qe.CountRequest(exact=exact, filter=to_edge_filter(count_filter)))
        finally:
            self._release(coll)
        return models.CountResult(count=n)

    def upsert(
        self, collection_name: str, points: Sequence[models.PointStruct], wait: bool = True, **_: Any
    ) -> models.UpdateResult:
        edge_points = [qe.Point(_edge_id(p.id), _edge_vector(p.vector), p.payload or {}) for p in points]
        self._upsert_points(collection_name, edge_points)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    @_translated
    def upsert_arrays(
        self,
        collection_name: str,
        ids: Sequence[str | int],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[SparseVector] | None = None,
    ) -> int:
        """Bulk upsert without building qdrant-client models (what ``VectorStore.upsert`` uses here): the
        rows of ``vectors`` as the collection's dense vector, ``sparse`` as its (first) sparse vector."""
        with self._mutex:
            coll = self._collections.get(self._resolve(collection_name))
            config = coll.config if coll is not None else None
        dense_name = config.dense if config is not None else ""
        sparse_name = config.sparse[0] if config is not None and config.sparse else None
        rows = vectors.astype(np.float32, copy=False).tolist()
        if sparse is not None and sparse_name is None:
            raise ValueError(f"collection {collection_name} has no sparse vector for the lexical vectors")
        edge_vectors: list[Any]
        if dense_name or sparse_name:
            edge_vectors = [{dense_name: row} if dense_name else row for row in rows]
            if sparse is not None and sparse_name is not None:
                for named, sv in zip(edge_vectors, sparse, strict=True):
                    named[sparse_name] = qe.SparseVector(list(sv.indices), list(sv.values))
        else:
            edge_vectors = rows
        edge_points = [qe.Point(_edge_id(i), v, p) for i, v, p in zip(ids, edge_vectors, payloads, strict=True)]
        self._upsert_points(collection_name, edge_points)
        return len(edge_points)

    def _upsert_points(self, collection_name: str, edge_points: list[Any]) -> None:
        """Write the points to the collection's shard, then let the optimizer index them."""
        coll = self._acquire(collection_name)
        try:
            if edge_points:
                with coll.writes:
                    coll.shard.update(qe.UpdateOperation.upsert_points(edge_points))
        finally:
            self._release(coll)
        if edge_points:
            self._maybe_optimize(coll)

    @_translated
    def delete(
        self, collection_name: str, points_selector: models.PointIdsList, wait: bool = True, **_: Any
    ) -> models.UpdateResult:
        ids: list[int | uuid.UUID | str] = [_edge_id(i) for i in points_selector.points]
        coll = self._acquire(collection_name)
        try:
            with coll.writes:
                coll.shard.update(qe.UpdateOperation.delete_points(ids))
        finally:
            self._release(coll)
        return models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)

    def retrieve(
        self,
        collection_name: str,
        ids: Sequence[Any],
        with_payload: bool = True,
        with_vectors: bool | list[str] = False,
        **_: Any,
    ) -> list[models.Record]:
        coll = self._acquire(collection_name)
        try:
            records = coll.shard.retrieve(
                [_edge_id(i) for i in ids], with_payload=with_payload, with_vector=with_vectors
            )
        finally:
            self._release(coll)
        return [
            models.Record(
                id=_client_id(r.id),
                payload=r.payload if with_payload else None,
                vector=_client_vector(r.vector, with_vectors) if with_vectors else None,
            )
            for r in records
        ]

    def scroll(
        self,
        collection_name: str,
        *,
        limit: int = 10,
        offset: Any = None,
        with_payload: bool = True,
        with_vectors: bool | list[str] = False,
        **_: Any,
    ) -> tuple[list[models.Record], Any]:
        """One page of points in id order and the offset of the next (None after the last page)."""
        request = qe.ScrollRequest(
            offset=_edge_id(offset) if offset is not None else None,
            limit=limit,
            with_payload=with_payload,
            with_vector=with_vectors,
        )
        coll = self._acquire(collection_name)
        try:
            records, next_offset = coll.shard.scroll(request)
        finally:
            self._release(coll)
        page = [
            models.Record(
                id=_client_id(r.id),
                payload=r.payload if with_payload else None,
                vector=_client_vector(r.vector, with_vectors) if with_vectors else None,
            )
            for r in records
        ]
        return page, _client_id(next_offset) if next_offset is not None else None

    def query_batch_points(
        self, collection_name: str, requests: Sequence[models.QueryRequest], **_: Any
    ) -> list[models.QueryResponse]:
        """Nearest (dense or sparse, by ``using``) and fusion (RRF, DBSF) queries over prefetches."""
        batch = [
            qe.QueryRequest(
                limit=r.limit if r.limit is not None else 10,
                query=_edge_query(r.query, r.using),
                prefetches=[_edge_prefetch(p) for p in _as_list(r.prefetch)] or None,
                filter=to_edge_filter(r.filter),
                with_payload=bool(r.with_payload),
                with_vector=r.with_vector if isinstance(r.with_vector, list) else bool(r.with_vector),
                score_threshold=r.score_threshold,
                params=_edge_params(r.params),
            )
            for r in requests
        ]
        coll = self._acquire(collection_name)
        try:
            results = coll.shard.query_batch(qe.QueryBatchRequest(batch))
        finally:
            self._release(coll)
        # Built without validation (``model_construct``): the engine's values have their types already, and
        # validating tens of thousands of hits per batch was a sizeable share of a bulk run's time.
        return [
            models.QueryResponse.model_construct(
                points=[
                    models.ScoredPoint.model_construct(
                        id=_client_id(p.id),
                        version=p.version,
                        score=p.score,
                        payload=p.payload,
                        vector=_client_vector(p.vector, True) if p.vector is not None else None,
                        shard_key=None,
                        order_value=None,
                    )
                    for p in row
                ]
            )
            for row in results
        ]

    # ---- snapshots -----------------------------------------------------------------------------
    @_translated
    def snapshot_collection(self, collection_name: str, out: Path | str) -> dict[str, Any]:
        """Write a snapshot of a collection (or an alias's) to the file ``out``: a tar of its flushed shard
        folder, the format ``qdrant_edge.EdgeShard.unpack_snapshot`` reads. Updates of the collection wait
        meanwhile, an optimize runs before or after. Returns what :meth:`restore_collection` needs beside
        the file: the collection's name and configuration (vector size, distance, names, metadata)."""
        coll = self._acquire(collection_name)
        try:
            with coll.lock, coll.writes:
                coll.shard.flush()
                folder = self.root / "collections" / coll.name
                with tarfile.open(out, "w") as tar:
                    tar.add(folder, arcname=".")
                meta = json.loads((self.root / "collections" / f"{coll.name}.json").read_text())
            return {"name": coll.name, "config": meta}
        finally:
            self._release(coll)

    @_translated
    def restore_collection(self, collection_name: str, snapshot: Path | str, config: dict[str, Any]) -> bool:
        """Create collection ``collection_name`` from a file of :meth:`snapshot_collection` and its ``config``
        (the collection must not exist)."""
        if not _NAME.match(collection_name):
            raise ValueError(f"invalid collection name {collection_name!r}")
        with self._mutex:
            if collection_name in self._collections:
                raise ValueError(f"Collection {collection_name} already exists")
            folder = self.root / "collections" / collection_name
            shutil.rmtree(folder, ignore_errors=True)
            qe.EdgeShard.unpack_snapshot(str(snapshot), str(folder))
            self._write_json(folder.with_suffix(".json"), config)
            self._collections[collection_name] = self._open(collection_name, config)
        return True

    # ---- index maintenance -----------------------------------------------------------------
    @_translated
    def optimize(self, collection_name: str) -> bool:
        """Build the HNSW index (and quantized copies) of a collection's segments; blocks until done."""
        coll = self._acquire(collection_name)
        with self._mutex:
            coll.optimizing = True
        try:
            with coll.lock:
                return bool(coll.shard.optimize())
        finally:
            with self._mutex:
                coll.optimizing = False
            self._release(coll)

    def _maybe_optimize(self, coll: _Collection) -> None:
        if not self.background_optimize or coll.lock.locked() or coll.dropped:
            return
        try:
            info = coll.shard.info()
        except Exception:  # dropped or closed meanwhile: nothing to optimize
            return
        if info.points_count - info.indexed_vectors_count < self.optimize_after:
            return

        def run() -> None:
            with contextlib.suppress(Exception):  # dropped or closed meanwhile: nothing left to index
                self.optimize(coll.name)

        thread = threading.Thread(target=run, name=f"edge-optimize-{coll.name}", daemon=True)
        with self._mutex:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def close(self, **_: Any) -> None:
        with self._mutex:
            if self._closed:
                return
            threads = list(self._threads)
        for thread in threads:
            thread.join()
        with self._mutex:
            self._closed = True
            collections = list(self._collections.values())
            self._collections.clear()
        for coll in collections:
            coll.shard.close()
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
