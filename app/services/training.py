"""Train and retrain the classifier on every labelled vacancy; promote a challenger only if it is not worse.

Validation is a hold-out picked by hashing the vacancy id (``models.training.holdout_split``): it stays
put as data grows and no model version trains on it, so the champion and a challenger are compared on
examples that neither has seen. The head and the fusion parameters are fitted on the training part; at
serving time the kNN vote still sees every labelled vacancy in the index.
"""

from __future__ import annotations

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
from app.errors import Conflict, InvalidInput, NotFound
from app.runtime import LoadedModel, Runtime
from app.services.jobs import Job
from app.services.vacancies import labelled_vacancies
from indexing.cache import encode_cached
from models.classifier import FusedClassifier
from models.registry import RegistryError
from models.training import TrainReport, evaluate, holdout_split, train_classifier

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainResult:
    version: str
    n_examples: int
    metrics: dict[str, Any]
    params: dict[str, Any]


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


@dataclass(frozen=True)
class ActivationResult:
    active: str
    previous: str | None


@dataclass(frozen=True)
class _Fit:
    classifier: FusedClassifier
    report: TrainReport
    vacancies: list[Vacancy]
    x: np.ndarray
    y: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray


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
) -> TrainResult:
    """Train a new version on every labelled vacancy and (by default) make it active unconditionally."""
    fit = _fit(runtime, session, show_progress=show_progress, progress=progress)
    version, meta = _register(runtime, session, fit, parent=runtime.registry.active_version())
    if activate:
        _activate(runtime, session, version, fit.classifier, meta)
    return TrainResult(version, len(fit.vacancies), fit.report.to_dict(), fit.classifier.params.to_dict())


def retrain(
    runtime: Runtime, session: Session, margin: float | None = None, *, progress: Progress | None = None
) -> RetrainResult:
    """Train a challenger on every labelled vacancy (ingested and feedback-corrected), score it and the
    active champion on the same validation set (the hold-out, neighbours drawn from the training part),
    and promote it only if its accuracy ≥ the champion's − ``margin`` (default: the setting
    ``promotion_margin``). Both are scored in the served head variant. The challenger is registered
    either way, with the comparison in its metrics."""
    start = time.perf_counter()
    margin = runtime.settings.promotion_margin if margin is None else margin
    champion, why_none = _champion(runtime)
    fit = _fit(runtime, session, progress=progress)
    x_tr, y_tr = fit.x[fit.train_idx], fit.y[fit.train_idx]
    x_va, y_va = fit.x[fit.val_idx], fit.y[fit.val_idx]
    variant = runtime.settings.head_variant
    served = fit.classifier if fit.classifier.variant == variant else fit.classifier.with_variant(variant)
    challenger_scores = _scores(evaluate(served, x_va, y_va, x_tr, y_tr))
    promotion = decide_promotion(
        champion,
        why_none,
        fit.classifier.labels,
        challenger_scores,
        lambda c: _scores(evaluate(c, x_va, y_va, x_tr, y_tr)),
        margin,
        n_val=len(y_va),
    )
    promoted, reason = promotion["promoted"], promotion["reason"]
    parent = champion.version if champion else runtime.registry.active_version()
    version, meta = _register(runtime, session, fit, parent=parent, extra={"promotion": promotion})
    if promoted:
        _activate(runtime, session, version, fit.classifier, meta)
    log.info("retrained %s: %s (%s)", version, "promoted" if promoted else "kept the champion", reason)
    return RetrainResult(
        version=version,
        champion=champion.version if champion else None,
        active=version if promoted else (champion.version if champion else version),
        promoted=promoted,
        reason=reason,
        margin=margin,
        n_examples=len(fit.vacancies),
        n_feedback=sum(v.source == "feedback" for v in fit.vacancies),
        n_train=len(fit.train_idx),
        n_val=len(fit.val_idx),
        challenger_scores=challenger_scores,
        champion_scores=promotion["champion_scores"],
        seconds=time.perf_counter() - start,
    )


def activate(runtime: Runtime, session: Session, version: str) -> ActivationResult:
    """Make ``version`` active (rollback or roll forward) in the registry, the database and the running
    runtime. A version trained on another embedder or label set is refused."""
    try:
        classifier, meta = runtime.registry.load(version, variant=runtime.settings.head_variant)
    except (RegistryError, FileNotFoundError) as exc:
        raise NotFound(f"unknown model version {version!r}", field="version") from exc
    if meta.get("embedding") != runtime.settings.embedding_signature:
        raise Conflict(
            f"model {version} was trained on embeddings {meta.get('embedding')}, but the settings give "
            f"{runtime.settings.embedding_signature}: activate a version trained on this embedder"
        )
    if classifier.labels != list(runtime.taxonomy.labels):
        raise Conflict(f"model {version} was trained on another label set than the taxonomy in use")
    previous = runtime.registry.active_version()
    _activate(runtime, session, version, classifier, meta)
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
    settings = runtime.settings
    labels = list(runtime.taxonomy.labels)
    index = {label: i for i, label in enumerate(labels)}
    usable = [v for v in labelled_vacancies(session) if v.label in index]
    if len({v.label for v in usable}) < 2:
        raise InvalidInput("training needs labelled vacancies of at least two classes: run `jobclass ingest`")
    x = _embed(runtime, [v.text for v in usable], show_progress, progress)
    y = np.array([index[v.label] for v in usable if v.label is not None], dtype=np.int64)
    tr, va = holdout_split([v.id for v in usable], y, settings.validation_fraction, salt=str(settings.seed))
    if len(va) == 0:
        raise InvalidInput("training needs at least two labelled vacancies of some class for validation")
    classifier, report = train_on_holdout(runtime, x, y, labels, tr, va)
    return _Fit(classifier, report, usable, x, y, tr, va)


def train_on_holdout(
    runtime: Runtime,
    x: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    tr: np.ndarray,
    va: np.ndarray,
    *,
    tune_on_va: bool = False,
) -> tuple[FusedClassifier, TrainReport]:
    """A head (and fusion) trained on ``tr`` with the service's settings, validated on the hold-out ``va``.

    ``tune_on_va``: early-stop the head and tune the fusion on ``va`` instead of cross-validating on ``tr``,
    then refit the head on ``tr`` + ``va`` (for vectors from an encoder fine-tuned on ``tr``, where
    out-of-fold predictions over ``tr`` flatter; ``va`` is then not a hold-out for comparisons)."""
    settings = runtime.settings
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
    )


def _embed(runtime: Runtime, texts: list[str], show_progress: bool, progress: Progress | None) -> np.ndarray:
    if progress is None:
        return encode_cached(runtime.encoder, texts, runtime.cache, show_progress=show_progress)
    step = runtime.settings.index_batch_size
    parts = [np.zeros((0, runtime.encoder.dim), dtype=np.float32)]
    for offset in range(0, len(texts), step):
        parts.append(encode_cached(runtime.encoder, texts[offset : offset + step], runtime.cache))
        progress(min(offset + step, len(texts)), len(texts))
    return np.concatenate(parts)


def _champion(runtime: Runtime) -> tuple[LoadedModel | None, str]:
    """The active model as served, or None and why."""
    if runtime.has_model:
        return runtime.model, ""
    try:
        loaded = runtime.load_active_model()
    except RuntimeError as exc:  # trained on another embedder: the challenger is the migration path
        return None, f"the active model cannot serve these embeddings ({exc})"
    return (loaded, "") if loaded is not None else (None, "no model was active")


def _scores(summary: dict[str, Any]) -> dict[str, float]:
    return {"accuracy": float(summary["accuracy"]), "macro_f1": float(summary["macro_f1"])}


def decide_promotion(
    champion: LoadedModel | None,
    why_none: str,
    labels: Sequence[str],
    challenger_scores: dict[str, float],
    score_champion: Callable[[FusedClassifier], dict[str, float]],
    margin: float,
    *,
    n_val: int,
    challenger_name: str = "challenger",
) -> dict[str, Any]:
    """Promote when there is no comparable champion, or when the challenger's validation accuracy is at
    least the champion's minus ``margin`` (both scored by the caller on the same hold-out)."""
    champion_scores: dict[str, float] | None = None
    if champion is None:
        promoted, reason = True, why_none
    elif list(champion.classifier.labels) != list(labels):
        promoted, reason = True, f"the champion {champion.version} has another label set (taxonomy changed)"
    else:
        champion_scores = score_champion(champion.classifier)
        promoted = challenger_scores["accuracy"] >= champion_scores["accuracy"] - margin
        reason = (
            f"{challenger_name} accuracy {challenger_scores['accuracy']:.4f} "
            f"{'≥' if promoted else '<'} champion {champion_scores['accuracy']:.4f} − margin {margin:g}"
        )
    return {
        "champion": champion.version if champion else None,
        "promoted": promoted,
        "reason": reason,
        "margin": margin,
        "n_val": n_val,
        "challenger": challenger_scores,
        "champion_scores": champion_scores,
    }


def _register(
    runtime: Runtime, session: Session, fit: _Fit, *, parent: str | None, extra: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Save the version in the registry and record it in ``model_versions`` (not yet active)."""
    settings = runtime.settings
    metrics = {**fit.report.to_dict(), **(extra or {})}
    metadata = {
        "embedder": settings.embedding_model,
        "embedding": settings.embedding_signature,
        "embedder_dim": int(fit.x.shape[1]),
        "taxonomy_hash": runtime.taxonomy.digest,
        "data_hash": data_hash([(v.id, v.label or "", v.text_hash) for v in fit.vacancies]),
        "metrics": metrics,
        "parent": parent,
        "n_train": len(fit.vacancies),
        "validation": "holdout",
    }
    version = runtime.registry.save(fit.classifier, metadata)
    session.add(
        ModelVersion(
            id=version,
            embedder=settings.embedding_model,
            taxonomy_hash=runtime.taxonomy.digest,
            data_hash=metadata["data_hash"],
            n_train=len(fit.vacancies),
            metrics=metrics,
            params=fit.classifier.params.to_dict(),
            parent=parent,
            is_active=False,
        )
    )
    session.commit()
    return version, runtime.registry.metadata(version)


def _activate(
    runtime: Runtime, session: Session, version: str, classifier: FusedClassifier, meta: dict[str, Any]
) -> None:
    """Registry marker, database flags and the running model switch together, one switch at a time."""
    with runtime.model_lock:
        activate_version(runtime, session, version)
        runtime.set_model(classifier, version, meta)


def start_retrain(runtime: Runtime, margin: float | None = None) -> Job:
    """Retrain in a background job (one at a time); classification goes on with the champion meanwhile."""

    def run(progress: Progress) -> RetrainResult:
        with runtime.sessions() as session:
            return retrain(runtime, session, margin, progress=progress)

    return runtime.jobs.submit("retrain", run)
