"""Upgrade the encoder: fine-tune → reindex into a new collection → train a head → compare → swap or discard.

The chain, in one call (``jobclass upgrade-encoder``):

1. fine-tune the encoder in use on labelled texts (a CSV, or the labelled vacancies outside the hold-out)
   and register it in the encoder registry as a *candidate* (version id, parent, data hash, metrics);
2. embed every labelled vacancy with it into a **new** collection; the alias keeps pointing at the
   old one, so classification goes on unchanged;
3. train a head on the new vectors (hold-out excluded, as in ``retrain``);
4. score the challenger (new encoder + new head) and the champion (encoder and head in use) on the same
   hold-out, neighbours drawn from the training part of each one's own vectors;
5. promote only if the challenger's accuracy ≥ the champion's − margin: the encoder marker, the head
   marker (registry and database), the alias and the running runtime switch together; otherwise the new
   collection is deleted and the encoder is marked ``rejected`` (weights deleted, record kept).

A fine-tuned encoder never trains on the hold-out vacancies: rows of a training CSV whose id is a
held-out vacancy are dropped, so the comparison stays fair.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.db import ModelVersion, Vacancy, utcnow
from app.encoders import load_encoder
from app.errors import Conflict, InvalidInput
from app.runtime import Runtime
from app.services.index import CATCH_UP_SLACK, _labelled_since, to_points
from app.services.jobs import Job
from app.services.training import (
    _champion,
    _scores,
    activate_version,
    data_hash,
    decide_promotion,
    train_on_holdout,
)
from app.services.vacancies import labelled_vacancies
from app.settings import Settings
from indexing.cache import encode_cached
from indexing.embed import Encoder
from models.classifier import FusedClassifier
from models.registry import EncoderRegistry, RegistryError
from models.training import TrainReport, evaluate, holdout_split, stratified_split

log = logging.getLogger(__name__)
Say = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LabelledTexts:
    ids: list[str]
    texts: list[str]
    labels: list[str]


# (base model, train, val, output folder) -> the finetune.json content; the folder must then hold the encoder.
FinetuneFn = Callable[[str, LabelledTexts, LabelledTexts, Path], dict[str, Any]]
# settings naming the new encoder's folder -> an encoder
EncoderLoader = Callable[[Settings], Encoder]


@dataclass(frozen=True)
class UpgradeResult:
    encoder_version: str
    model_version: str
    collection: str
    promoted: bool
    reason: str
    champion: str | None
    challenger_scores: dict[str, float]
    champion_scores: dict[str, float] | None
    n_finetune: int
    n_val: int
    finetune: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_sentence_embedder(settings: Settings) -> Encoder:
    return load_encoder(settings)


def sentence_transformers_finetune(cfg: Any = None, say: Say = log.info) -> FinetuneFn:
    """The real fine-tuning step (``indexing.finetune``) with ``cfg`` (a ``FinetuneConfig``)."""

    def run(base: str, train: LabelledTexts, val: LabelledTexts, out: Path) -> dict[str, Any]:
        from indexing.finetune import finetune, read_finetune_info

        finetune(base, train.texts, train.labels, val.texts, val.labels, out, cfg, say=say)
        return read_finetune_info(out)

    return run


def upgrade_encoder(
    runtime: Runtime,
    session: Session,
    *,
    train: LabelledTexts | None = None,
    val: LabelledTexts | None = None,
    margin: float | None = None,
    finetune_fn: FinetuneFn | None = None,
    load_encoder: EncoderLoader | None = None,
    say: Say = log.info,
    progress: Progress | None = None,
) -> UpgradeResult:
    start = time.perf_counter()
    load_encoder = load_encoder or load_sentence_embedder
    settings = runtime.settings
    margin = settings.promotion_margin if margin is None else margin
    finetune_fn = finetune_fn or sentence_transformers_finetune(say=say)
    labels = list(runtime.taxonomy.labels)
    index = {label: i for i, label in enumerate(labels)}
    usable = [v for v in labelled_vacancies(session) if v.label in index]
    if len({v.label for v in usable}) < 2:
        raise InvalidInput("an encoder upgrade needs labelled vacancies of at least two classes: run `jobclass ingest`")
    y = np.array([index[v.label] for v in usable if v.label is not None], dtype=np.int64)
    tr, va = holdout_split([v.id for v in usable], y, settings.validation_fraction, salt=str(settings.seed))
    if len(va) == 0:
        raise InvalidInput("an encoder upgrade needs at least two labelled vacancies of some class for validation")
    held_out = {usable[i].id for i in va}
    ft_train, ft_val = _finetune_data(usable, tr, held_out, train, val, settings.seed, say)

    # 1. fine-tune and register the candidate.
    encoders = EncoderRegistry.under(settings.model_dir)
    encoders.root.mkdir(parents=True, exist_ok=True)
    work = encoders.root / f".work-{EncoderRegistry.new_version_id()}"
    try:
        say(f"fine-tuning {settings.embedding_model} on {len(ft_train.texts)} texts (validation {len(ft_val.texts)})")
        info = finetune_fn(settings.embedding_model, ft_train, ft_val, work)
        parent = encoders.active_version() or settings.embedding_model
        enc_version = encoders.register(
            work,
            {
                "parent": parent,
                "base_model": settings.embedding_model,
                "data_hash": data_hash(
                    [(i, lab, t) for i, lab, t in zip(ft_train.ids, ft_train.labels, ft_train.texts, strict=True)]
                ),
                "metrics": info.get("metrics", {}),
                "wall_seconds": info.get("wall_seconds"),
                "texts_per_s": info.get("texts_per_s"),
                "n_train": len(ft_train.texts),
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    new_settings = settings.model_copy(update={"embedding_model": str(encoders.path(enc_version))})
    try:
        new_encoder = load_encoder(new_settings)
    except Exception as exc:
        encoders.reject(enc_version, f"could not be loaded: {exc}")
        raise
    signature = new_settings.embedding_signature

    # 2. a new collection with the new vectors; the alias is not touched yet.
    if not runtime.index_lock.acquire(blocking=False):
        encoders.reject(enc_version, "a reindex was running")
        raise Conflict("a reindex is already running")
    store = runtime.store
    try:
        started_at = utcnow()
        with _new_collection(runtime, new_encoder.dim, signature) as collection:
            say(f"embedding {len(usable)} labelled vacancies into {collection}")
            x_new = _embed(new_encoder, runtime, [v.text for v in usable], progress)
            _write(runtime, usable, x_new, collection)
            # 3. + 4. challenger head on the new vectors; both scored on the hold-out.
            challenger, report = _challenger_head(runtime, usable, x_new, y, labels, (tr, va), ft_train, say)
            variant = settings.head_variant
            served = challenger if challenger.variant == variant else challenger.with_variant(variant)
            challenger_scores = _scores(evaluate(served, x_new[va], y[va], x_new[tr], y[tr]))
            champion, why_none = _champion(runtime)

            def score_with_old_encoder(classifier: FusedClassifier) -> dict[str, float]:
                # the champion on the same hold-out, embedded by the encoder it was trained with
                x_old = _embed(runtime.encoder, runtime, [v.text for v in usable], None)
                return _scores(evaluate(classifier, x_old[va], y[va], x_old[tr], y[tr]))

            promotion = decide_promotion(
                champion,
                why_none,
                labels,
                challenger_scores,
                score_with_old_encoder,
                margin,
                n_val=len(va),
                challenger_name=f"challenger (encoder {enc_version})",
            )
            promotion.update(encoder=enc_version, collection=collection)
            promoted, reason = promotion["promoted"], promotion["reason"]
            parent_model = champion.version if champion else runtime.registry.active_version()
            model_version, meta = _register_head(
                runtime,
                session,
                challenger,
                new_settings,
                usable,
                report.to_dict(),
                promotion,
                parent_model,
                enc_version,
                int(x_new.shape[1]),
            )
            encoders.update(enc_version, model_version=model_version, promotion=promotion)
            if promoted:
                switch = _Switch(new_settings, new_encoder, served, model_version, meta)
                mark = functools.partial(encoders.activate, enc_version)
                _switch_encoder(runtime, session, collection, started_at, switch, mark)
            else:
                store.client.delete_collection(collection)
                encoders.reject(enc_version, reason)
    finally:
        runtime.index_lock.release()
    log.info("encoder upgrade %s: %s (%s)", enc_version, "promoted" if promoted else "discarded", reason)
    return UpgradeResult(
        encoder_version=enc_version,
        model_version=model_version,
        collection=collection,
        promoted=promoted,
        reason=reason,
        champion=champion.version if champion else None,
        challenger_scores=challenger_scores,
        champion_scores=promotion["champion_scores"],
        n_finetune=len(ft_train.texts),
        n_val=len(va),
        finetune={k: info.get(k) for k in ("metrics", "wall_seconds", "train_seconds", "texts_per_s", "steps")},
        seconds=time.perf_counter() - start,
    )


def start_upgrade_encoder(runtime: Runtime, **kwargs: Any) -> Job:
    """The whole chain in a background job of the server: classification goes on meanwhile."""

    def run(progress: Progress) -> UpgradeResult:
        with runtime.sessions() as session:
            return upgrade_encoder(runtime, session, progress=progress, **kwargs)

    return runtime.jobs.submit("upgrade-encoder", run)


@dataclass(frozen=True)
class RollbackResult:
    rolled_back: str  # the encoder version that was active
    encoder: str  # the encoder now in use: a registry version or the base model name
    model_version: str
    collection: str
    retrained: bool  # True when no head of the target encoder was on record and one was trained
    count: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback_encoder(
    runtime: Runtime,
    session: Session,
    *,
    load_encoder: EncoderLoader | None = None,
    say: Say = log.info,
    progress: Progress | None = None,
) -> RollbackResult:
    """Undo the last promoted encoder upgrade: go back to its parent encoder (a registered version, or the
    base model) and the head that served with it, re-embedding every labelled vacancy into a new
    collection first. Encoder, alias and model switch together; the API serves throughout. When the
    parent's head is gone from the registry (or does not fit), a head is trained on the new vectors."""
    start = time.perf_counter()
    load_encoder = load_encoder or load_sentence_embedder
    settings = runtime.settings
    encoders = EncoderRegistry.under(settings.model_dir)
    current = _require_active_encoder(runtime)
    meta = encoders.metadata(current)
    parent = str(meta.get("parent") or meta.get("base_model") or "")
    parent_is_version = bool(parent) and (encoders.root / parent / "metadata.json").is_file()
    if parent_is_version and encoders.metadata(parent).get("status") == "rejected":
        raise Conflict(f"encoder {current}'s parent {parent} was rejected and its weights deleted")
    target = str(encoders.path(parent)) if parent_is_version else str(meta.get("base_model") or parent)
    if not target:
        raise Conflict(f"encoder {current} records no parent to roll back to")
    new_settings = settings.model_copy(update={"embedding_model": target})
    say(f"rolling back encoder {current} to {parent}")
    new_encoder = load_encoder(new_settings)
    signature = new_settings.embedding_signature

    if not runtime.index_lock.acquire(blocking=False):
        raise Conflict("a reindex is already running")
    try:
        started_at = utcnow()
        usable = labelled_vacancies(session)
        with _new_collection(runtime, new_encoder.dim, signature) as collection:
            say(f"embedding {len(usable)} labelled vacancies into {collection}")
            x = _embed(new_encoder, runtime, [v.text for v in usable], progress)
            _write(runtime, usable, x, collection)
            head_version = (meta.get("promotion") or {}).get("champion")
            classifier, head_meta, retrained = None, None, False
            if head_version and _head_fits(runtime, head_version, signature):
                classifier, head_meta = runtime.registry.load(head_version, variant=settings.head_variant)
            if classifier is None or head_meta is None:
                say(f"no head of {parent} on record: training one on the new vectors")
                classifier, head_version, head_meta = _train_head_for(
                    runtime, session, new_settings, usable, x, current, parent
                )
                retrained = True
            assert head_version is not None

            def mark() -> None:
                if parent_is_version:
                    encoders.activate(parent)
                else:
                    encoders.deactivate()
                encoders.update(current, status="retired", rolled_back_at=utcnow().isoformat())

            switch = _Switch(new_settings, new_encoder, classifier, head_version, head_meta)
            _switch_encoder(runtime, session, collection, started_at, switch, mark)
    finally:
        runtime.index_lock.release()
    log.info("encoder %s rolled back to %s (model %s)", current, parent, head_version)
    return RollbackResult(
        rolled_back=current,
        encoder=parent,
        model_version=head_version,
        collection=collection,
        retrained=retrained,
        count=len(usable),
        seconds=time.perf_counter() - start,
    )


def _require_active_encoder(runtime: Runtime) -> str:
    current = EncoderRegistry.under(runtime.settings.model_dir).active_version()
    if current is None:
        raise Conflict(
            f"no fine-tuned encoder is active ({runtime.settings.embedding_model} is in use): nothing to roll back"
        )
    return current


def start_rollback_encoder(runtime: Runtime) -> Job:
    """The rollback in a background job of the server (refused at once when there is nothing to undo)."""
    _require_active_encoder(runtime)

    def run(progress: Progress) -> RollbackResult:
        with runtime.sessions() as session:
            return rollback_encoder(runtime, session, progress=progress)

    return runtime.jobs.submit("rollback-encoder", run)


def _head_fits(runtime: Runtime, version: str, signature: dict[str, str]) -> bool:
    try:
        meta = runtime.registry.metadata(version)
    except RegistryError:
        return False
    return meta.get("embedding") == signature and meta.get("taxonomy_hash") == runtime.taxonomy.digest


def _train_head_for(
    runtime: Runtime,
    session: Session,
    settings: Settings,
    usable: Sequence[Vacancy],
    x: np.ndarray,
    rolled_back: str,
    parent: str,
) -> tuple[FusedClassifier, str, dict[str, Any]]:
    labels = list(runtime.taxonomy.labels)
    index = {label: i for i, label in enumerate(labels)}
    keep = [i for i, v in enumerate(usable) if v.label in index]
    if len({usable[i].label for i in keep}) < 2:
        raise InvalidInput("a head needs labelled vacancies of at least two classes")
    kept = [usable[i] for i in keep]
    y = np.array([index[v.label] for v in kept if v.label is not None], dtype=np.int64)
    tr, va = holdout_split([v.id for v in kept], y, settings.validation_fraction, salt=str(settings.seed))
    classifier, report = train_on_holdout(runtime, x[keep], y, labels, tr, va)
    promotion = {"promoted": True, "reason": f"rollback of encoder {rolled_back} to {parent}", "champion": None}
    version, meta = _register_head(
        runtime,
        session,
        classifier,
        settings,
        kept,
        report.to_dict(),
        promotion,
        runtime.registry.active_version(),
        parent,
        int(x.shape[1]),
    )
    return classifier, version, meta


# ---- internals -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Switch:
    """What goes live together with a new collection: the settings naming the encoder, the encoder, the head."""

    settings: Settings
    encoder: Encoder
    classifier: FusedClassifier
    model_version: str
    metadata: dict[str, Any]


@contextmanager
def _new_collection(runtime: Runtime, dim: int, signature: dict[str, str]) -> Iterator[str]:
    """A new collection (the caller holds the index lock); deleted again if the block fails before
    the alias points at it, so the old collection keeps serving."""
    store = runtime.store
    collection = store.create_version(dim, {"embedding": signature})
    try:
        yield collection
    except BaseException:
        if store.active_collection() != collection:
            store.client.delete_collection(collection)
        raise


def _switch_encoder(
    runtime: Runtime,
    session: Session,
    collection: str,
    started_at: datetime,
    switch: _Switch,
    mark_encoder: Callable[[], None],
) -> None:
    """Write again what was labelled while the collection was built, then switch the encoder marker
    (``mark_encoder``), the active head, the alias and the running runtime together."""
    late = _labelled_since(session, started_at - CATCH_UP_SLACK)
    _write(runtime, late, None, collection, switch.encoder)
    with runtime.model_lock:
        mark_encoder()
        activate_version(runtime, session, switch.model_version)
        runtime.store.swap_alias(collection)
        runtime.switch_embedder(
            switch.settings, switch.encoder, switch.classifier, switch.model_version, switch.metadata
        )


def _challenger_head(
    runtime: Runtime,
    usable: Sequence[Vacancy],
    x: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    split: tuple[np.ndarray, np.ndarray],
    ft_train: LabelledTexts,
    say: Say,
) -> tuple[FusedClassifier, TrainReport]:
    """The challenger's head and fusion on the fine-tuned vectors of the training rows (``split``: training
    rows, hold-out).

    The new encoder took gradients from most of those rows: out-of-fold predictions over them would flatter
    both the head and the kNN vote (their classes were pulled together) and mis-tune the fusion. So the
    head stops early and the fusion is tuned on the training rows the encoder never trained on (its
    early-stopping slice), which it sees as it will see a new vacancy; then the head is refit on every
    training row. The hold-out stays untouched for the comparison. Without such rows (fine-tuning data
    from elsewhere), the usual out-of-fold tuning applies."""
    tr, va = split
    trained_on = set(ft_train.ids)
    seen = np.array([i for i in tr if usable[i].id in trained_on], dtype=np.int64)
    unseen = np.array([i for i in tr if usable[i].id not in trained_on], dtype=np.int64)
    if len(seen) < 2 or len(unseen) == 0 or len(np.unique(y[seen])) < 2:
        return train_on_holdout(runtime, x, y, labels, tr, va)
    say(f"tuning the challenger's fusion on {len(unseen)} training rows the new encoder never trained on")
    classifier, report = train_on_holdout(runtime, x, y, labels, seen, unseen, tune_on_va=True)
    report.metrics["fusion_tuning"] = {"on": "rows_the_encoder_did_not_train_on", "n": len(unseen)}
    return classifier, report


def _finetune_data(
    usable: Sequence[Vacancy],
    tr: np.ndarray,
    held_out: set[str],
    train: LabelledTexts | None,
    val: LabelledTexts | None,
    seed: int,
    say: Say,
) -> tuple[LabelledTexts, LabelledTexts]:
    if train is None:
        picked = [usable[i] for i in tr]
        train = LabelledTexts([v.id for v in picked], [v.text for v in picked], [v.label or "" for v in picked])
    else:
        keep = [i for i, vid in enumerate(train.ids) if vid not in held_out]
        if len(keep) < len(train.ids):
            say(
                f"dropped {len(train.ids) - len(keep)} training rows that are held-out vacancies "
                "(kept out for the comparison)"
            )
        train = LabelledTexts(
            [train.ids[i] for i in keep], [train.texts[i] for i in keep], [train.labels[i] for i in keep]
        )
    if len(set(train.labels)) < 2:
        raise InvalidInput("fine-tuning needs labelled texts of at least two classes", field="train")
    if val is None:  # early stopping on a slice of the fine-tuning data, never on the hold-out
        classes = sorted(set(train.labels))
        yy = np.array([classes.index(lab) for lab in train.labels])
        t_idx, v_idx = stratified_split(yy, 0.1, seed)
        if len(v_idx) == 0:
            raise InvalidInput("too few labelled texts to carve a validation slice for early stopping", field="train")
        val = LabelledTexts(
            *(list(np.array(col, dtype=object)[v_idx]) for col in (train.ids, train.texts, train.labels))
        )
        train = LabelledTexts(
            *(list(np.array(col, dtype=object)[t_idx]) for col in (train.ids, train.texts, train.labels))
        )
    else:
        keep = [i for i, vid in enumerate(val.ids) if vid not in held_out]
        val = LabelledTexts([val.ids[i] for i in keep], [val.texts[i] for i in keep], [val.labels[i] for i in keep])
    return train, val


def _embed(encoder: Encoder, runtime: Runtime, texts: list[str], progress: Progress | None) -> np.ndarray:
    step = runtime.settings.index_batch_size
    parts = [np.zeros((0, encoder.dim), dtype=np.float32)]
    for offset in range(0, len(texts), step):
        parts.append(encode_cached(encoder, texts[offset : offset + step], runtime.cache))
        if progress:
            progress(min(offset + step, len(texts)), len(texts))
    return np.concatenate(parts)


def _write(
    runtime: Runtime,
    vacancies: Sequence[Vacancy],
    vectors: np.ndarray | None,
    collection: str,
    encoder: Encoder | None = None,
) -> None:
    if not vacancies:
        return
    if vectors is None:
        assert encoder is not None
        vectors = encode_cached(encoder, [v.text for v in vacancies], runtime.cache)
    batch = runtime.settings.index_batch_size
    for offset in range(0, len(vacancies), batch):
        runtime.store.upsert(
            to_points(vacancies[offset : offset + batch], vectors[offset : offset + batch]), collection=collection
        )


def _register_head(
    runtime: Runtime,
    session: Session,
    classifier: FusedClassifier,
    settings: Settings,
    vacancies: Sequence[Vacancy],
    report: dict[str, Any],
    promotion: dict[str, Any],
    parent: str | None,
    encoder_version: str,
    dim: int,
) -> tuple[str, dict[str, Any]]:
    metrics = {**report, "promotion": promotion}
    metadata = {
        "embedder": settings.embedding_model,
        "embedding": settings.embedding_signature,
        "encoder_version": encoder_version,
        "embedder_dim": dim,
        "taxonomy_hash": runtime.taxonomy.digest,
        "data_hash": data_hash([(v.id, v.label or "", v.text_hash) for v in vacancies]),
        "metrics": metrics,
        "parent": parent,
        "n_train": len(vacancies),
        "validation": "holdout",
    }
    version = runtime.registry.save(classifier, metadata)
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
    session.commit()
    return version, runtime.registry.metadata(version)
