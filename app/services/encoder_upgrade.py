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

from app.db import Vacancy, utcnow
from app.encoders import load_encoder
from app.errors import Conflict, InvalidInput
from app.runtime import Runtime
from app.services.dataset import (
    HoldOut,
    LabelledSet,
    holdout_of,
    read_labelled,
    require_classes,
    require_holdout,
    select_labelled,
)
from app.services.index import CATCH_UP_SLACK, labelled_since, write_vacancies
from app.services.jobs import Job
from app.services.promotion import (
    Scores,
    as_served,
    champion,
    decide_promotion,
    holdout_probabilities,
    score_on_holdout,
    scores_of,
)
from app.services.training import activate_version, data_hash, register_head, text_inputs, train_on_holdout
from app.services.uncertainty import uncertainty_for
from app.services.vacancies import labelled_vacancies
from app.settings import Settings
from indexing.cache import encode_in_steps
from indexing.embed import Encoder
from models.classifier import FusedClassifier
from models.registry import EncoderRegistry, RegistryError
from models.training import TextInputs, TrainReport, stratified_split

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
    target_accuracy: float | None = None,
) -> UpgradeResult:
    start = time.perf_counter()
    settings = runtime.settings
    margin = settings.promotion_margin if margin is None else margin
    target = settings.target_accuracy if target_accuracy is None else target_accuracy
    data = read_labelled(session, runtime.taxonomy.leaves)
    require_classes(data, "an encoder upgrade", ": run `jobclass ingest`")
    split = holdout_of(data, settings)
    require_holdout(split, "an encoder upgrade")
    held_out = {data.vacancies[i].id for i in split.val}
    ft_train, ft_val = _finetune_data(data.vacancies, split.train, held_out, train, val, settings.seed, say)
    # 1. fine-tune and register the candidate.
    finetune_fn = finetune_fn or sentence_transformers_finetune(say=say)
    candidate = _finetune_candidate(runtime, ft_train, ft_val, finetune_fn, load_encoder or load_sentence_embedder, say)
    # 2. - 5. a new collection, the challenger head, the comparison, then the swap or the discard.
    if not runtime.index_lock.acquire(blocking=False):
        candidate.registry.reject(candidate.version, "a reindex was running")
        raise Conflict("a reindex is already running")
    try:
        outcome = _try_candidate(runtime, session, candidate, data, split, ft_train, margin, say, progress, target)
    finally:
        runtime.index_lock.release()
    promotion = outcome.promotion
    log.info(
        "encoder upgrade %s: %s (%s)",
        candidate.version,
        "promoted" if promotion["promoted"] else "discarded",
        promotion["reason"],
    )
    info = candidate.info
    return UpgradeResult(
        encoder_version=candidate.version,
        model_version=outcome.model_version,
        collection=outcome.collection,
        promoted=promotion["promoted"],
        reason=promotion["reason"],
        champion=promotion["champion"],
        challenger_scores=promotion["challenger"],
        champion_scores=promotion["champion_scores"],
        n_finetune=len(ft_train.texts),
        n_val=len(split.val),
        finetune={k: info.get(k) for k in ("metrics", "wall_seconds", "train_seconds", "texts_per_s", "steps")},
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _Candidate:
    """A fine-tuned encoder registered as a candidate, loaded, with the settings that name it."""

    registry: EncoderRegistry
    version: str
    settings: Settings
    encoder: Encoder
    info: dict[str, Any]  # finetune.json


@dataclass(frozen=True)
class _Outcome:
    collection: str
    model_version: str
    promotion: dict[str, Any]


def _finetune_candidate(
    runtime: Runtime,
    ft_train: LabelledTexts,
    ft_val: LabelledTexts,
    finetune_fn: FinetuneFn,
    load_encoder: EncoderLoader,
    say: Say,
) -> _Candidate:
    """Fine-tune the encoder in use, register the result as a candidate and load it (rejected if it fails)."""
    settings = runtime.settings
    encoders = EncoderRegistry.under(settings.model_dir)
    encoders.root.mkdir(parents=True, exist_ok=True)
    work = encoders.root / f".work-{EncoderRegistry.new_version_id()}"
    try:
        say(f"fine-tuning {settings.embedding_model} on {len(ft_train.texts)} texts (validation {len(ft_val.texts)})")
        info = finetune_fn(settings.embedding_model, ft_train, ft_val, work)
        rows = [(i, lab, t) for i, lab, t in zip(ft_train.ids, ft_train.labels, ft_train.texts, strict=True)]
        version = encoders.register(
            work,
            {
                "parent": encoders.active_version() or settings.embedding_model,
                "base_model": settings.embedding_model,
                "data_hash": data_hash(rows),
                "metrics": info.get("metrics", {}),
                "wall_seconds": info.get("wall_seconds"),
                "texts_per_s": info.get("texts_per_s"),
                "n_train": len(ft_train.texts),
            },
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    new_settings = settings.model_copy(update={"embedding_model": str(encoders.path(version))})
    try:
        encoder = load_encoder(new_settings)
    except Exception as exc:
        encoders.reject(version, f"could not be loaded: {exc}")
        raise
    return _Candidate(encoders, version, new_settings, encoder, info)


def _try_candidate(
    runtime: Runtime,
    session: Session,
    candidate: _Candidate,
    data: LabelledSet,
    split: HoldOut,
    ft_train: LabelledTexts,
    margin: float,
    say: Say,
    progress: Progress | None,
    target_accuracy: float | None = None,
) -> _Outcome:
    """Embed every labelled vacancy into a new collection (the alias is not touched yet), train and score the
    challenger head, then promote it (encoder, head, alias and runtime switch together) or discard it."""
    started_at = utcnow()
    with _new_collection(runtime, candidate.encoder.dim, candidate.settings.embedding_signature) as collection:
        say(f"embedding {len(data)} labelled vacancies into {collection}")
        x_new = _embed(candidate.encoder, runtime, data.texts, progress)
        write_vacancies(runtime, data.vacancies, collection, vectors=x_new)
        inputs = text_inputs(runtime, data.texts)
        challenger, report = _challenger_head(runtime, data, x_new, split, ft_train, say, inputs)
        served = as_served(challenger, candidate.settings.head_variant)
        probs = holdout_probabilities(served, x_new, data.y, split, inputs)
        challenger_scores = scores_of(probs, data.y[split.val], challenger.labels)
        block = uncertainty_for(runtime, probs, data.y[split.val], challenger.labels, target_accuracy)
        promotion = _compare(runtime, data, split, challenger_scores, margin, candidate, inputs)
        promotion.update(encoder=candidate.version, collection=collection)
        model_version, meta = register_head(
            runtime,
            session,
            challenger,
            candidate.settings,
            data.vacancies,
            {**report.to_dict(), "promotion": promotion},
            parent=promotion["champion"] or runtime.registry.active_version(),
            dim=x_new.shape[1],
            encoder_version=candidate.version,
            uncertainty=block,
        )
        candidate.registry.update(candidate.version, model_version=model_version, promotion=promotion)
        if promotion["promoted"]:
            switch = _Switch(candidate.settings, candidate.encoder, served, model_version, meta)
            mark = functools.partial(candidate.registry.activate, candidate.version)
            _switch_encoder(runtime, session, collection, started_at, switch, mark)
        else:
            runtime.store.drop(collection)
            candidate.registry.reject(candidate.version, promotion["reason"])
    return _Outcome(collection, model_version, promotion)


def _compare(
    runtime: Runtime,
    data: LabelledSet,
    split: HoldOut,
    challenger_scores: Scores,
    margin: float,
    candidate: _Candidate,
    inputs: TextInputs,
) -> dict[str, Any]:
    """The promotion decision: the champion is scored on the same hold-out, embedded by its own encoder."""
    champ, why_none = champion(runtime)

    def score_with_old_encoder(classifier: FusedClassifier) -> Scores:
        x_old = _embed(runtime.encoder, runtime, data.texts, None)
        return score_on_holdout(classifier, x_old, data.y, split, inputs)

    return decide_promotion(
        champ,
        why_none,
        data.labels,
        challenger_scores,
        score_with_old_encoder,
        margin,
        n_val=len(split.val),
        challenger_name=f"challenger (encoder {candidate.version})",
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
    target = _rollback_target(runtime)
    new_settings = runtime.settings.model_copy(update={"embedding_model": target.model})
    say(f"rolling back encoder {target.current} to {target.parent}")
    new_encoder = (load_encoder or load_sentence_embedder)(new_settings)
    if not runtime.index_lock.acquire(blocking=False):
        raise Conflict("a reindex is already running")
    try:
        started_at = utcnow()
        usable = labelled_vacancies(session)
        with _new_collection(runtime, new_encoder.dim, new_settings.embedding_signature) as collection:
            say(f"embedding {len(usable)} labelled vacancies into {collection}")
            x = _embed(new_encoder, runtime, [v.text for v in usable], progress)
            write_vacancies(runtime, usable, collection, vectors=x)
            head = _rollback_head(runtime, session, new_settings, usable, x, target, say)
            switch = _Switch(new_settings, new_encoder, head.classifier, head.version, head.metadata)
            _switch_encoder(runtime, session, collection, started_at, switch, target.mark)
    finally:
        runtime.index_lock.release()
    log.info("encoder %s rolled back to %s (model %s)", target.current, target.parent, head.version)
    return RollbackResult(
        rolled_back=target.current,
        encoder=target.parent,
        model_version=head.version,
        collection=collection,
        retrained=head.retrained,
        count=len(usable),
        seconds=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class _RollbackTarget:
    registry: EncoderRegistry
    current: str  # the active fine-tuned encoder
    meta: dict[str, Any]  # its registry record
    parent: str  # the encoder to go back to: a registry version or the base model name
    parent_is_version: bool
    model: str  # what JOBCLASS_EMBEDDING_MODEL becomes: the parent's folder or the base model

    def mark(self) -> None:
        """The encoder registry's markers after the switch: the parent active (or none), the current retired."""
        if self.parent_is_version:
            self.registry.activate(self.parent)
        else:
            self.registry.deactivate()
        self.registry.update(self.current, status="retired", rolled_back_at=utcnow().isoformat())


@dataclass(frozen=True)
class _Head:
    classifier: FusedClassifier
    version: str
    metadata: dict[str, Any]
    retrained: bool


def _rollback_target(runtime: Runtime) -> _RollbackTarget:
    encoders = EncoderRegistry.under(runtime.settings.model_dir)
    current = _require_active_encoder(runtime)
    meta = encoders.metadata(current)
    parent = str(meta.get("parent") or meta.get("base_model") or "")
    parent_is_version = bool(parent) and (encoders.root / parent / "metadata.json").is_file()
    if parent_is_version and encoders.metadata(parent).get("status") == "rejected":
        raise Conflict(f"encoder {current}'s parent {parent} was rejected and its weights deleted")
    model = str(encoders.path(parent)) if parent_is_version else str(meta.get("base_model") or parent)
    if not model:
        raise Conflict(f"encoder {current} records no parent to roll back to")
    return _RollbackTarget(encoders, current, meta, parent, parent_is_version, model)


def _rollback_head(
    runtime: Runtime,
    session: Session,
    settings: Settings,
    usable: Sequence[Vacancy],
    x: np.ndarray,
    target: _RollbackTarget,
    say: Say,
) -> _Head:
    """The head that served with the parent encoder, or (gone or not fitting) one trained on the new vectors."""
    version = (target.meta.get("promotion") or {}).get("champion")
    if version and _head_fits(runtime, version, settings.embedding_signature):
        classifier, meta = runtime.registry.load(version, variant=settings.head_variant)
        return _Head(classifier, version, meta, retrained=False)
    say(f"no head of {target.parent} on record: training one on the new vectors")
    data = select_labelled(usable, runtime.taxonomy.leaves)
    require_classes(data, "a head")
    split = holdout_of(data, settings)
    inputs = text_inputs(runtime, data.texts)
    classifier, report = train_on_holdout(runtime, x[data.rows], data.y, data.labels, split, inputs=inputs)
    served = as_served(classifier, settings.head_variant)
    probs = holdout_probabilities(served, x[data.rows], data.y, split, inputs)
    block = uncertainty_for(runtime, probs, data.y[split.val], classifier.labels, settings.target_accuracy)
    promotion = {
        "promoted": True,
        "reason": f"rollback of encoder {target.current} to {target.parent}",
        "champion": None,
    }
    version, meta = register_head(
        runtime,
        session,
        classifier,
        settings,
        data.vacancies,
        {**report.to_dict(), "promotion": promotion},
        parent=runtime.registry.active_version(),
        dim=x.shape[1],
        encoder_version=target.parent,
        uncertainty=block,
    )
    return _Head(classifier, version, meta, retrained=True)


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
    collection = store.create_version(dim, runtime.index_metadata(signature))
    try:
        yield collection
    except BaseException:
        if store.active_collection() != collection:
            store.drop(collection)
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
    late = labelled_since(session, started_at - CATCH_UP_SLACK)
    write_vacancies(runtime, late, collection, encoder=switch.encoder)
    with runtime.model_lock:
        mark_encoder()
        activate_version(runtime, session, switch.model_version)
        runtime.store.swap_alias(collection)
        runtime.switch_embedder(
            switch.settings, switch.encoder, switch.classifier, switch.model_version, switch.metadata
        )


def _challenger_head(
    runtime: Runtime,
    data: LabelledSet,
    x: np.ndarray,
    split: HoldOut,
    ft_train: LabelledTexts,
    say: Say,
    inputs: TextInputs | None = None,
) -> tuple[FusedClassifier, TrainReport]:
    """The challenger's head and fusion on the fine-tuned vectors of the training rows.

    The new encoder took gradients from most of those rows: out-of-fold predictions over them would flatter
    both the head and the kNN vote (their classes were pulled together) and mis-tune the fusion. So the
    head stops early and the fusion is tuned on the training rows the encoder never trained on (its
    early-stopping slice), which it sees as it will see a new vacancy; then the head is refit on every
    training row. The hold-out stays untouched for the comparison. Without such rows (fine-tuning data
    from elsewhere), the usual out-of-fold tuning applies."""
    y, tr = data.y, split.train
    trained_on = set(ft_train.ids)
    seen = np.array([i for i in tr if data.vacancies[i].id in trained_on], dtype=np.int64)
    unseen = np.array([i for i in tr if data.vacancies[i].id not in trained_on], dtype=np.int64)
    if len(seen) < 2 or len(unseen) == 0 or len(np.unique(y[seen])) < 2:
        return train_on_holdout(runtime, x, y, data.labels, split, inputs=inputs)
    say(f"tuning the challenger's fusion on {len(unseen)} training rows the new encoder never trained on")
    tuning = HoldOut(seen, unseen)
    classifier, report = train_on_holdout(runtime, x, y, data.labels, tuning, tune_on_va=True, inputs=inputs)
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
    return encode_in_steps(encoder, texts, runtime.cache, runtime.settings.index_batch_size, progress)
