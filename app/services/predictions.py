"""Browse stored predictions: the review queue of recent, low-confidence answers and their corrections.

Orders (``order``): ``newest`` (the default), and by value for a reviewer, most informative first:
``uncertainty`` (largest prediction set, then smallest margin, then largest head/kNN disagreement),
``margin`` (top-1 − top-2 probability, smallest first), ``set_size`` (largest first, then smallest margin)
and ``disagreement`` (largest first, then smallest margin). An empty prediction set (no label reaches its
threshold) ranks above every other size: the model could name no label at the coverage. Predictions stored
before these were recorded (null) come last; ties go to the newest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import case, exists, select
from sqlalchemy.orm import Session

from app.db import Feedback, Prediction
from app.errors import InvalidInput
from app.services.classification import LabelProbability
from app.taxonomy import Taxonomy

MAX_LIMIT = 200
Order = Literal["newest", "uncertainty", "margin", "set_size", "disagreement"]
ORDERS: tuple[str, ...] = get_args(Order)
_NEWEST = (Prediction.created_at.desc(), Prediction.id.desc())
EMPTY_SET_RANK = 1_000_000  # an empty set sorts as the largest (a taxonomy has fewer labels than this)
_SET_RANK = case((Prediction.set_size == 0, EMPTY_SET_RANK), else_=Prediction.set_size)
_ORDER_BY: dict[str, tuple[Any, ...]] = {
    "newest": _NEWEST,
    "uncertainty": (
        _SET_RANK.desc().nulls_last(),
        Prediction.margin.asc().nulls_last(),
        Prediction.disagreement.desc().nulls_last(),
        *_NEWEST,
    ),
    "margin": (Prediction.margin.asc().nulls_last(), *_NEWEST),
    "set_size": (_SET_RANK.desc().nulls_last(), Prediction.margin.asc().nulls_last(), *_NEWEST),
    "disagreement": (Prediction.disagreement.desc().nulls_last(), Prediction.margin.asc().nulls_last(), *_NEWEST),
}


@dataclass(frozen=True)
class StoredNeighbour:
    vacancy_id: str
    label: str
    score: float
    rank_score: float | None = None  # rows stored before hybrid retrieval have none


@dataclass(frozen=True)
class PredictionView:
    id: str
    external_id: str | None
    created_at: datetime
    text: str
    label: str
    display_name: str
    confidence: float
    abstained: bool
    probabilities: list[LabelProbability]
    neighbours: list[StoredNeighbour]
    model_version: str
    language: str | None
    reviewed_label: str | None
    reviewed_at: datetime | None
    feedback_count: int
    reviewed_feedback_id: int | None = None  # the latest correction that stands (to retract it)
    prediction_set: list[str] | None = None
    set_size: int | None = None
    margin: float | None = None
    disagreement: float | None = None
    answer: str | None = None  # the answer given (a parent of ``label`` in a hierarchy); None: it abstained
    level: int | None = None  # None also for rows stored before the level was
    path: list[str] | None = None


def list_predictions(
    session: Session,
    taxonomy: Taxonomy,
    *,
    max_confidence: float | None = None,
    limit: int = 50,
    unreviewed: bool = False,
    order: str = "newest",
) -> list[PredictionView]:
    """In ``order`` (see the module docstring; newest first by default). ``max_confidence`` keeps answers at
    or below that confidence; ``unreviewed`` keeps predictions without feedback. Each carries its latest
    correction (the latest feedback wins); retracted corrections do not count (a prediction whose
    corrections were all retracted is unreviewed again)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if order not in _ORDER_BY:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}, not {order!r}", field="order")
    query = select(Prediction)
    if max_confidence is not None:
        query = query.where(Prediction.confidence <= max_confidence)
    if unreviewed:
        query = query.where(~exists().where(Feedback.prediction_id == Prediction.id, Feedback.retracted_at.is_(None)))
    rows = list(session.scalars(query.order_by(*_ORDER_BY[order]).limit(limit)))
    history: dict[str, list[Feedback]] = {}
    if rows:
        found = session.scalars(
            select(Feedback)
            .where(Feedback.prediction_id.in_([r.id for r in rows]), Feedback.retracted_at.is_(None))
            .order_by(Feedback.id)
        )
        for fb in found:
            history.setdefault(fb.prediction_id, []).append(fb)
    return [_view(row, history.get(row.id, []), taxonomy) for row in rows]


def _view(row: Prediction, feedback: list[Feedback], taxonomy: Taxonomy) -> PredictionView:
    latest = feedback[-1] if feedback else None
    return PredictionView(
        id=row.id,
        external_id=row.external_id,
        created_at=row.created_at,
        text=row.text,
        label=row.label,
        display_name=taxonomy.display_name(row.label),
        confidence=row.confidence,
        abstained=row.abstained,
        probabilities=[
            LabelProbability(p["label"], taxonomy.display_name(p["label"]), float(p["probability"]))
            for p in row.probabilities
        ],
        neighbours=[
            StoredNeighbour(
                n["vacancy_id"],
                n["label"],
                float(n["score"]),
                float(n["rank_score"]) if n.get("rank_score") is not None else None,
            )
            for n in row.neighbours
        ],
        model_version=row.model_version,
        language=row.language,
        reviewed_label=latest.label if latest else None,
        reviewed_at=latest.created_at if latest else None,
        feedback_count=len(feedback),
        reviewed_feedback_id=latest.id if latest else None,
        prediction_set=row.prediction_set,
        set_size=row.set_size,
        margin=row.margin,
        answer=row.answer,
        level=row.level,
        path=row.path,
        disagreement=row.disagreement,
    )
