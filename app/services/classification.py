"""Classify vacancies: clean → embed (one batched call) → neighbours (one batched hybrid query: dense +
BM25 prefetches fused by RRF) → fused probabilities → stored.

The answer: with a flat taxonomy, the most probable label, or none (abstained) below the abstain
threshold; ``level`` 0 and ``path`` [label]. With a hierarchical one (``app.taxonomy``), the model's
probabilities over the leaves are rolled up the tree and the answer descends from the roots while the
rolled-up probability reaches ``JOBCLASS_HIERARCHY_THRESHOLD`` (``models.hierarchy``): it may be a parent
(``level`` its depth, ``path`` root → it), and abstains only when no root reaches it. ``probabilities``
and ``confidence`` stay those of the leaves."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db import Prediction, new_id
from app.errors import InvalidInput
from app.runtime import Runtime
from indexing.cache import text_hash
from indexing.clean import clean_text, scrub_names
from indexing.extract import ExtractingEncoder, Extraction
from indexing.language import UNDETERMINED, detect_language
from indexing.sparse import SparseVector
from indexing.store import Hit, StoreError
from models.classifier import FusedClassifier, Neighbour
from models.conformal import Decision
from models.hierarchy import Answer
from models.training import MAX_K

log = logging.getLogger(__name__)
SHOWN_NEIGHBOURS = 5


@dataclass(frozen=True)
class ClassifyItem:
    text: str
    id: str | None = None


@dataclass(frozen=True)
class LabelProbability:
    label: str
    display_name: str
    probability: float


@dataclass
class Classification:
    id: str | None
    label: str | None
    confidence: float
    abstained: bool
    probabilities: list[LabelProbability]
    neighbours: list[Hit]
    model_version: str
    index_used: bool
    prediction_id: str | None = None
    stored: bool = False
    language: str = UNDETERMINED  # indexing.language's guess for the cleaned text
    level: int | None = None  # depth of ``label`` in the taxonomy (0: a root; flat taxonomies: 0); None when abstained
    path: list[str] = field(default_factory=list)  # root → label; empty when abstained
    cleaned_text: str = field(default="", repr=False)  # what is stored: scrubbed unless JOBCLASS_STORE_RAW_TEXT
    extraction: Extraction | None = field(default=None, repr=False)  # when an extractor is configured
    extracted_from: str = field(default="", repr=False)  # the text the span offsets refer to; never stored
    # uncertainty (models.conformal): the prediction set (most probable first, may be empty), why the answer
    # abstained (None: it did not), top-1 − top-2 probability, head/kNN disagreement (None without neighbours)
    prediction_set: list[LabelProbability] = field(default_factory=list)
    abstain_reason: str | None = None
    margin: float = 0.0
    disagreement: float | None = None


def clean_items(runtime: Runtime, items: Sequence[ClassifyItem], *, batch: bool = False) -> list[str]:
    """The cleaned texts; an unusable one is a 422 naming its field (``items[i].text`` in a batch)."""
    limit = runtime.settings.max_text_chars
    cleaned = []
    for i, item in enumerate(items):
        where = f"items[{i}].text" if batch else "text"
        if len(item.text) > limit:
            raise InvalidInput(f"text is {len(item.text)} characters; the limit is {limit}", field=where)
        text = clean_text(item.text, max_chars=runtime.settings.clean_max_chars)
        if not text:
            raise InvalidInput("text is empty after cleaning (no words left)", field=where)
        cleaned.append(text)
    return cleaned


def extract_and_scrub(runtime: Runtime, texts: list[str]) -> tuple[list[str], list[Extraction] | None]:
    """With an extractor configured: extract from the cleaned texts and replace the person names it
    found with ``[NAME]``. Without one: the texts as they are."""
    extractor = runtime.extractor
    if extractor is None:
        return texts, None
    extractions = extractor.extract(texts)
    return [scrub_names(t, e.persons) for t, e in zip(texts, extractions, strict=True)], extractions


def stored_texts(runtime: Runtime, items: Sequence[ClassifyItem], scrubbed: list[str]) -> list[str]:
    """The texts written to the database: scrubbed, unless ``JOBCLASS_STORE_RAW_TEXT`` allows personal data."""
    if not runtime.settings.store_raw_text:
        return scrubbed
    return [clean_text(i.text, max_chars=runtime.settings.clean_max_chars, scrub=False) for i in items]


class HybridSearcher(Protocol):
    """What answers the neighbour query: the vector store, or a bulk run's in-memory copy of it
    (``indexing.memory_index.MemoryIndex``)."""

    def hybrid_search_many(self, dense: np.ndarray, sparse: Sequence[SparseVector], k: int) -> list[list[Hit]]: ...


def classify(
    runtime: Runtime,
    session: Session | None,
    items: Sequence[ClassifyItem],
    top_k: int = 5,
    *,
    batch: bool = False,
    index: HybridSearcher | None = None,
) -> list[Classification]:
    """Classify a batch with one embedding call and one batched neighbour query, then store one
    prediction row per item (``stored`` says whether that write happened). ``batch``: the items
    came as a batch request (errors name ``items[i].text``). ``index``: where the neighbours come from
    (default: the runtime's vector store)."""
    cleaned = clean_items(runtime, items, batch=batch)
    texts, extractions = extract_and_scrub(runtime, cleaned)
    loaded = runtime.model  # one reference for the whole batch, even if a new model is swapped in
    classifier = loaded.classifier
    encoder = runtime.encoder
    if extractions is not None and isinstance(encoder, ExtractingEncoder):  # extracted once, not twice
        vectors = encoder.encode_extracted(texts, extractions)
    else:
        vectors = encoder.encode(texts)
    kept = stored_texts(runtime, items, texts)
    # as many hybrid candidates as training drew (models.training.MAX_K): the vote re-orders them itself
    k = max(MAX_K, classifier.params.k, SHOWN_NEIGHBOURS)
    hits: list[list[Hit]] | None
    try:
        hits = (index or runtime.store).hybrid_search_many(vectors, runtime.lexical.queries(texts), k)
    except StoreError as exc:  # index unavailable (or of the old layout): the head answers alone
        log.warning("vector store unavailable, classifying with the head alone: %s", exc)
        hits = None
    neighbours = (
        None
        if hits is None
        else [[Neighbour(h.label, h.score, h.labelled_at, h.rank_score) for h in row] for row in hits]
    )
    signals = classifier.signals(vectors, neighbours, texts)  # texts: the lexical signal
    probs = classifier.fuse_signals(signals, neighbours)
    decisions = loaded.rule.decide(probs, runtime.settings.abstain_threshold)
    if neighbours is not None:
        decisions = [
            follow_human_label(classifier, d, probs[i], row)
            for i, (d, row) in enumerate(zip(decisions, neighbours, strict=True))
        ]
    disagreement = signals.head_knn_disagreement()
    answers = hierarchical_answers(runtime, classifier, probs)
    top_k = max(1, min(top_k, classifier.n_classes))
    results = []
    for i, item in enumerate(items):
        order = np.argsort(-probs[i])[:top_k]
        best = int(order[0])
        confidence = float(probs[i, best])
        decision = decisions[i]
        abstained = decision.abstained  # the prediction-set rule (models.conformal.UncertaintyRule)
        label = None if abstained else classifier.labels[best]
        level, path = (None, []) if label is None else (0, [label])
        if answers is not None:  # a hierarchical taxonomy: fall back to a parent instead of abstaining
            label, level, path = answers[i].label, answers[i].level, list(answers[i].path)
            abstained = label is None
        results.append(
            Classification(
                id=item.id,
                label=label,
                confidence=confidence,
                abstained=abstained,
                level=level,
                path=path,
                probabilities=[
                    LabelProbability(
                        classifier.labels[j],
                        runtime.taxonomy.display_name(classifier.labels[j]),
                        float(probs[i, j]),
                    )
                    for j in order
                ],
                neighbours=hits[i][:SHOWN_NEIGHBOURS] if hits is not None else [],
                model_version=loaded.version,
                index_used=hits is not None,
                language=detect_language(texts[i]),
                cleaned_text=kept[i],
                extraction=extractions[i] if extractions is not None else None,
                extracted_from=cleaned[i] if extractions is not None else "",
                prediction_set=[
                    LabelProbability(
                        classifier.labels[j], runtime.taxonomy.display_name(classifier.labels[j]), float(probs[i, j])
                    )
                    for j in decision.prediction_set
                ],
                abstain_reason=decision.reason,
                margin=decision.margin,
                disagreement=disagreement[i],
            )
        )
    if session is not None:
        store_predictions(session, results)
    return results


def hierarchical_answers(runtime: Runtime, classifier: FusedClassifier, probs: np.ndarray) -> list[Answer] | None:
    """Each row's answer in the taxonomy's tree (``models.hierarchy``); None for a flat taxonomy."""
    if not runtime.taxonomy.is_hierarchical:
        return None
    return runtime.taxonomy.hierarchy.answers(probs, classifier.labels, runtime.settings.answer_threshold)


def follow_human_label(
    classifier: FusedClassifier, decision: Decision, probs: np.ndarray, neighbours: Sequence[Neighbour]
) -> Decision:
    """An answer that follows a labelled near-duplicate (the classifier's near-duplicate override: a human
    labelled this very text) does not abstain on the set rule or the class thresholds; the floor still applies."""
    label = classifier.duplicate_label(neighbours)
    if not decision.abstained or decision.reason == "below_floor" or label is None:
        return decision
    if classifier.index[label] != int(np.argmax(probs)):
        return decision
    return replace(decision, abstained=False, reason=None)


def store_predictions(session: Session, results: Sequence[Classification], *, ids: Sequence[str] | None = None) -> None:
    """One prediction row per result, committed together; ``ids`` (one per result) instead of fresh
    ones: a bulk run derives them from its input lines, so a part written again is not stored twice."""
    rows = []
    for n, r in enumerate(results):
        r.prediction_id = ids[n] if ids is not None else new_id()
        rows.append(
            Prediction(
                id=r.prediction_id,
                external_id=r.id,
                text=r.cleaned_text,
                text_hash=text_hash(r.cleaned_text),
                label=r.probabilities[0].label,
                confidence=r.confidence,
                abstained=r.abstained,
                answer=r.label,
                level=r.level,
                path=r.path,
                probabilities=[{"label": p.label, "probability": p.probability} for p in r.probabilities],
                neighbours=[
                    {"vacancy_id": h.vacancy_id, "label": h.label, "score": h.score, "rank_score": h.rank_score}
                    for h in r.neighbours
                ],
                model_version=r.model_version,
                language=r.language,
                prediction_set=[p.label for p in r.prediction_set],
                set_size=len(r.prediction_set),
                margin=r.margin,
                disagreement=r.disagreement,
            )
        )
    try:
        session.add_all(rows)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        log.error("could not store %d prediction(s): %s", len(rows), exc)
        for r in results:
            r.prediction_id, r.stored = None, False
        return
    for r in results:
        r.stored = True
