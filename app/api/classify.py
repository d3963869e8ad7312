from __future__ import annotations

from fastapi import APIRouter

from app.deps import MetricsDep, ModelDep, RuntimeDep, SessionDep
from app.errors import InvalidInput
from app.schemas import (
    BatchClassifyRequest,
    BatchClassifyResponse,
    BatchItemResult,
    ClassificationPublic,
    ClassifyRequest,
    LabelProbability,
    NeighbourPublic,
)
from app.services.classification import Classification, ClassifyItem, classify

router = APIRouter(prefix="/v1/classify", tags=["classify"])


def to_public(result: Classification) -> dict[str, object]:
    return {
        "prediction_id": result.prediction_id,
        "label": result.label,
        "confidence": result.confidence,
        "abstained": result.abstained,
        "probabilities": [LabelProbability(**vars(p)) for p in result.probabilities],
        "neighbours": [
            NeighbourPublic(vacancy_id=h.vacancy_id, label=h.label, score=h.score) for h in result.neighbours
        ],
        "model_version": result.model_version,
        "index_used": result.index_used,
        "stored": result.stored,
    }


# Plain ``def`` routes: embedding is CPU-bound and runs in FastAPI's worker threads, not on the event loop.
@router.post("", response_model=ClassificationPublic)
def classify_one(
    body: ClassifyRequest, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep, _: ModelDep
) -> ClassificationPublic:
    [result] = classify(runtime, session, [ClassifyItem(body.text)], top_k=body.top_k)
    metrics.observe_predictions([result.label])
    return ClassificationPublic.model_validate(to_public(result))


@router.post("/batch", response_model=BatchClassifyResponse)
def classify_batch(
    body: BatchClassifyRequest, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep, _: ModelDep
) -> BatchClassifyResponse:
    limit = runtime.settings.max_batch_items
    if len(body.items) > limit:
        raise InvalidInput(f"batch has {len(body.items)} items; the limit is {limit}", field="items")
    results = classify(runtime, session, [ClassifyItem(i.text, i.id) for i in body.items], top_k=body.top_k)
    metrics.observe_predictions([r.label for r in results])
    return BatchClassifyResponse(
        results=[BatchItemResult.model_validate({"id": r.id, **to_public(r)}) for r in results]
    )
