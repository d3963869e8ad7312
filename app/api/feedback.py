from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from app.db import Feedback
from app.deps import ApiTokenDep, MetricsDep, RuntimeDep, SessionDep
from app.schemas import FeedbackCreate, FeedbackPublic, FeedbackRetracted
from app.services.feedback import retract_feedback, submit_feedback

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


def _stored(row: Feedback) -> dict[str, Any]:
    """The feedback row's own fields, as both answers show them."""
    return {
        "id": row.id,
        "prediction_id": row.prediction_id,
        "vacancy_id": row.vacancy_id,
        "label": row.label,
        "comment": row.comment,
        "created_at": row.created_at,
        "retracted_at": row.retracted_at,
    }


@router.post("", response_model=FeedbackPublic, status_code=status.HTTP_201_CREATED, dependencies=[ApiTokenDep])
def create_feedback(
    body: FeedbackCreate, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep
) -> FeedbackPublic:
    result = submit_feedback(runtime, session, body.prediction_id, body.label, body.comment)
    row = result.feedback
    metrics.observe_feedback(predicted=row.prediction.label, corrected=row.label)
    return FeedbackPublic(**_stored(row), indexed=result.indexed)


@router.delete("/{feedback_id}", response_model=FeedbackRetracted, dependencies=[ApiTokenDep])
def delete_feedback(feedback_id: int, runtime: RuntimeDep, session: SessionDep) -> FeedbackRetracted:
    """Retract a correction: the row is kept (``retracted_at``), the index and the next retrain forget it.
    404 for an unknown id, 409 when it was already retracted."""
    result = retract_feedback(runtime, session, feedback_id)
    return FeedbackRetracted(**_stored(result.feedback), indexed=result.indexed, vacancy_label=result.label)
