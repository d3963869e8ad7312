from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import ApiTokenDep, RuntimeDep, SessionDep
from app.schemas import LabelProbability, NeighbourPublic, PredictionOrder, PredictionPublic, PredictionsResponse
from app.services.predictions import MAX_LIMIT, list_predictions

router = APIRouter(prefix="/v1/predictions", tags=["feedback"])


# Stored texts are what users pasted: the queue takes the same token as feedback, when one is set.
@router.get("", response_model=PredictionsResponse, dependencies=[ApiTokenDep])
def predictions(
    runtime: RuntimeDep,
    session: SessionDep,
    max_confidence: Annotated[
        float | None, Query(ge=0.0, le=1.0, description="Only predictions at or below this confidence.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="How many, newest first.")] = 50,
    unreviewed: Annotated[bool, Query(description="Only predictions nobody has given feedback on.")] = False,
    order: Annotated[
        PredictionOrder,
        Query(
            description="newest (default); uncertainty: largest prediction set, then smallest top-1 − top-2 "
            "margin, then largest head/kNN disagreement; margin (smallest first); set_size (largest first); "
            "disagreement (largest first). Rows stored before these were recorded come last."
        ),
    ] = "newest",
) -> PredictionsResponse:
    views = list_predictions(
        session, runtime.taxonomy, max_confidence=max_confidence, limit=limit, unreviewed=unreviewed, order=order
    )
    return PredictionsResponse(
        order=order,
        predictions=[
            PredictionPublic(
                id=v.id,
                external_id=v.external_id,
                created_at=v.created_at,
                text=v.text,
                label=v.label,
                display_name=v.display_name,
                confidence=v.confidence,
                abstained=v.abstained,
                answer=v.answer,
                level=v.level,
                path=v.path,
                probabilities=[LabelProbability(**vars(p)) for p in v.probabilities],
                neighbours=[NeighbourPublic(**vars(n)) for n in v.neighbours],
                model_version=v.model_version,
                language=v.language,
                reviewed_label=v.reviewed_label,
                reviewed_at=v.reviewed_at,
                feedback_count=v.feedback_count,
                reviewed_feedback_id=v.reviewed_feedback_id,
                prediction_set=v.prediction_set,
                set_size=v.set_size,
                margin=v.margin,
                disagreement=v.disagreement,
            )
            for v in views
        ],
    )
