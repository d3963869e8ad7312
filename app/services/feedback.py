"""User corrections: stored first (the source of truth), then upserted into the kNN index at once.

A correction can be retracted (:func:`retract_feedback`): the row stays, marked ``retracted_at`` (the audit
trail), and the corrected vacancy takes the label of the latest correction of the prediction that still
stands, or, with none left, no label: a feedback vacancy exists only because of corrections. The index
follows at once (the point is rewritten with that label, or deleted) and the next retrain, which reads the
labelled vacancies, no longer sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import Feedback, Prediction, Vacancy, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.runtime import Runtime
from app.services.index import index_vacancy
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
    return f"feedback-{prediction_id}"


def _store(session: Session, prediction_id: str, label: str, comment: str | None) -> tuple[Feedback, Vacancy]:
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"no prediction with id {prediction_id!r}", field="prediction_id")
    vid = feedback_vacancy_id(prediction_id)
    # FOR UPDATE: concurrent corrections of one prediction queue here, each reads the label the previous
    # one committed, so the vacancy's label is always the latest feedback row's (an unlocked read could be
    # stale, and an unchanged-looking label is then not written at all).
    vacancy = session.get(Vacancy, vid, populate_existing=True, with_for_update=True)
    if vacancy is None:
        vacancy = Vacancy(id=vid, text=prediction.text, text_hash=prediction.text_hash, label=label, source="feedback")
        session.add(vacancy)
    else:  # repeated or conflicting feedback: the latest wins, every row stays in history
        vacancy.label = label
        vacancy.updated_at = utcnow()
    row = Feedback(prediction=prediction, vacancy=vacancy, label=label, comment=comment)
    session.add(row)
    session.commit()
    return row, vacancy


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
            row, vacancy = _store(session, prediction_id, label, comment)
            break
        except IntegrityError as exc:
            # Concurrent first corrections of one prediction both create its vacancy: one insert wins, the
            # other rolls back and, on the next attempt, finds that vacancy and updates it instead.
            session.rollback()
            if attempt == WRITE_ATTEMPTS:
                raise Conflict("the correction collided with concurrent ones; nothing was written, retry") from exc
            log.info("feedback for %s collided with a concurrent one (attempt %d), retrying", prediction_id, attempt)
    try:
        index_vacancy(runtime, vacancy)
        indexed = True
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
    vacancy.updated_at = utcnow()
    session.commit()
    try:
        if vacancy.label is None:
            runtime.store.delete([vacancy.id])
        else:
            index_vacancy(runtime, vacancy)
        indexed = True
    except StoreError as exc:
        log.warning("feedback %s retracted but the index still holds it (the next reindex drops it): %s", row.id, exc)
        indexed = False
    return RetractResult(row, vacancy.label, indexed)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")
