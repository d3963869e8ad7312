"""Train and retrain the classifier on every labelled vacancy; promote a challenger only if it is not worse.

Validation is a hold-out picked by hashing the vacancy id (``app.services.dataset.holdout_of``): it stays
put as data grows and no model version trains on it, so the champion and a challenger are compared on
examples that neither has seen. The head and the fusion parameters are fitted on the training part; at
serving time the kNN vote still sees every labelled vacancy in the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import ModelVersion, Vacancy
from app.errors import Conflict, NotFound
from app.runtime import Runtime
from app.services.dataset import HoldOut, LabelledSet, holdout_of, read_labelled, require_classes, require_holdout
from app.services.jobs import Job
from app.services.promotion import (
    as_served,
    champion,
    decide_promotion,
    holdout_probabilities,
    score_on_holdout,
    scores_of,
)
from app.services.uncertainty import summary as uncertainty_summary
from app.services.uncertainty import uncertainty_for
from app.settings import Settings
from indexing.cache import encode_cached, encode_in_steps
from indexing.sparse import to_csr
from models.classifier import FusedClassifier
from models.registry import ModelDamaged, RegistryError
from models.training import TextInputs, TrainReport, train_classifier

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainResult:
    version: str
    n_examples: int
    metrics: dict[str, Any]
    params: dict[str, Any]
    uncertainty: dict[str, Any] | None = None  # app.services.uncertainty.summary of the new version


@dataclass(frozen=True)
class RetrainResult:
    version: str  # the challenger: registered whether it was promoted or not
    champion: str | None
    active: str
    promoted: bool
    reason: str
    margin: float
    n_examples: int
    n_feedback: int
    n_train: int
    n_val: int
    challenger_scores: dict[str, float]  # accuracy and macro-F1 on the shared validation set
    champion_scores: dict[str, float] | None
    seconds: float
    operating_point: dict[str, Any] | None = None  # app.services.uncertainty.summary of the challenger


@dataclass(frozen=True)
class ActivationResult:
    active: str
    previous: str | None


@dataclass(frozen=True)
class _Fit:
    classifier: FusedClassifier
    report: TrainReport
    data: LabelledSet
    x: np.ndarray
    split: HoldOut
    inputs: TextInputs


def data_hash(rows: list[tuple[str, str, str]]) -> str:
    digest = hashlib.sha256()
    for vid, label, thash in sorted(rows):
        digest.update(f"{vid}\t{label}\t{thash}\n".encode())
    return digest.hexdigest()[:16]


def train(
    runtime: Runtime,
    session: Session,
    *,
    show_progress: bool = False,
    activate: bool = True,
    progress: Progress | None = None,
    target_accuracy: float | None = None,
) -> TrainResult:
    """Train a new version on every labelled vacancy and (by default) make it active unconditionally.
    Its prediction sets are calibrated on the hold-out, with an automation operating point for
    ``target_accuracy`` (default: the setting ``target_accuracy``; none: the conformal abstain rule)."""
    fit = _fit(runtime, session, show_progress=show_progress, progress=progress)
    served = as_served(fit.classifier, runtime.settings.head_variant)
    probs = holdout_probabilities(served, fit.x, fit.data.y, fit.split, fit.inputs)
    block = _uncertainty(runtime, fit, probs, target_accuracy)
    version, meta = _register(runtime, session, fit, parent=runtime.registry.active_version(), uncertainty=block)
    if activate:
        switch_model(runtime, session, version, fit.classifier, meta)
    return TrainResult(
        version, len(fit.data), fit.report.to_dict(), fit.classifier.params.to_dict(), uncertainty_summary(block)
    )


def retrain(
    runtime: Runtime,
    session: Session,
    margin: float | None = None,
    *,
    progress: Progress | None = None,
    target_accuracy: float | None = None,
) -> RetrainResult:
    """Train a challenger on every labelled vacancy (ingested and feedback-corrected), score it and the
    active champion on the same validation set (the hold-out, neighbours drawn from the training part),
    and promote it only if its accuracy ≥ the champion's − ``margin`` (default: the setting
    ``promotion_margin``). Both are scored in the served head variant. The challenger is registered
    either way, with the comparison in its metrics, and its prediction sets and operating point
    (``target_accuracy``, default the setting) calibrated on the hold-out."""
    start = time.perf_counter()
    margin = runtime.settings.promotion_margin if margin is None else margin
    champ, why_none = champion(runtime)
    fit = _fit(runtime, session, progress=progress)
    served = as_served(fit.classifier, runtime.settings.head_variant)
    probs = holdout_probabilities(served, fit.x, fit.data.y, fit.split, fit.inputs)
    challenger_scores = scores_of(probs, fit.data.y[fit.split.val], fit.classifier.labels)
    block = _uncertainty(runtime, fit, probs, target_accuracy)
    promotion = decide_promotion(
        champ,
        why_none,
        fit.classifier.labels,
        challenger_scores,
        lambda c: score_on_holdout(c, fit.x, fit.data.y, fit.split, fit.inputs),
        margin,
        n_val=len(fit.split.val),
    )
    promoted, reason = promotion["promoted"], promotion["reason"]
    parent = champ.version if champ else runtime.registry.active_version()
    version, meta = _register(runtime, session, fit, parent=parent, extra={"promotion": promotion}, uncertainty=block)
    if promoted:
        switch_model(runtime, session, version, fit.classifier, meta)
    log.info("retrained %s: %s (%s)", version, "promoted" if promoted else "kept the champion", reason)
    return RetrainResult(
        version=version,
        champion=champ.version if champ else None,
        active=version if promoted else (champ.version if champ else version),
        promoted=promoted,
        reason=reason,
        margin=margin,
        n_examples=len(fit.data),
        n_feedback=sum(v.source == "feedback" for v in fit.data.vacancies),
        n_train=len(fit.split.train),
        n_val=len(fit.split.val),
        challenger_scores=challenger_scores,
        champion_scores=promotion["champion_scores"],
        seconds=time.perf_counter() - start,
        operating_point=uncertainty_summary(block),
    )


def activate(runtime: Runtime, session: Session, version: str) -> ActivationResult:
    """Make ``version`` active (rollback or roll forward) in the registry, the database and the running
    runtime. A version trained on another embedder or label set is refused."""
    try:
        classifier, meta = runtime.registry.load(version, variant=runtime.settings.head_variant)
    except ModelDamaged:
        raise  # its message names the damaged file: not "unknown"
    except (RegistryError, FileNotFoundError) as exc:
        raise NotFound(f"unknown model version {version!r}", field="version") from exc
    if meta.get("embedding") != runtime.settings.embedding_signature:
        raise Conflict(
            f"model {version} was trained on embeddings {meta.get('embedding')}, but the settings give "
            f"{runtime.settings.embedding_signature}: activate a version trained on this embedder"
        )
    if classifier.labels != list(runtime.taxonomy.leaves):
        raise Conflict(f"model {version} was trained on another label set than the taxonomy in use")
    previous = runtime.registry.active_version()
    switch_model(runtime, session, version, classifier, meta)
    return ActivationResult(version, previous)


def activate_version(runtime: Runtime, session: Session, version: str) -> None:
    """Mark ``version`` active in the database and the registry (the running model is not touched).

    The database row is written (flushed, not committed) first, then the registry marker flips, then
    the transaction commits: if the registry refuses (unknown version) the database is rolled back,
    so the two never disagree about a version that could not be activated.
    """
    runtime.registry.metadata(version)  # unknown version: RegistryError before anything is written
    try:
        session.execute(update(ModelVersion).values(is_active=ModelVersion.id == version))
        session.flush()
        runtime.registry.activate(version)
    except Exception:
        session.rollback()
        raise
    session.commit()


# ---- internals ---------------------------------------------------------------------------------
def _fit(runtime: Runtime, session: Session, *, show_progress: bool = False, progress: Progress | None = None) -> _Fit:
    data = read_labelled(session, runtime.taxonomy.leaves)
    require_classes(data, "training", ": run `jobclass ingest`")
    x = _embed(runtime, data.texts, show_progress, progress)
    split = holdout_of(data, runtime.settings)
    require_holdout(split, "training")
    inputs = text_inputs(runtime, data.texts)
    classifier, report = train_on_holdout(runtime, x, data.y, data.labels, split, inputs=inputs)
    return _Fit(classifier, report, data, x, split, inputs)


def text_inputs(runtime: Runtime, texts: Sequence[str]) -> TextInputs:
    """The rows' cleaned texts (the lexical model) and their BM25 document and query vectors, as the
    index stores and queries them (the hybrid vote), for training and hold-out scoring."""
    encoder = runtime.lexical_encoder
    docs, queries = to_csr(encoder.documents(texts), encoder.queries(texts))
    return TextInputs(list(texts), docs, queries)


def train_on_holdout(
    runtime: Runtime,
    x: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    split: HoldOut,
    *,
    tune_on_va: bool = False,
    inputs: TextInputs | None = None,
) -> tuple[FusedClassifier, TrainReport]:
    """A head (and fusion) trained on ``tr`` with the service's settings, validated on the hold-out ``va``.

    ``tune_on_va``: early-stop the head and tune the fusion on ``va`` instead of cross-validating on ``tr``,
    then refit the head on ``tr`` + ``va`` (for vectors from an encoder fine-tuned on ``tr``, where
    out-of-fold predictions over ``tr`` flatter; ``va`` is then not a hold-out for comparisons).
    ``inputs`` (the rows' texts and BM25 vectors) bring the lexical model and the hybrid vote."""
    settings = runtime.settings
    tr, va = split.train, split.val
    return train_classifier(
        x[tr],
        y[tr],
        labels,
        x_val=x[va],
        y_val=y[va],
        seed=settings.seed,
        abstain_threshold=settings.abstain_threshold,
        # by default the hold-out stays unseen by every version: comparisons between versions are fair
        refit=tune_on_va,
        crossfit=0 if tune_on_va else settings.fusion_crossfit,
        inputs=inputs.take(tr) if inputs is not None else None,
        inputs_val=inputs.take(va) if inputs is not None else None,
    )


def _embed(runtime: Runtime, texts: list[str], show_progress: bool, progress: Progress | None) -> np.ndarray:
    if progress is None:
        return encode_cached(runtime.encoder, texts, runtime.cache, show_progress=show_progress)
    return encode_in_steps(runtime.encoder, texts, runtime.cache, runtime.settings.index_batch_size, progress)


def _uncertainty(runtime: Runtime, fit: _Fit, probs: np.ndarray, target_accuracy: float | None) -> dict[str, Any]:
    target = runtime.settings.target_accuracy if target_accuracy is None else target_accuracy
    y_val, labels = fit.data.y[fit.split.val], fit.classifier.labels
    return uncertainty_for(runtime, probs, y_val, labels, target, fit.report.calibration)


def _register(
    runtime: Runtime,
    session: Session,
    fit: _Fit,
    *,
    parent: str | None,
    extra: dict[str, Any] | None = None,
    uncertainty: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    metrics = {**fit.report.to_dict(), **(extra or {})}
    return register_head(
        runtime,
        session,
        fit.classifier,
        runtime.settings,
        fit.data.vacancies,
        metrics,
        parent=parent,
        dim=fit.x.shape[1],
        uncertainty=uncertainty,
        calibration=fit.report.calibration,
    )


def register_head(
    runtime: Runtime,
    session: Session,
    classifier: FusedClassifier,
    settings: Settings,
    vacancies: Sequence[Vacancy],
    metrics: dict[str, Any],
    *,
    parent: str | None,
    dim: int,
    encoder_version: str | None = None,
    uncertainty: dict[str, Any] | None = None,
    calibration: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Save a head in the registry and record it in ``model_versions`` (not yet active): the one place a
    head version is registered. ``settings`` name the embedder it was trained on; ``vacancies`` are
    its training data (hashed); ``encoder_version``: the fine-tuned encoder it belongs to, if any;
    ``uncertainty``: its prediction-set calibration and operating point (``app.services.uncertainty``)."""
    metadata: dict[str, Any] = {
        "embedder": settings.embedding_model,
        "embedding": settings.embedding_signature,
        **({"encoder_version": encoder_version} if encoder_version is not None else {}),
        "embedder_dim": int(dim),
        "taxonomy_hash": runtime.taxonomy.digest,
        "data_hash": data_hash([(v.id, v.label or "", v.text_hash) for v in vacancies]),
        "metrics": metrics,
        "parent": parent,
        "n_train": len(vacancies),
        "validation": "holdout",
        **({"uncertainty": uncertainty} if uncertainty is not None else {}),
    }
    # The row is flushed first (a database outage fails here, before anything is on disk), the folder is
    # written, then the row commits; a failed commit discards the folder: no version without a row.
    version = runtime.registry.new_version_id()
    session.add(
        ModelVersion(
            id=version,
            embedder=settings.embedding_model,
            taxonomy_hash=runtime.taxonomy.digest,
            data_hash=metadata["data_hash"],
            n_train=len(vacancies),
            metrics=metrics,
            params=classifier.params.to_dict(),
            parent=parent,
            is_active=False,
        )
    )
    saved = False
    try:
        session.flush()
        runtime.registry.save(classifier, metadata, version, calibration=calibration)
        saved = True
        session.commit()
    except BaseException:
        if saved:
            try:
                runtime.registry.discard(version)
            except Exception:
                log.exception("model %s has no database row and could not be discarded", version)
        with contextlib.suppress(Exception):  # the database may be gone: the original error is the news
            session.rollback()
        raise
    return version, runtime.registry.metadata(version)


def switch_model(
    runtime: Runtime, session: Session, version: str, classifier: FusedClassifier, meta: dict[str, Any]
) -> None:
    """Registry marker, database flags and the running model switch together, one switch at a time."""
    with runtime.model_lock:
        activate_version(runtime, session, version)
        runtime.set_model(classifier, version, meta)


def start_retrain(runtime: Runtime, margin: float | None = None, target_accuracy: float | None = None) -> Job:
    """Retrain in a background job (one at a time); classification goes on with the champion meanwhile."""

    def run(progress: Progress) -> RetrainResult:
        with runtime.sessions() as session:
            return retrain(runtime, session, margin, progress=progress, target_accuracy=target_accuracy)

    return runtime.jobs.submit("retrain", run)
