from __future__ import annotations

from fastapi import APIRouter, status

from app.deps import ApiTokenDep, MetricsDep, RuntimeDep, SessionDep
from app.schemas import FeedbackCreate, FeedbackPublic
from app.services.feedback import submit_feedback

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post("", response_model=FeedbackPublic, status_code=status.HTTP_201_CREATED, dependencies=[ApiTokenDep])
def create_feedback(
    body: FeedbackCreate, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep
) -> FeedbackPublic:
    result = submit_feedback(runtime, session, body.prediction_id, body.label, body.comment)
    row = result.feedback
    metrics.observe_feedback(predicted=row.prediction.label, corrected=row.label)
    return FeedbackPublic(
        id=row.id,
        prediction_id=row.prediction_id,
        vacancy_id=row.vacancy_id,
        label=row.label,
        comment=row.comment,
        created_at=row.created_at,
        indexed=result.indexed,
    )
