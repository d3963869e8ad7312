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
    ExtractionPublic,
    LabelProbability,
    NeighbourPublic,
    SpanPublic,
)
from app.services.classification import Classification, ClassifyItem, classify
from indexing.extract import text_for_embedding

router = APIRouter(prefix="/v1/classify", tags=["classify"])


def to_public(result: Classification) -> dict[str, object]:
    return {
        "prediction_id": result.prediction_id,
        "label": result.label,
        "confidence": result.confidence,
        "abstained": result.abstained,
        "level": result.level,
        "path": result.path,
        "probabilities": [LabelProbability(**vars(p)) for p in result.probabilities],
        "neighbours": [
            NeighbourPublic(vacancy_id=h.vacancy_id, label=h.label, score=h.score, rank_score=h.rank_score)
            for h in result.neighbours
        ],
        "model_version": result.model_version,
        "index_used": result.index_used,
        "stored": result.stored,
        "language": result.language,
        "prediction_set": [LabelProbability(**vars(p)) for p in result.prediction_set],
        "abstain_reason": result.abstain_reason,
        "margin": result.margin,
    }


def explanation(result: Classification) -> ExtractionPublic | None:
    e = result.extraction
    if e is None:
        return None
    return ExtractionPublic(
        compact=e.compact,
        embedded=text_for_embedding(result.extracted_from, e),
        text=result.extracted_from,
        spans=[
            SpanPublic(label=s.label, role=s.role, text=s.text, start=s.start, end=s.end, score=s.score)
            for s in e.spans
        ],
    )


# Plain ``def`` routes: embedding is CPU-bound and runs in FastAPI's worker threads, not on the event loop.
# ``exclude_unset``: the optional ``extraction`` field is absent unless ``explain`` asked for it.
@router.post("", response_model=ClassificationPublic, response_model_exclude_unset=True)
def classify_one(
    body: ClassifyRequest, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep, _: ModelDep
) -> ClassificationPublic:
    [result] = classify(runtime, session, [ClassifyItem(body.text)], top_k=body.top_k)
    metrics.observe_predictions([result.label])
    public = to_public(result)
    if body.explain:
        public["extraction"] = explanation(result)
    return ClassificationPublic.model_validate(public)


@router.post("/batch", response_model=BatchClassifyResponse, response_model_exclude_unset=True)
def classify_batch(
    body: BatchClassifyRequest, runtime: RuntimeDep, session: SessionDep, metrics: MetricsDep, _: ModelDep
) -> BatchClassifyResponse:
    limit = runtime.settings.max_batch_items
    if len(body.items) > limit:
        raise InvalidInput(f"batch has {len(body.items)} items; the limit is {limit}", field="items")
    items = [ClassifyItem(i.text, i.id) for i in body.items]
    results = classify(runtime, session, items, top_k=body.top_k, batch=True)
    metrics.observe_predictions([r.label for r in results])
    public = []
    for r in results:
        fields = {"id": r.id, **to_public(r)}
        if body.explain:
            fields["extraction"] = explanation(r)
        public.append(BatchItemResult.model_validate(fields))
    return BatchClassifyResponse(results=public)
