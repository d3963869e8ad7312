"""User corrections: stored first (the source of truth), then upserted into the kNN index at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.db import Feedback, Prediction, Vacancy, utcnow
from app.errors import InvalidInput, NotFound
from app.runtime import Runtime
from app.services.index import index_vacancy
from indexing.store import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedbackResult:
    feedback: Feedback
    indexed: bool


def feedback_vacancy_id(prediction_id: str) -> str:
    return f"feedback-{prediction_id}"


def submit_feedback(
    runtime: Runtime, session: Session, prediction_id: str, label: str, comment: str | None = None
) -> FeedbackResult:
    if label not in runtime.taxonomy:
        raise InvalidInput(f"unknown label {label!r}: it is not in the taxonomy (GET /v1/taxonomy)", field="label")
    prediction = session.get(Prediction, prediction_id)
    if prediction is None:
        raise NotFound(f"no prediction with id {prediction_id!r}", field="prediction_id")
    vid = feedback_vacancy_id(prediction_id)
    vacancy = session.get(Vacancy, vid)
    if vacancy is None:
        vacancy = Vacancy(id=vid, text=prediction.text, text_hash=prediction.text_hash, label=label, source="feedback")
        session.add(vacancy)
    else:  # repeated or conflicting feedback: the latest wins, every row stays in history
        vacancy.label = label
        vacancy.updated_at = utcnow()
    row = Feedback(prediction=prediction, vacancy=vacancy, label=label, comment=comment)
    session.add(row)
    session.commit()
    try:
        index_vacancy(runtime, vacancy)
        indexed = True
    except (StoreError, ValueError, RuntimeError) as exc:
        log.warning("feedback %s stored but not indexed (the next reindex adds it): %s", row.id, exc)
        indexed = False
    return FeedbackResult(row, indexed)
