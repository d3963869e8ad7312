"""Build and update the Qdrant index from the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from app.db import Vacancy
from app.errors import Conflict
from app.runtime import Runtime
from app.services.jobs import Job
from app.services.vacancies import labelled_vacancies
from indexing.cache import encode_cached
from indexing.store import VacancyPoint

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]
BATCH = 256


@dataclass(frozen=True)
class ReindexResult:
    collection: str
    previous: str | None
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def to_points(vacancies: Sequence[Vacancy], vectors: np.ndarray) -> list[VacancyPoint]:
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
        )
        for v, vec in zip(vacancies, vectors, strict=True)
    ]


def reindex(runtime: Runtime, session: Session, progress: Progress | None = None) -> ReindexResult:
    """Embed every labelled vacancy into a new collection, then swap the alias to it atomically.
    Searches keep using the old collection until the swap."""
    if not runtime.index_lock.acquire(blocking=False):
        raise Conflict("a reindex is already running")
    try:
        start = time.perf_counter()
        vacancies = labelled_vacancies(session)
        encoder = runtime.encoder
        name = runtime.store.create_version(encoder.dim, {"embedding": runtime.settings.embedding_signature})
        total = len(vacancies)
        try:
            for offset in range(0, total, BATCH):
                chunk = vacancies[offset : offset + BATCH]
                vectors = encode_cached(encoder, [v.text for v in chunk], runtime.cache)
                runtime.store.upsert(to_points(chunk, vectors), collection=name)
                if progress:
                    progress(min(offset + BATCH, total), total)
        except BaseException:
            runtime.store.client.delete_collection(name)  # the old collection keeps serving
            raise
        previous = runtime.store.swap_alias(name)
        return ReindexResult(name, previous, total, time.perf_counter() - start)
    finally:
        runtime.index_lock.release()


def index_vacancy(runtime: Runtime, vacancy: Vacancy) -> None:
    vector = runtime.encoder.encode([vacancy.text])
    runtime.store.upsert(to_points([vacancy], vector))


def start_reindex(runtime: Runtime) -> Job:
    """Reindex in a background job (one at a time); its own session reads the database."""

    def run(progress: Progress) -> ReindexResult:
        with runtime.sessions() as session:
            return reindex(runtime, session, progress)

    return runtime.jobs.submit("reindex", run)
