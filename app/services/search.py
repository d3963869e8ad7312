"""Similar-vacancy search over the labelled index: one hybrid query (dense + BM25 prefetches, RRF)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from app.db import Vacancy
from app.errors import InvalidInput, NotFound, Unavailable
from app.runtime import Runtime
from indexing.clean import clean_text
from indexing.store import Hit, SearchFilter, StoreError

# Vacancies whose text a user submitted (classified, then corrected): their snippets are shown only to
# requests that may read them (``app.deps.may_read_submitted_texts``).
SUBMITTED_SOURCES = frozenset({"feedback"})


def without_submitted_texts(hits: list[Hit]) -> list[Hit]:
    """``hits`` with the snippets of user-submitted vacancies emptied (their labels and scores stay)."""
    return [replace(h, snippet="") if h.source in SUBMITTED_SOURCES else h for h in hits]


def search_text(runtime: Runtime, text: str, k: int, flt: SearchFilter | None = None) -> list[Hit]:
    if len(text) > runtime.settings.max_text_chars:
        raise InvalidInput(f"text is over the limit of {runtime.settings.max_text_chars} characters", field="text")
    cleaned = clean_text(text, max_chars=runtime.settings.clean_max_chars)
    if not cleaned:
        raise InvalidInput("text is empty after cleaning (no words left)", field="text")
    if flt:
        flt = _check_filter(flt)
    if flt and flt.labels:
        unknown = [lab for lab in flt.labels if lab not in runtime.taxonomy]
        if unknown:
            raise InvalidInput(f"unknown label(s) in filter: {unknown}", field="filter.labels")
    vectors = runtime.encoder.encode([cleaned])
    try:
        return runtime.store.hybrid_search_many(vectors, runtime.lexical.queries([cleaned]), k, flt)[0]
    except StoreError as exc:
        raise Unavailable(f"vector store unavailable: {type(exc).__name__}: {exc}") from exc


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # a date without zone is UTC


def _check_filter(flt: SearchFilter) -> SearchFilter:
    since = _aware(flt.since) if flt.since is not None else None
    until = _aware(flt.until) if flt.until is not None else None
    if since is not None and until is not None and until < since:
        raise InvalidInput("filter.until is before filter.since", field="filter.until")
    return replace(flt, since=since, until=until)


def similar_to(runtime: Runtime, session: Session, vacancy_id: str, k: int) -> list[Hit]:
    """Nearest vacancies to a stored one by the hybrid query of its own stored vectors (its embedding and
    its BM25 vector, as a query), excluding itself and exact duplicates of its text."""
    vacancy = session.get(Vacancy, vacancy_id) if "\x00" not in vacancy_id else None  # no id holds a NUL
    if vacancy is None:
        raise NotFound(f"no vacancy with id {vacancy_id!r}", field="vacancy_id")
    try:
        stored = runtime.store.vectors_of(vacancy_id)
        if stored is not None:
            vector, sparse = stored.dense, stored.sparse
        else:  # not indexed (yet): embed its text
            vector = runtime.encoder.encode([vacancy.text])[0]
            [sparse] = runtime.lexical.documents([vacancy.text])
        [hits] = runtime.store.hybrid_search_many(vector[None, :], [sparse], k + 10, exclude_ids=[vacancy_id])
    except StoreError as exc:
        raise Unavailable(f"vector store unavailable: {type(exc).__name__}: {exc}") from exc
    return [h for h in hits if h.text_hash != vacancy.text_hash][:k]
