"""Train the classifier on every labelled vacancy in the database and make it active."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import ModelVersion
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services.vacancies import labelled_vacancies
from indexing.cache import encode_cached
from models.training import train_classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    version: str
    n_examples: int
    metrics: dict[str, Any]
    params: dict[str, Any]


def data_hash(rows: list[tuple[str, str, str]]) -> str:
    digest = hashlib.sha256()
    for vid, label, thash in sorted(rows):
        digest.update(f"{vid}\t{label}\t{thash}\n".encode())
    return digest.hexdigest()[:16]


def train(runtime: Runtime, session: Session, *, show_progress: bool = False, activate: bool = True) -> TrainResult:
    settings = runtime.settings
    vacancies = labelled_vacancies(session)
    labels = list(runtime.taxonomy.labels)
    index = {label: i for i, label in enumerate(labels)}
    usable = [v for v in vacancies if v.label in index]
    if len({v.label for v in usable}) < 2:
        raise InvalidInput("training needs labelled vacancies of at least two classes: run `jobclass ingest`")
    x = encode_cached(runtime.encoder, [v.text for v in usable], runtime.cache, show_progress=show_progress)
    y = np.array([index[v.label] for v in usable if v.label is not None], dtype=np.int64)
    classifier, report = train_classifier(
        x,
        y,
        labels,
        val_fraction=settings.validation_fraction,
        seed=settings.seed,
        abstain_threshold=settings.abstain_threshold,
    )
    parent = runtime.registry.active_version()
    metadata = {
        "embedder": settings.embedding_model,
        "embedding": settings.embedding_signature,
        "embedder_dim": int(x.shape[1]),
        "taxonomy_hash": runtime.taxonomy.digest,
        "data_hash": data_hash([(v.id, v.label or "", v.text_hash) for v in usable]),
        "metrics": report.to_dict(),
        "parent": parent,
        "n_train": len(usable),
    }
    version = runtime.registry.save(classifier, metadata)
    meta = runtime.registry.metadata(version)
    session.add(
        ModelVersion(
            id=version,
            embedder=settings.embedding_model,
            taxonomy_hash=runtime.taxonomy.digest,
            data_hash=metadata["data_hash"],
            n_train=len(usable),
            metrics=report.to_dict(),
            params=classifier.params.to_dict(),
            parent=parent,
            is_active=False,
        )
    )
    session.commit()
    if activate:
        activate_version(runtime, session, version)
        runtime.set_model(classifier, version, meta)
    return TrainResult(version, len(usable), report.to_dict(), classifier.params.to_dict())


def activate_version(runtime: Runtime, session: Session, version: str) -> None:
    runtime.registry.activate(version)
    session.execute(update(ModelVersion).values(is_active=ModelVersion.id == version))
    session.commit()
