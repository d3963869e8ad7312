"""Labelled datasets: read from CSV (``id,text,label[,label_fine]``) for the offline commands, and read
from the database for the service (train, retrain, upgrade-encoder, rollback, report), with its targets
``y`` and the id-hashed hold-out split (``models.training.holdout_split``).

Every command that compares a champion and a challenger takes its labelled set and hold-out from here, so
the comparison is fair by construction: one reader, one label order, one split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from app.db import Vacancy
from app.errors import InvalidInput
from app.services.vacancies import labelled_vacancies, read_rows
from app.settings import Settings
from indexing.clean import clean_text
from models.training import holdout_split


@dataclass
class Split:
    ids: list[str]
    texts: list[str]
    labels: list[str]
    fine: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: Sequence[int] | np.ndarray) -> Split:
        pick = [int(i) for i in idx]
        return Split(
            [self.ids[i] for i in pick],
            [self.texts[i] for i in pick],
            [self.labels[i] for i in pick],
            [self.fine[i] for i in pick] if self.fine is not None else None,
        )

    @staticmethod
    def concat(a: Split, b: Split) -> Split:
        fine = a.fine + b.fine if a.fine is not None and b.fine is not None else None
        return Split(a.ids + b.ids, a.texts + b.texts, a.labels + b.labels, fine)


def load_split(path: Path, clean_max_chars: int = 4000) -> Split:
    """A labelled CSV (``id,text,label[,label_fine]``) through ``app.services.vacancies.read_csv``: an
    empty file, a header without rows, missing columns, text that is not UTF-8, an oversized field and
    rows with the wrong number of fields are ``InvalidInput`` naming the path and the line."""
    rows = list(read_rows(path))
    has_fine = "label_fine" in rows[0][1]
    return Split(
        ids=[r["id"] for _, r in rows],
        texts=[clean_text(r["text"], max_chars=clean_max_chars) for _, r in rows],
        labels=[r["label"] for _, r in rows],
        fine=[r["label_fine"] for _, r in rows] if has_fine else None,
    )


# ---- labelled vacancies of the database ---------------------------------------------------------
@dataclass(frozen=True)
class LabelledSet:
    """Labelled vacancies whose label is one of ``labels``, with their targets ``y`` (indices into
    ``labels``); ``rows``: each vacancy's position in the sequence it was selected from."""

    vacancies: list[Vacancy]
    labels: list[str]
    y: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.vacancies)

    @property
    def ids(self) -> list[str]:
        return [v.id for v in self.vacancies]

    @property
    def texts(self) -> list[str]:
        return [v.text for v in self.vacancies]

    @property
    def n_classes_present(self) -> int:
        return len(np.unique(self.y))


@dataclass(frozen=True)
class HoldOut:
    """Indices into a ``LabelledSet``: the training part and the hold-out no model version trains on."""

    train: np.ndarray
    val: np.ndarray


def select_labelled(vacancies: Sequence[Vacancy], labels: Sequence[str]) -> LabelledSet:
    """The vacancies whose label is in ``labels`` (in their order) and their targets."""
    index = {label: i for i, label in enumerate(labels)}
    rows = [i for i, v in enumerate(vacancies) if v.label in index]
    kept = [vacancies[i] for i in rows]
    y = np.array([index[v.label] for v in kept if v.label is not None], dtype=np.int64)
    return LabelledSet(kept, list(labels), y, np.array(rows, dtype=np.int64))


def read_labelled(session: Session, labels: Sequence[str]) -> LabelledSet:
    """Every labelled vacancy of the database (ingested and feedback-corrected) with a label in ``labels``."""
    return select_labelled(labelled_vacancies(session), labels)


def holdout_of(data: LabelledSet, settings: Settings) -> HoldOut:
    """The id-hashed hold-out (``validation_fraction``, salted with the seed): it stays put as data grows."""
    tr, va = holdout_split(data.ids, data.y, settings.validation_fraction, salt=str(settings.seed))
    return HoldOut(tr, va)


def require_classes(data: LabelledSet, task: str, hint: str = "") -> None:
    """``task`` ("training", "an encoder upgrade", …) needs labelled vacancies of two classes or more."""
    if data.n_classes_present < 2:
        raise InvalidInput(f"{task} needs labelled vacancies of at least two classes{hint}")


def require_holdout(split: HoldOut, task: str) -> None:
    if len(split.val) == 0:
        raise InvalidInput(f"{task} needs at least two labelled vacancies of some class for validation")
