"""User corrections: stored first (the source of truth), then upserted into the kNN index at once.

The index is written from the committed row, in revision order: whatever order concurrent corrections of
one prediction finish in, the index ends on the database's latest one (``app.services.index.index_committed``).

A correction can be retracted (:func:`retract_feedback`): the row stays, marked ``retracted_at`` (the audit
trail), and the corrected vacancy takes the label of the latest correction of the prediction that still
stands, or, with none left, no label: a feedback vacancy exists only because of corrections. The index
follows at once (the point is rewritten with that label, or deleted) and the next retrain, which reads the
labelled vacancies, no longer sees it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import Feedback, Prediction, Vacancy, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.runtime import Runtime
from app.services.index import index_committed
from indexing.store import StoreError

log = logging.getLogger(__name__)
WRITE_ATTEMPTS = 3
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class FeedbackResult:
    feedback: Feedback
    indexed: bool


@dataclass(frozen=True)
class RetractResult:
    feedback: Feedback
    label: str | None  # the vacancy's label now: an earlier correction that stands, or None
    indexed: bool  # whether the index already reflects it (else the next reindex does)


def feedback_vacancy_id(prediction_id: str) -> str:
    """The corrected vacancy's id: opaque (a hash of the prediction id), so an id shown in search results
    does not reveal the prediction id; deterministic, so concurrent first corrections collide on it."""
    digest = hashlib.sha256(f"jobclass feedback vacancy\x00{prediction_id}".encode()).hexdigest()
    return f"feedback-{digest[:40]}"


def legacy_feedback_vacancy_id(prediction_id: str) -> str:
    """The id corrections got before 0003 (``feedback-<prediction_id>``): such rows keep it and are updated."""
    return f"feedback-{prediction_id}"


def _vacancy_id(session: Session, prediction_id: str) -> str:
    legacy = legacy_feedback_vacancy_id(prediction_id)
    return legacy if session.get(Vacancy, legacy) is not None else feedback_vacancy_id(prediction_id)


def _store(session: Session, prediction_id: str, label: str, comment: str | None) -> tuple[Feedback, int]:
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"no prediction with id {prediction_id!r}", field="prediction_id")
    vid = _vacancy_id(session, prediction_id)
    # One UPDATE sets the label and bumps the revision inside the database: concurrent corrections of one
    # prediction queue on the row (Postgres: its row lock; SQLite: the write lock the UPDATE takes), each
    # counts from the revision the previous one committed, and the label is always written (an ORM update
    # of a stale-looking unchanged label wrote nothing, and SQLite has no FOR UPDATE).
    revision = session.execute(
        update(Vacancy)
        .where(Vacancy.id == vid)
        .values(label=label, revision=Vacancy.revision + 1, updated_at=utcnow())
        .returning(Vacancy.revision)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if revision is None:  # the first correction: a concurrent first one collides on the id (IntegrityError)
        session.add(
            Vacancy(
                id=vid, text=prediction.text, text_hash=prediction.text_hash, label=label, source="feedback", revision=1
            )
        )
        session.flush()
        revision = 1
    row = Feedback(prediction=prediction, vacancy_id=vid, label=label, comment=comment)
    session.add(row)  # history: every correction is a row, the latest (highest id, highest revision) wins
    session.commit()
    return row, revision


def submit_feedback(
    runtime: Runtime, session: Session, prediction_id: str, label: str, comment: str | None = None
) -> FeedbackResult:
    if label not in runtime.taxonomy:
        raise InvalidInput(f"unknown label {label!r}: it is not in the taxonomy (GET /v1/taxonomy)", field="label")
    if (why := runtime.taxonomy.not_a_leaf(label)) is not None:
        raise InvalidInput(why, field="label")
    if "\x00" in prediction_id:  # no stored id holds a NUL byte (Postgres text cannot)
        raise NotFound(f"no prediction with id {prediction_id!r}", field="prediction_id")
    if comment is not None:
        comment = comment.replace("\x00", "")  # stored cleaned: Postgres text cannot hold NUL bytes
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            row, revision = _store(session, prediction_id, label, comment)
            break
        except IntegrityError as exc:
            # Concurrent first corrections of one prediction both create its vacancy: one insert wins, the
            # other rolls back and, on the next attempt, finds that vacancy and updates it instead.
            session.rollback()
            if attempt == WRITE_ATTEMPTS:
                raise Conflict("the correction collided with concurrent ones; nothing was written, retry") from exc
            log.info("feedback for %s collided with a concurrent one (attempt %d), retrying", prediction_id, attempt)
    try:
        indexed = index_committed(runtime, row.vacancy_id, revision)
    except StoreError as exc:
        log.warning("feedback %s stored but not indexed (the next reindex adds it): %s", row.id, exc)
        indexed = False
    return FeedbackResult(row, indexed)


def retract_feedback(runtime: Runtime, session: Session, feedback_id: int) -> RetractResult:
    """Withdraw correction ``feedback_id`` (``NotFound`` for an unknown id, ``Conflict`` when it was already
    retracted); see the module docstring for what the vacancy, the index and the next retrain do."""
    # FOR UPDATE on the vacancy, as corrections take it: a concurrent correction or retraction of the same
    # prediction queues here and reads what this one committed.
    row = (
        session.get(Feedback, feedback_id, populate_existing=True, with_for_update=True)
        if 0 < feedback_id <= MAX_ID  # a larger one is no stored id (and overflows Postgres' integer)
        else None
    )
    if row is None:
        raise NotFound(f"no feedback with id {feedback_id}", field="id")
    if row.retracted_at is not None:
        raise Conflict(f"feedback {feedback_id} was already retracted at {_iso(row.retracted_at)}")
    vacancy = session.get(Vacancy, row.vacancy_id, populate_existing=True, with_for_update=True)
    if vacancy is None:  # the foreign key forbids it; a clear error rather than an AttributeError
        raise NotFound(f"feedback {feedback_id} names vacancy {row.vacancy_id!r}, which does not exist", field="id")
    row.retracted_at = utcnow()
    session.flush()
    standing = session.scalars(
        select(Feedback)
        .where(Feedback.vacancy_id == vacancy.id, Feedback.retracted_at.is_(None))
        .order_by(Feedback.id.desc())
        .limit(1)
    ).first()
    vacancy.label = standing.label if standing is not None else None
    vacancy.revision = vacancy.revision + 1  # the index takes this row over any older one it holds
    vacancy.updated_at = utcnow()
    session.commit()
    vacancy_id, revision, label = vacancy.id, vacancy.revision, vacancy.label
    try:
        if label is None:
            with runtime.vacancy_lock(vacancy_id):
                runtime.store.delete([vacancy_id])
            indexed = True
        else:
            indexed = index_committed(runtime, vacancy_id, revision)
    except StoreError as exc:
        log.warning("feedback %s retracted but the index still holds it (the next reindex drops it): %s", row.id, exc)
        indexed = False
    return RetractResult(row, label, indexed)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")
