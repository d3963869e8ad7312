"""Request and response models of the HTTP API, one family per resource."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from indexing.objectives import Objective


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace only")
    return value


def _has_surrogate(value: Any) -> bool:
    """A lone surrogate in a string or a list of strings (nested bodies check their own fields, so the
    error names the innermost field)."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list | tuple):
        return any(isinstance(v, str) and _has_surrogate(v) for v in value)
    return False


class _In(BaseModel):
    """Every request body: unknown fields refused, and no string anywhere in it may hold a lone UTF-16
    surrogate (valid in JSON as "\\ud800", not text: it cannot be stored or logged, and answered 500)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_surrogates(cls, value: Any) -> Any:
        if _has_surrogate(value):
            raise ValueError("contains a lone surrogate (\\ud800–\\udfff), which is not valid text")
        return value


# ---- classify --------------------------------------------------------------------------------
class ClassifyRequest(_In):
    text: str = Field(min_length=1, description="The vacancy text (plain text or HTML).")
    top_k: int = Field(5, ge=1, le=50, description="How many labels to return with probabilities.")
    explain: bool = Field(False, description="Return the extracted spans and the compact text that was embedded.")

    _text = field_validator("text")(_not_blank)


def _printable_id(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (NUL, newlines, …)")
    return value


class BatchItem(_In):
    id: str | None = Field(None, max_length=128, description="Your id for the item; echoed back.")
    text: str = Field(min_length=1)

    _text = field_validator("text")(_not_blank)
    _id = field_validator("id")(_printable_id)


class BatchClassifyRequest(_In):
    items: list[BatchItem] = Field(min_length=1)
    top_k: int = Field(5, ge=1, le=50)
    explain: bool = Field(False, description="Return each item's extracted spans and the compact text embedded.")


class LabelProbability(BaseModel):
    label: str
    display_name: str
    probability: float


class NeighbourPublic(BaseModel):
    vacancy_id: str
    label: str
    score: float = Field(description="Cosine similarity of the embeddings (a near-duplicate is ≥ 0.999).")
    rank_score: float | None = Field(
        None,
        description="The hybrid query's fused score: Σ 1/(rank + 2) over the dense and the BM25 ranking "
        "(at most 1.0); neighbours are listed by it. None for predictions stored before hybrid retrieval.",
    )


class SpanPublic(BaseModel):
    label: str = Field(description="The label the extractor was prompted with, e.g. 'job title'.")
    role: Literal["title", "skills", "tasks", "person"]
    text: str
    start: int = Field(description="Character offset into `extraction.text`.")
    end: int
    score: float


class ExtractionPublic(BaseModel):
    compact: str = Field(description="The compact 'title: …; skills: …; tasks: …' string; empty if nothing was found.")
    embedded: str = Field(description="What was embedded: the compact string, or the cleaned text when it is empty.")
    text: str = Field(description="The cleaned text the span offsets refer to (returned, never stored).")
    spans: list[SpanPublic]


class ClassificationPublic(BaseModel):
    prediction_id: str | None = Field(description="Id to send feedback for; null when the prediction was not stored.")
    label: str | None = Field(
        description="The predicted label; null when the model abstains. In a hierarchical taxonomy it may be a "
        "parent: the deepest node whose rolled-up probability reaches JOBCLASS_HIERARCHY_THRESHOLD."
    )
    confidence: float
    abstained: bool
    level: int | None = Field(
        None, description="Depth of `label` in the taxonomy (0 = a root; always 0 when flat); null when abstained."
    )
    path: list[str] = Field(default_factory=list, description="Root → `label` in the taxonomy; empty when abstained.")
    probabilities: list[LabelProbability]
    neighbours: list[NeighbourPublic]
    model_version: str
    index_used: bool = Field(description="False when the vector store was unavailable and the head answered alone.")
    stored: bool
    language: str = Field(
        "und", description="ISO 639-1 guess of the text's language (da, en, sv, nb, de, pl); und when too short."
    )
    extraction: ExtractionPublic | None = Field(
        None, description="Only with `explain: true`; null when no extractor is configured (JOBCLASS_EXTRACTOR_MODEL)."
    )
    prediction_set: list[LabelProbability] = Field(
        default_factory=list,
        description="The conformal prediction set: every label whose probability reaches its class threshold "
        "(calibrated on the hold-out and the training rows' out-of-fold predictions for JOBCLASS_COVERAGE), most "
        "probable first; empty when no label reaches its threshold (the answer is then too uncertain to name "
        "a set at that coverage). More than one label, or a top label below its threshold (an empty set among "
        "them), abstains unless the model has an automation operating point.",
    )
    abstain_reason: AbstainReason | None = Field(
        None,
        description="Why the answer abstained: below_floor (JOBCLASS_ABSTAIN_THRESHOLD), "
        "below_automation_threshold (the operating point's per-class threshold), set_size (more than one label in "
        "the set), below_class_threshold (the top label's confidence is below its conformal threshold); null: it "
        "did not.",
    )
    margin: float = Field(0.0, description="Top-1 minus top-2 probability.")


AbstainReason = Literal["below_floor", "below_automation_threshold", "set_size", "below_class_threshold"]


class BatchItemResult(ClassificationPublic):
    id: str | None


class BatchClassifyResponse(BaseModel):
    results: list[BatchItemResult]


# ---- search ----------------------------------------------------------------------------------
class SearchFilterIn(_In):
    labels: list[str] | None = Field(None, min_length=1)
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class SearchRequest(_In):
    text: str = Field(min_length=1)
    k: int = Field(10, ge=1, le=100)
    filter: SearchFilterIn | None = None

    _text = field_validator("text")(_not_blank)


class SearchHit(BaseModel):
    vacancy_id: str
    label: str
    score: float = Field(description="Cosine similarity of the embeddings.")
    rank_score: float | None = Field(
        None,
        description="The hybrid query's fused score: Σ 1/(rank + 2) over the dense and the BM25 ranking "
        "(at most 1.0); hits are listed by it.",
    )
    source: str
    snippet: str = Field(
        description="The first 300 characters of the stored text. With tokens set, empty for a vacancy a user "
        "submitted (source feedback) unless the request carries the feedback or admin token."
    )
    created_at: str | None = None


class SearchResponse(BaseModel):
    hits: list[SearchHit]


# ---- feedback --------------------------------------------------------------------------------
class FeedbackCreate(_In):
    prediction_id: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=200)
    comment: str | None = Field(None, max_length=2000)


def _assume_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back stored times without their zone; they were written in UTC. Answers always carry
    the offset, so every ``date-time`` in a response is RFC 3339 as the schema says."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class FeedbackPublic(BaseModel):
    id: int
    prediction_id: str
    vacancy_id: str
    label: str
    comment: str | None
    created_at: datetime
    indexed: bool = Field(description="Whether the corrected vacancy is already in the kNN index.")
    retracted_at: datetime | None = Field(None, description="When the correction was retracted; null while it stands.")

    _utc = field_validator("created_at", "retracted_at")(_assume_utc)


class FeedbackRetracted(FeedbackPublic):
    indexed: bool = Field(description="Whether the kNN index already forgot the correction (else the next reindex).")
    vacancy_label: str | None = Field(
        description="The corrected vacancy's label now: the latest correction of the prediction that still stands, "
        "or null (it left the index and the training set)."
    )


# ---- predictions (the review queue) ----------------------------------------------------------
class PredictionPublic(BaseModel):
    id: str
    external_id: str | None
    created_at: datetime
    text: str = Field(description="The cleaned text that was classified.")
    label: str = Field(description="The top (finest) label, also when the model abstained.")
    display_name: str
    confidence: float
    abstained: bool
    answer: str | None = Field(
        None,
        description="The answer the service gave: `label`, or in a hierarchical taxonomy the parent it fell back "
        "to; null when it abstained.",
    )
    level: int | None = Field(None, description="Depth of `answer`; null when abstained or stored before it was.")
    path: list[str] | None = Field(None, description="Root → `answer`; null when stored before it was.")
    probabilities: list[LabelProbability]
    neighbours: list[NeighbourPublic]
    model_version: str
    language: str | None = Field(None, description="The detected language; null for predictions made before it was.")
    reviewed_label: str | None = Field(description="The latest feedback label; null while unreviewed.")
    reviewed_at: datetime | None
    feedback_count: int = Field(description="Corrections that stand (retracted ones are not counted).")
    reviewed_feedback_id: int | None = Field(
        None, description="Id of the latest correction that stands (`DELETE /v1/feedback/{id}` retracts it)."
    )
    prediction_set: list[str] | None = Field(
        None, description="The conformal prediction set's labels, most probable first; null before it was stored."
    )
    set_size: int | None = None
    margin: float | None = Field(None, description="Top-1 minus top-2 probability.")
    disagreement: float | None = Field(
        None, description="Head/kNN disagreement: total variation distance of their probabilities (0 … 1)."
    )

    _utc = field_validator("created_at", "reviewed_at")(_assume_utc)


PredictionOrder = Literal["newest", "uncertainty", "margin", "set_size", "disagreement"]


class PredictionsResponse(BaseModel):
    predictions: list[PredictionPublic] = Field(description="In the order asked for (newest first by default).")
    order: PredictionOrder = "newest"


# ---- admin: jobs, reindex, retrain, activation ---------------------------------------------------
class ReindexPublic(BaseModel):
    collection: str
    previous: str | None
    count: int
    seconds: float
    rate: float = Field(description="Vacancies indexed per second.")
    caught_up: int = Field(description="Vacancies labelled while the rebuild ran, written again just before the swap.")


class RetrainRequest(_In):
    margin: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Promote if challenger accuracy ≥ champion accuracy − margin (default: the setting).",
    )
    target_accuracy: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Choose per-class thresholds so that automated answers reach this accuracy on the hold-out "
        "(default: JOBCLASS_TARGET_ACCURACY; unset: the conformal abstain rule).",
    )


class OperatingPointPublic(BaseModel):
    """How a model version answers on its hold-out under its abstain rule."""

    rule: Literal["conformal", "operating_point"] = Field(
        description="conformal: abstain unless the set is the top label alone; operating_point: per-class thresholds."
    )
    target_accuracy: float | None = Field(description="The automation target; null under the conformal rule.")
    share_automated: float | None = Field(description="Share of hold-out answers that do not abstain.")
    accuracy_automated: float | None = Field(description="Accuracy of those answers.")
    global_share_automated: float | None = Field(
        None, description="Share automated by one global threshold at the same target (for comparison)."
    )
    global_accuracy_automated: float | None = None
    coverage_target: float = Field(description="JOBCLASS_COVERAGE when the sets were calibrated.")
    empirical_coverage: float | None = Field(
        description="Share of hold-out rows whose set holds the true label, calibrating on random halves of the "
        "hold-out and measuring on the other halves."
    )
    mean_set_size: float | None
    n_holdout: int | None
    mondrian_classes: int = Field(0, description="Classes with their own (class-conditional) threshold.")


class ScoresPublic(BaseModel):
    accuracy: float
    macro_f1: float


class RetrainPublic(BaseModel):
    version: str = Field(description="The challenger; registered whether it was promoted or not.")
    champion: str | None
    active: str = Field(description="The version active after the retrain.")
    promoted: bool
    reason: str
    margin: float
    n_examples: int
    n_feedback: int
    n_train: int
    n_val: int = Field(description="Size of the validation set both models were scored on.")
    challenger_scores: ScoresPublic
    champion_scores: ScoresPublic | None
    seconds: float
    operating_point: OperatingPointPublic | None = None


class CalibrateRequest(_In):
    target_accuracy: float | None = Field(
        None, gt=0.0, lt=1.0, description="Automation target; null: the conformal abstain rule."
    )


class UpgradeEncoderRequest(RetrainRequest):
    """A retrain's promotion margin, plus the fine-tuning options."""

    objective: Objective = Field(
        "triplets",
        description=(
            "Fine-tuning objective: label-aware MNRL on hard-negative triplets, supervised contrastive (supcon), "
            "or a margin softmax over class proxies (softmax)."
        ),
    )
    epochs: float = Field(
        1.0, gt=0.0, le=50.0, description="Passes over the training examples (early stopping may end sooner)."
    )
    batch_size: int = Field(32, ge=2, le=1024)
    max_pairs_per_class: int = Field(200, ge=1, description="Triplets: anchor/positive pairs sampled per class.")
    seed: int = 20240601


class UpgradeEncoderPublic(BaseModel):
    encoder_version: str = Field(description="The fine-tuned encoder; registered whether it was promoted or not.")
    model_version: str = Field(description="The head trained on it.")
    collection: str
    promoted: bool
    reason: str
    champion: str | None
    challenger_scores: ScoresPublic
    champion_scores: ScoresPublic | None
    n_finetune: int
    n_val: int
    seconds: float


class RollbackEncoderPublic(BaseModel):
    rolled_back: str = Field(description="The encoder version that was active; now retired.")
    encoder: str = Field(description="The encoder in use now: its parent (a registered version or the base model).")
    model_version: str
    collection: str
    retrained: bool = Field(description="True when no head of that encoder was on record and one was trained.")
    count: int = Field(description="Labelled vacancies re-embedded.")
    seconds: float


class JobProgress(BaseModel):
    done: int
    total: int | None
    rate: float | None = Field(description="Items per second since the job started.")


class JobPublic(BaseModel):
    id: str
    kind: Literal["reindex", "retrain", "upgrade-encoder", "rollback-encoder"]
    status: Literal["queued", "running", "succeeded", "failed", "interrupted"] = Field(
        description="interrupted: the process that ran it stopped first (the reason is in error)."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    progress: JobProgress
    result: ReindexPublic | RetrainPublic | UpgradeEncoderPublic | RollbackEncoderPublic | None
    error: str | None


class JobsResponse(BaseModel):
    jobs: list[JobPublic]


class ActivationPublic(BaseModel):
    active: str
    previous: str | None


# ---- models, taxonomy, health ----------------------------------------------------------------
class ModelVersionPublic(BaseModel):
    version: str
    created_at: str
    embedder: str
    active: bool
    parent: str | None = None
    data_hash: str | None = None
    n_train: int | None = None
    params: dict[str, Any]
    metrics: dict[str, Any]
    variant_bytes: dict[str, int] = {}
    lexical: dict[str, int] | None = None  # the lexical model's size on disk (bytes) and feature count
    operating_point: OperatingPointPublic | None = Field(
        None, description="Prediction sets and automation on the hold-out; null for versions trained before them."
    )


class ModelsResponse(BaseModel):
    active: str | None
    variant: str
    models: list[ModelVersionPublic]


class TaxonomyLabel(BaseModel):
    label: str
    display_name: str
    parent: str | None = Field(None, description="The parent label in a hierarchical taxonomy; null for a root.")
    leaf: bool = Field(True, description="Whether vacancies can be labelled (and corrected) with it: no children.")


class TaxonomyPublic(BaseModel):
    digest: str
    labels: list[TaxonomyLabel]


class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class HealthPublic(BaseModel):
    status: str
    database: ComponentHealth
    vector_store: ComponentHealth
    model: ComponentHealth
    rss_bytes: int | None = Field(None, description="Resident memory of the server process (Linux), for load tests.")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: what is wrong and, for bad input, which field."""

    detail: str
    field: str | None = None
    errors: list[FieldError] | None = Field(None, description="Every invalid field (422 on a request body).")
