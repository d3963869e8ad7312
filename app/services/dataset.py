"""Labelled datasets read from CSV (``id,text,label[,label_fine]``): one reader for every command."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.clean import clean_text


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
    csv.field_size_limit(10_000_000)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "text", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header must be id,text,label")
        rows = list(reader)
    has_fine = bool(rows) and "label_fine" in rows[0]
    return Split(
        ids=[r["id"] for r in rows],
        texts=[clean_text(r["text"], max_chars=clean_max_chars) for r in rows],
        labels=[r["label"] for r in rows],
        fine=[r["label_fine"] for r in rows] if has_fine else None,
    )
