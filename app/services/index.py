"""Build and update the Qdrant index from the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import Vacancy, utcnow
from app.errors import Conflict
from app.runtime import Runtime
from app.services.jobs import Job
from app.services.vacancies import labelled_vacancies
from indexing.cache import encode_cached
from indexing.embed import Encoder
from indexing.sparse import SparseVector
from indexing.store import VacancyPoint

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
BulkEmbed = Callable[[Sequence[str]], Iterable[tuple[np.ndarray, np.ndarray]]]  # texts → (positions, vectors)
CATCH_UP_SLACK = timedelta(seconds=5)  # clock skew between writers: re-reading a few extra rows is harmless


@dataclass(frozen=True)
class ReindexResult:
    collection: str
    previous: str | None
    count: int
    seconds: float
    caught_up: int = 0  # vacancies labelled while the rebuild ran, written again before the swap

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def to_points(
    vacancies: Sequence[Vacancy], vectors: np.ndarray, sparse: Sequence[SparseVector] | None = None
) -> list[VacancyPoint]:
    """Index points: the embedding and, when given, the BM25 document vector of each stored text."""
    lexical = sparse if sparse is not None else [None] * len(vacancies)
    return [
        VacancyPoint(
            vacancy_id=v.id,
            vector=vec,
            label=v.label or "",
            source=v.source,
            created_at=v.created_at,
            text=v.text,
            text_hash=v.text_hash,
            labelled_at=v.updated_at,
            sparse=sv,
            revision=v.revision or 0,
        )
        for v, vec, sv in zip(vacancies, vectors, lexical, strict=True)
    ]


def reindex(
    runtime: Runtime, session: Session, progress: Progress | None = None, *, embed: BulkEmbed | None = None
) -> ReindexResult:
    """Embed every labelled vacancy into a new collection, then swap the alias to it atomically.

    Searches keep using the old collection until the swap. Corrections that arrive meanwhile are not
    lost: single-point writes go to both collections while the build runs, and vacancies labelled
    after the build started are read again and rewritten just before the swap.

    ``embed``: embeds the texts elsewhere (``jobclass reindex --engine ray``: an actor pool), yielding
    (positions, vectors) in any order; this process upserts them."""
    if not runtime.index_lock.acquire(blocking=False):
        raise Conflict("a reindex is already running")
    store = runtime.store
    try:
        start = time.perf_counter()
        started_at = utcnow()
        encoder = runtime.encoder
        name = store.create_version(encoder.dim, runtime.index_metadata())
        store.building = name
        try:
            vacancies = labelled_vacancies(session)
            total = len(vacancies)
            batch = runtime.settings.index_batch_size
            if embed is not None:
                done = 0
                for positions, vectors in embed([v.text for v in vacancies]):
                    write_vacancies(runtime, [vacancies[int(i)] for i in positions], name, vectors=vectors)
                    done += len(positions)
                    if progress:
                        progress(done, total)
                if done != total:
                    raise RuntimeError(f"the bulk embedder returned {done} vectors for {total} vacancies")
            for offset in range(0, total if embed is None else 0, batch):
                write_vacancies(runtime, vacancies[offset : offset + batch], name)
                if progress:
                    progress(min(offset + batch, total), total)
            late = labelled_since(session, started_at - CATCH_UP_SLACK)
            write_vacancies(runtime, late, name)
            # a correction retracted meanwhile may have been read (and written) before it was: drop it again
            store.delete(unlabelled_since(session, started_at - CATCH_UP_SLACK), collection=name)
            previous = store.swap_alias(name)
        except BaseException:
            store.drop(name)  # the old collection keeps serving
            raise
        finally:
            store.building = None
        return ReindexResult(name, previous, total, time.perf_counter() - start, len(late))
    finally:
        runtime.index_lock.release()


def write_vacancies(
    runtime: Runtime,
    vacancies: Sequence[Vacancy],
    collection: str,
    *,
    vectors: np.ndarray | None = None,
    encoder: Encoder | None = None,
) -> None:
    """Upsert ``vacancies`` into ``collection`` in batches of ``index_batch_size``, with their ``vectors``
    (or else embedded by ``encoder``, by default the runtime's) and the BM25 vectors of their texts."""
    if not vacancies:
        return
    if vectors is None:
        vectors = encode_cached(encoder or runtime.encoder, [v.text for v in vacancies], runtime.cache)
    batch = runtime.settings.index_batch_size
    for offset in range(0, len(vacancies), batch):
        part = vacancies[offset : offset + batch]
        points = to_points(part, vectors[offset : offset + batch], runtime.lexical.documents([v.text for v in part]))
        runtime.store.upsert(points, collection=collection)


def labelled_since(session: Session, since: datetime) -> list[Vacancy]:
    """Vacancies labelled at or after ``since`` (a rebuild's catch-up), read fresh from the database."""
    session.commit()  # end any read transaction: see what other sessions committed during the build
    query = select(Vacancy).where(Vacancy.label.is_not(None), Vacancy.updated_at >= since)
    return list(session.scalars(query.order_by(Vacancy.id).execution_options(populate_existing=True)))


def unlabelled_since(session: Session, since: datetime) -> list[str]:
    """Ids of vacancies whose label was removed at or after ``since`` (a retracted correction)."""
    query = select(Vacancy.id).where(Vacancy.label.is_(None), Vacancy.updated_at >= since)
    return list(session.scalars(query.order_by(Vacancy.id)))


def index_vacancy(runtime: Runtime, vacancy: Vacancy) -> None:
    vector = runtime.encoder.encode([vacancy.text])
    runtime.store.upsert(to_points([vacancy], vector, runtime.lexical.documents([vacancy.text])))


INDEX_ATTEMPTS = 5  # writes of one vacancy's latest row by one writer, while newer ones keep committing


def index_committed(runtime: Runtime, vacancy_id: str, revision: int) -> bool:
    """Write the committed row of ``vacancy_id`` to the index unless the index already holds its revision
    (or a newer one). True when the index holds ``revision`` (the caller's) or a newer one; False when the
    row is gone or unlabelled. A ``StoreError`` propagates.

    Concurrent corrections of one vacancy commit in one order but reach the index in any: so each writer
    reads the row the database committed last, compares its revision with the payload's, writes it, and
    checks again, until the index holds the latest row it read. In this process writers queue on the
    vacancy's lock (the first writes the latest row, the others find it written). Writers in other
    processes (API workers on one Qdrant server) are ordered by the check after the write: an older row
    written over a newer one is found by its writer's check and written again. Under a stream of
    corrections a writer stops after :data:`INDEX_ATTEMPTS` writes: each newer revision's own writer
    writes it after this one."""
    with runtime.vacancy_lock(vacancy_id):
        for _ in range(INDEX_ATTEMPTS):
            with runtime.sessions() as session:  # a new session each time: it sees what committed since
                vacancy = session.get(Vacancy, vacancy_id)
            if vacancy is None or vacancy.label is None:
                return False
            indexed = runtime.store.indexed_revision(vacancy_id)
            if indexed is not None and indexed >= vacancy.revision:
                return True
            index_vacancy(runtime, vacancy)
        indexed = runtime.store.indexed_revision(vacancy_id)
    return indexed is not None and indexed >= revision


def drop_abandoned_collections(runtime: Runtime) -> list[str]:
    """Drop the half-built collections of rebuilds (reindex, encoder upgrade) that were killed before
    their swap, in one log line; never a collection an alias points to. Only in embedded mode, where this
    process owns the index: with a Qdrant server (``JOBCLASS_QDRANT_URL``) another worker may be building
    one right now, so they are only named in the log. Returns the dropped names."""
    if not runtime.index_lock.acquire(blocking=False):
        return []  # a rebuild of this process is running: its collection is not abandoned
    try:
        abandoned = runtime.store.abandoned_versions()
        if not abandoned:
            return []
        if runtime.settings.qdrant_url:
            log.warning(
                "collections without an alias on the Qdrant server (a rebuild running elsewhere, or one killed "
                "before its swap; not dropped from here): %s",
                ", ".join(abandoned),
            )
            return []
        for name in abandoned:
            runtime.store.drop(name)
        log.warning(
            "dropped %d half-built collection(s) of an interrupted rebuild (no alias pointed to them): %s",
            len(abandoned),
            ", ".join(abandoned),
        )
        return abandoned
    finally:
        runtime.index_lock.release()


def start_reindex(runtime: Runtime) -> Job:
    """Reindex in a background job (one at a time); its own session reads the database."""

    def run(progress: Progress) -> ReindexResult:
        with runtime.sessions() as session:
            return reindex(runtime, session, progress)

    return runtime.jobs.submit("reindex", run)
