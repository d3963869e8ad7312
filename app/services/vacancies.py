"""Ingest labelled vacancies from CSV into the database (the source of truth)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import Vacancy, utcnow
from app.errors import InvalidInput
from app.taxonomy import Taxonomy
from indexing.cache import text_hash
from indexing.clean import clean_text, scrub_names
from indexing.extract import TextExtractor

REQUIRED_COLUMNS = ("id", "text", "label")
csv.field_size_limit(10_000_000)


@dataclass
class IngestResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)  # "line N: reason"

    @property
    def ok(self) -> bool:
        return not self.rejected


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}; the header must be id,text,label")
        for row in reader:
            yield reader.line_num, row


EXTRACT_BATCH = 64  # texts per extractor call during ingest


def ingest_csv(
    session: Session,
    path: Path,
    taxonomy: Taxonomy,
    *,
    source: str = "ingest",
    clean_max_chars: int = 4000,
    extractor: TextExtractor | None = None,
    store_raw_text: bool = False,
) -> IngestResult:
    """Upsert rows by id. Rows with an empty text or a label outside the taxonomy are rejected and
    reported (nothing is dropped silently); an empty label stores an unlabelled vacancy.

    Only cleaned text is stored: e-mails, phone numbers and URLs are scrubbed, and with an
    ``extractor`` the person names it finds too. ``store_raw_text`` keeps that personal data."""
    result = IngestResult()
    seen: set[str] = set()
    accepted: list[tuple[str, str | None, str, str]] = []  # id, label, cleaned text, raw text
    for line, row in read_rows(path):
        vid = (row.get("id") or "").strip()
        label = (row.get("label") or "").strip() or None
        raw = row.get("text") or ""
        text = clean_text(raw, max_chars=clean_max_chars)
        if not vid:
            result.rejected.append(f"line {line}: empty id")
            continue
        if vid in seen:
            result.rejected.append(f"line {line}: duplicate id {vid!r}")
            continue
        seen.add(vid)
        if not text:
            result.rejected.append(f"line {line}: id {vid!r} has no text")
            continue
        if label is not None and label not in taxonomy:
            result.rejected.append(f"line {line}: id {vid!r} has label {label!r}, which is not in the taxonomy")
            continue
        accepted.append((vid, label, text, raw))
    for offset in range(0, len(accepted), EXTRACT_BATCH):
        batch = accepted[offset : offset + EXTRACT_BATCH]
        texts = [t for _, _, t, _ in batch]
        if extractor is not None and not store_raw_text:
            extractions = extractor.extract(texts)
            texts = [scrub_names(t, e.persons) for t, e in zip(texts, extractions, strict=True)]
        elif store_raw_text:
            texts = [clean_text(raw, max_chars=clean_max_chars, scrub=False) for _, _, _, raw in batch]
        for (vid, label, _, _), text in zip(batch, texts, strict=True):
            _upsert(session, result, vid, label, text, source)
    session.commit()
    return result


def _upsert(session: Session, result: IngestResult, vid: str, label: str | None, text: str, source: str) -> None:
    digest = text_hash(text)
    existing = session.get(Vacancy, vid)
    if existing is None:
        session.add(Vacancy(id=vid, text=text, text_hash=digest, label=label, source=source))
        result.added += 1
    elif existing.text_hash != digest or existing.label != label:
        existing.text, existing.text_hash, existing.label = text, digest, label
        existing.updated_at = utcnow()
        result.updated += 1
    else:
        result.unchanged += 1


def count_labelled(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Vacancy).where(Vacancy.label.is_not(None))) or 0)


def labelled_vacancies(session: Session) -> list[Vacancy]:
    return list(session.scalars(select(Vacancy).where(Vacancy.label.is_not(None)).order_by(Vacancy.id)))
