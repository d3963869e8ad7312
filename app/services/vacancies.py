"""Ingest labelled vacancies from CSV into the database (the source of truth).

One reader (:func:`read_csv`) for every labelled CSV a user names (``ingest``, ``evaluate``, and the
offline commands through ``app.services.dataset.load_split``): the file's problems are ``InvalidInput``
with the path and, where there is one, the line: an empty file, a header without rows, missing columns,
text that is not UTF-8 (UTF-16 included), a field over :data:`FIELD_LIMIT` characters. A row with
fewer or more fields than the header is reported with its line, for the caller to refuse.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import String, func, select
from sqlalchemy.orm import Session

from app.db import Vacancy, utcnow
from app.errors import InvalidInput
from app.taxonomy import Taxonomy
from indexing.cache import text_hash
from indexing.clean import clean_text, scrub_names
from indexing.extract import TextExtractor

REQUIRED_COLUMNS = ("id", "text", "label")
FIELD_LIMIT = 10_000_000  # characters in one field; a longer one is refused (an unclosed quote, mostly)


def _column_length(name: str) -> int:
    kind = Vacancy.__table__.c[name].type
    assert isinstance(kind, String) and kind.length is not None
    return kind.length


ID_MAX_CHARS = _column_length("id")  # the database's limit (Postgres refuses longer ids)
SOURCE_MAX_CHARS = _column_length("source")
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


@dataclass
class IngestResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[str] = field(default_factory=list)  # "line N: reason"
    written: bool = False  # False: nothing was written (invalid rows without ``skip_invalid``)

    @property
    def ok(self) -> bool:
        return not self.rejected


@dataclass(frozen=True)
class CsvRow:
    """One record of a labelled CSV: ``line`` is the line it starts on; ``problem`` ("line N: …") is set
    when it has fewer or more fields than the header (``values`` then holds the fields it has)."""

    line: int
    values: dict[str, str]
    problem: str | None = None


def _decode(path: Path) -> str:
    """The file's text: UTF-8 (a BOM is allowed); anything else is ``InvalidInput`` naming the line."""
    data = path.read_bytes()
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise InvalidInput(f"{path} is {name} text, not UTF-8: save it as UTF-8 (CSV UTF-8)")
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in data.split(b"\n", 1)[0]:
        raise InvalidInput(f"{path}: line 1 has NUL bytes (UTF-16 text?): save the file as UTF-8 (CSV UTF-8)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(
            f"{path}: line {line} is not UTF-8 (byte 0x{data[exc.start]:02x}): save the file as UTF-8 (CSV UTF-8)"
        ) from exc


TOO_LONG = f"a field is longer than {FIELD_LIMIT:,} characters (an unclosed quote?)"


def _csv_problem(exc: csv.Error) -> str:
    return TOO_LONG if "field limit" in str(exc) else f"not readable as CSV ({exc})"


def read_csv(path: Path, required: Sequence[str] = REQUIRED_COLUMNS) -> Iterator[CsvRow]:
    """The records of a labelled CSV (header first; blank lines are skipped). The file's problems raise
    ``InvalidInput`` (see the module docstring); a row whose field count is not the header's comes with
    its ``problem``."""
    text = _decode(path)
    if not text.strip():
        raise InvalidInput(f"{path} is empty: the first line must be the header {','.join(required)}")
    # csv's own limit is process-wide (bulk raises it for its files), so this file's is checked here
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""))
    last = 0  # the line the previous record ended on
    try:
        header = [name.strip() for name in next(reader)]
        last = reader.line_num
        missing = [c for c in required if c not in header]
        if missing:
            raise InvalidInput(
                f"{path}: missing column(s) {', '.join(missing)}; the header must be {','.join(required)}"
            )
        rows = 0
        while (fields := next(reader, None)) is not None:
            line, last = last + 1, reader.line_num
            if not fields:
                continue
            if any(len(field) > FIELD_LIMIT for field in fields):
                raise InvalidInput(f"{path}: line {line}: {TOO_LONG}")
            rows += 1
            values = dict(zip(header, fields, strict=False))
            if len(fields) == len(header):
                yield CsvRow(line, values)
                continue
            vid = values.get("id", "").strip()
            which = f" (id {vid[:40]!r})" if vid else ""
            quote = " (quote a text that holds a comma or a line break)" if len(fields) > len(header) else ""
            problem = f"line {line}{which}: {len(fields)} field(s), but the header has {len(header)}{quote}"
            yield CsvRow(line, values, problem)
    except csv.Error as exc:
        raise InvalidInput(f"{path}: line {last + 1}: {_csv_problem(exc)}") from exc
    if rows == 0:
        raise InvalidInput(f"{path} has a header but no rows")


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) of every record; a row with the wrong number of fields is ``InvalidInput``."""
    for row in read_csv(path):
        if row.problem is not None:
            raise InvalidInput(f"{path}: {row.problem}")
        yield row.line, row.values


def _id_problem(line: int, vid: str) -> str | None:
    if not vid:
        return f"line {line}: empty id"
    if "\x00" in vid:
        return f"line {line}: the id {vid[:40]!r} contains a NUL character"
    if len(vid) > ID_MAX_CHARS:
        return f"line {line}: the id {vid[:20]!r}… is {len(vid)} characters long, at most {ID_MAX_CHARS} are allowed"
    return None


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
    skip_invalid: bool = False,
) -> IngestResult:
    """Upsert the rows of a labelled CSV by id (:func:`ingest_rows` of :func:`read_csv`)."""
    return ingest_rows(
        session,
        read_csv(path),
        taxonomy,
        source=source,
        clean_max_chars=clean_max_chars,
        extractor=extractor,
        store_raw_text=store_raw_text,
        skip_invalid=skip_invalid,
    )


def ingest_rows(
    session: Session,
    rows: Iterable[CsvRow],
    taxonomy: Taxonomy,
    *,
    source: str = "ingest",
    clean_max_chars: int = 4000,
    extractor: TextExtractor | None = None,
    store_raw_text: bool = False,
    skip_invalid: bool = False,
) -> IngestResult:
    """Upsert rows by id, all or nothing: invalid rows are rejected and reported ("line N: reason";
    nothing is dropped silently), and when there are any nothing is written unless ``skip_invalid``
    (then the valid rows are). Invalid: the wrong number of fields, an empty id, an id with a NUL
    character or longer than the database allows (:data:`ID_MAX_CHARS`), a duplicate id, an empty text, a
    label outside the taxonomy (or, in a hierarchical one, a label with children: not a leaf). An empty
    label stores an unlabelled vacancy.

    Only cleaned text is stored: e-mails, phone numbers and URLs are scrubbed, and with an
    ``extractor`` the person names it finds too. ``store_raw_text`` keeps that personal data."""
    if "\x00" in source or len(source) > SOURCE_MAX_CHARS:
        raise InvalidInput(f"the source tag must be at most {SOURCE_MAX_CHARS} characters, without NUL")
    result = IngestResult()
    seen: set[str] = set()
    accepted: list[tuple[str, str | None, str, str]] = []  # id, label, cleaned text, raw text
    for row in rows:
        line = row.line
        if row.problem is not None:
            result.rejected.append(row.problem)
            continue
        vid = (row.values.get("id") or "").strip()
        label = (row.values.get("label") or "").strip() or None
        raw = row.values.get("text") or ""
        problem = _id_problem(line, vid)
        if problem is not None:
            result.rejected.append(problem)
            continue
        if vid in seen:
            result.rejected.append(f"line {line}: duplicate id {vid!r}")
            continue
        seen.add(vid)
        text = clean_text(raw, max_chars=clean_max_chars)
        if not text:
            result.rejected.append(f"line {line}: id {vid!r} has no text")
            continue
        if label is not None and label not in taxonomy:
            result.rejected.append(f"line {line}: id {vid!r} has label {label!r}, which is not in the taxonomy")
            continue
        if label is not None and (why := taxonomy.not_a_leaf(label)) is not None:
            result.rejected.append(f"line {line}: id {vid!r}: {why}")
            continue
        accepted.append((vid, label, text, raw))
    if result.rejected and not skip_invalid:
        return result
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
    result.written = True
    return result


def _upsert(session: Session, result: IngestResult, vid: str, label: str | None, text: str, source: str) -> None:
    digest = text_hash(text)
    existing = session.get(Vacancy, vid)
    if existing is None:
        session.add(Vacancy(id=vid, text=text, text_hash=digest, label=label, source=source))
        result.added += 1
    elif existing.text_hash != digest or existing.label != label:
        existing.text, existing.text_hash, existing.label = text, digest, label
        existing.revision = Vacancy.revision + 1  # counted by the database
        existing.updated_at = utcnow()
        result.updated += 1
    else:
        result.unchanged += 1


def count_labelled(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Vacancy).where(Vacancy.label.is_not(None))) or 0)


def labelled_vacancies(session: Session) -> list[Vacancy]:
    return list(session.scalars(select(Vacancy).where(Vacancy.label.is_not(None)).order_by(Vacancy.id)))
