"""Classify a file of vacancies in bulk (``jobclass classify-file``): CSV, JSONL or Parquet in, the same out.

The input streams through in constant memory: records are read one at a time (the csv module, JSON
lines, Parquet record batches), checked, and classified in batches through the service's own batch path
(:func:`app.services.classification.classify`). The output is written in checkpointed *parts*: every
``part_rows`` input records become ``OUT.parts/part-NNNNNN.<ext>`` (plus that part's bad rows and id
hashes), each written to a temporary name and renamed, and then ``OUT.parts/checkpoint.json`` records how
many input records are done (also replaced atomically: it is the commit point). After a crash (kill -9
included) a rerun with the same arguments continues after the last committed part; parts beyond it are
written again. At the end the parts are concatenated into ``OUT`` (a temporary file renamed into place),
the bad rows into ``OUT.errors.csv``, and the parts folder is removed: every input record is then in
exactly one of the two.

Bad rows (no id, no text, an empty text after cleaning, a text over ``JOBCLASS_MAX_TEXT_CHARS``, an id
over 128 characters, an id seen before in the file, a JSON line that is not an object) are listed with
their line (CSV, JSONL: the line the record starts on, the header being line 1 of a CSV; Parquet: the row
number from 1) and counted in the summary; they are never dropped silently. Duplicate ids are found with a
set of 64-bit hashes of the ids written so far (about 60 bytes a row).

The neighbours come from an in-memory copy of the index, read once at the start (``knn="auto"``, when it
holds at most ``indexing.memory_index.MAX_POINTS`` points; ``"memory"`` insists): the hybrid query is then
a matrix product per batch instead of a store round trip per text, which on short texts was most of a
row's time. ``knn="store"`` (and ``auto`` above the limit) queries the store per batch, as the service does.

``store=True`` records each prediction in the database like the service does, with an id derived from the
run and the input line, so a part written again after a crash does not store its rows twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select

from app.db import Prediction
from app.errors import InvalidInput, ServiceError, Unavailable
from app.runtime import Runtime
from app.services.classification import Classification, ClassifyItem, classify, store_predictions
from indexing.clean import clean_text
from indexing.memory_index import MemoryIndex, TooLarge
from indexing.store import StoreError

log = logging.getLogger(__name__)

Format = Literal["csv", "jsonl", "parquet"]
KnnSource = Literal["auto", "memory", "store"]
KNN_SOURCES: tuple[KnnSource, ...] = ("auto", "memory", "store")
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")
EXTENSIONS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
Progress = Callable[[int, int], None]
CHECKPOINT = "checkpoint.json"
CHECKPOINT_VERSION = 1
MAX_ID_CHARS = 128  # predictions.external_id
CSV_FIELD_LIMIT = 64 * 1024 * 1024  # a longer text is a bad row ("too long"), not a broken file
PARQUET_READ_ROWS = 1024
ERROR_HEADER = ("line", "id", "reason")
_RUN_NAMESPACE = uuid.UUID("6f1b3c52-8a0e-4d35-9c61-2f7e4b0a9d17")


# ---- formats ----------------------------------------------------------------------------------
def file_format(path: Path, given: str | None = None, *, what: str = "input") -> Format:
    """The format named by ``given`` (``--format``) or by the file's extension."""
    if given is not None:
        if given not in FORMATS:
            raise InvalidInput(f"--format must be one of {', '.join(FORMATS)}, not {given!r}")
        return given
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(EXTENSIONS)
        raise InvalidInput(f"cannot tell the {what} format of {path.name} from its extension ({known})")
    return found


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


@dataclass(frozen=True)
class InputRow:
    line: int  # where the record starts (see the module docstring)
    id: str | None
    text: str | None
    problem: str | None = None  # a record that could not be read as a row at all


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def read_rows(path: Path, fmt: Format, id_column: str = "id", text_column: str = "text") -> Iterator[InputRow]:
    """The records of ``path`` one at a time (constant memory). A missing column, text that is not UTF-8
    or a broken CSV is the file's problem (``InvalidInput``); a record's problem is the row's."""
    if fmt == "csv":
        yield from _read_csv(path, id_column, text_column)
    elif fmt == "jsonl":
        yield from _read_jsonl(path, id_column, text_column)
    else:
        yield from _read_parquet(path, id_column, text_column)


def _missing_columns(path: Path, found: Sequence[str], id_column: str, text_column: str) -> None:
    missing = [c for c in (id_column, text_column) if c not in found]
    if missing:
        raise InvalidInput(
            f"{path.name} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(found) or 'none'}); "
            "name them with --id-column / --text-column"
        )


def _read_csv(path: Path, id_column: str, text_column: str) -> Iterator[InputRow]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise InvalidInput(f"{path.name} is empty (expected a header with {id_column},{text_column})") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path.name} is not UTF-8 text: {exc.reason} in the header") from exc
        _missing_columns(path, header, id_column, text_column)
        i_id, i_text = header.index(id_column), header.index(text_column)
        while True:
            line = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{path.name}: line {line} is not UTF-8 text ({exc.reason})") from exc
            except csv.Error as exc:
                raise InvalidInput(f"{path.name}: line {line}: {exc}") from exc
            if not record:  # a blank line is no record
                continue
            get = lambda i, r=record: r[i] if i < len(r) else None  # noqa: E731 - a short row lacks fields
            yield InputRow(line, get(i_id), get(i_text))


def _read_jsonl(path: Path, id_column: str, text_column: str) -> Iterator[InputRow]:
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                yield InputRow(line, None, None, "not UTF-8 text")
                continue
            except ValueError as exc:
                yield InputRow(line, None, None, f"not valid JSON ({exc.args[0] if exc.args else exc})")
                continue
            if not isinstance(record, dict):
                yield InputRow(line, None, None, f"not a JSON object but {type(record).__name__}")
                continue
            yield InputRow(line, _text_or_none(record.get(id_column)), _text_or_none(record.get(text_column)))


def _read_parquet(path: Path, id_column: str, text_column: str) -> Iterator[InputRow]:
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow.ArrowInvalid and friends: not a Parquet file
        raise InvalidInput(f"{path.name} is not a readable Parquet file: {exc}") from exc
    with handle:
        _missing_columns(path, handle.schema_arrow.names, id_column, text_column)
        row = 0
        for batch in handle.iter_batches(batch_size=PARQUET_READ_ROWS, columns=[id_column, text_column]):
            ids, texts = batch.column(id_column).to_pylist(), batch.column(text_column).to_pylist()
            for i, t in zip(ids, texts, strict=True):
                row += 1
                yield InputRow(row, _text_or_none(i), _text_or_none(t))


def count_records(path: Path, fmt: Format) -> int:
    """How many records the progress bar expects: exact for Parquet (metadata) and JSONL (non-blank
    lines); for a CSV the lines after the header (a text with line breaks counts more than once)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:
            return 0
    lines, blank, last = 0, 0, b"\n"
    with path.open("rb") as handle:
        if fmt == "jsonl":
            for raw in handle:
                lines += 1
                blank += not raw.strip()
            return lines - blank
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"
    return max(0, lines - 1)


# ---- output rows and part files ------------------------------------------------------------------
def output_columns(top_k: int, store: bool) -> list[str]:
    columns = ["id", "label", "confidence", "abstained", "model_version"]
    for i in range(1, top_k + 1):
        columns += [f"top{i}_label", f"top{i}_probability"]
    if store:
        columns.append("prediction_id")
    return columns


def output_row(result: Classification, top_k: int, store: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": result.id,
        "label": result.label,
        "confidence": round(result.confidence, 6),
        "abstained": result.abstained,
        "model_version": result.model_version,
    }
    for i in range(top_k):
        p = result.probabilities[i] if i < len(result.probabilities) else None
        row[f"top{i + 1}_label"] = p.label if p else None
        row[f"top{i + 1}_probability"] = round(p.probability, 6) if p else None
    if store:
        row["prediction_id"] = result.prediction_id
    return row


def arrow_schema(top_k: int, store: bool) -> Any:
    import pyarrow as pa

    types = {"confidence": pa.float64(), "abstained": pa.bool_()}
    fields = []
    for name in output_columns(top_k, store):
        kind = pa.float64() if name.endswith("_probability") else types.get(name, pa.string())
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_rows(path: Path, fmt: Format, rows: Sequence[dict[str, Any]], columns: list[str], schema: Any) -> None:
    """One part file (no CSV header: the final file gets one)."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            writer = csv.writer(handle)
            writer.writerows([_csv_value(r[c]) for c in columns] for r in rows)
        else:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _atomic(write: Callable[[Path], object], target: Path) -> None:
    """``write`` a temporary sibling of ``target``, flush it to disk and rename it into place."""
    tmp = target.with_name(f".{target.name}.tmp")
    write(tmp)
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _write_errors(path: Path, errors: Sequence[tuple[int, str | None, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows((line, ident or "", reason) for line, ident, reason in errors)


def id_hash(ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


# ---- options, checkpoint, summary -----------------------------------------------------------------
@dataclass(frozen=True)
class BulkOptions:
    input: Path
    out: Path
    input_format: Format
    output_format: Format
    id_column: str = "id"
    text_column: str = "text"
    top_k: int = 3
    batch_size: int = 256
    part_rows: int = 5000
    store: bool = False
    restart: bool = False  # discard a previous run's parts instead of resuming it
    overwrite: bool = False  # replace an existing OUT
    knn: KnnSource = "auto"  # where the neighbours come from: see bulk_index


@dataclass
class Checkpoint:
    run_id: str
    input: dict[str, Any]  # path, size, mtime_ns: the same file, unchanged
    options: dict[str, Any]  # what shapes the output: formats, columns, top_k, store
    model_version: str
    parts: int = 0
    records: int = 0  # input records consumed by the committed parts
    written: int = 0
    errors: int = 0
    abstained: int = 0
    version: int = CHECKPOINT_VERSION

    def save(self, folder: Path) -> None:
        _atomic(lambda p: p.write_text(json.dumps(asdict(self), indent=1)), folder / CHECKPOINT)

    @classmethod
    def load(cls, folder: Path) -> Checkpoint | None:
        path = folder / CHECKPOINT
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{path} is unreadable ({exc}): pass --restart to start again") from exc


@dataclass
class BulkSummary:
    out: Path
    errors_file: Path | None
    records: int
    written: int
    errors: int
    abstained: int
    parts: int
    resumed_from: int  # input records already done by an earlier, interrupted run
    model_version: str
    seconds: float
    error_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Rows classified per second by this run (the resumed rows not counted)."""
        done = self.records - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _shape(options: BulkOptions) -> dict[str, Any]:
    return {
        "input_format": options.input_format,
        "output_format": options.output_format,
        "id_column": options.id_column,
        "text_column": options.text_column,
        "top_k": options.top_k,
        "store": options.store,
    }


def _prepare(options: BulkOptions, model_version: str) -> Checkpoint:
    """The checkpoint to continue from: a previous run of the same input, options and model, or a new one."""
    out, folder = options.out, parts_dir(options.out)
    if out.resolve() == options.input.resolve():
        raise InvalidInput("--out names the input file: choose another output path")
    if out.is_dir():
        raise InvalidInput(f"{out} is a folder: --out names a file")
    if folder.exists() and options.restart:
        shutil.rmtree(folder)
    previous = Checkpoint.load(folder) if folder.exists() else None
    here = Checkpoint(uuid.uuid4().hex, _fingerprint(options.input), _shape(options), model_version)
    if previous is not None:
        differs = [
            what
            for what, a, b in (
                ("input file", previous.input, here.input),
                ("options", previous.options, here.options),
                ("model version", previous.model_version, here.model_version),
            )
            if a != b
        ]
        if differs:
            raise InvalidInput(
                f"{folder} holds an interrupted run with another {' and '.join(differs)}: rerun it as it was, "
                "or pass --restart to discard it"
            )
        return previous
    if out.exists() and not options.overwrite:
        raise InvalidInput(f"{out} exists: pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    here.save(folder)
    return here


# ---- the run -------------------------------------------------------------------------------------
def check_row(row: InputRow, runtime: Runtime, seen: set[int] | None) -> str | None:
    """Why a record cannot be classified, or None (then its id is remembered in ``seen``; None: no
    duplicate check)."""
    if row.problem:
        return row.problem
    if row.id is None or not row.id.strip():
        return "missing id"
    if row.text is None:
        return "missing text"
    if "\x00" in row.id:
        return "id contains a NUL character"
    if len(row.id) > MAX_ID_CHARS:
        return f"id is {len(row.id)} characters; the limit is {MAX_ID_CHARS}"
    limit = runtime.settings.max_text_chars
    if len(row.text) > limit:
        return f"text is {len(row.text)} characters; the limit is {limit}"
    if not clean_text(row.text, max_chars=runtime.settings.clean_max_chars):
        return "text is empty after cleaning (no words left)"
    if seen is None:
        return None
    h = id_hash(row.id)
    if h in seen:
        return "duplicate id (an earlier row has it)"
    seen.add(h)
    return None


def bulk_index(runtime: Runtime, knn: KnnSource) -> MemoryIndex | None:
    """The neighbours' source for a run: an in-memory copy of the index (``indexing.memory_index``: the
    hybrid query in numpy, read once), or None to query the store per batch. ``auto`` copies the index
    when it fits (``MAX_POINTS``) and queries the store otherwise, or when it cannot be read (then the
    store's own fallback applies: the head answers alone); ``memory`` insists; ``store`` never copies."""
    if knn not in KNN_SOURCES:
        raise InvalidInput(f"--knn must be one of {', '.join(KNN_SOURCES)}, not {knn!r}", field="knn")
    if knn == "store":
        return None
    start = time.perf_counter()
    try:
        index = MemoryIndex.load(runtime.store)
    except TooLarge as exc:
        if knn == "memory":
            raise InvalidInput(f"--knn memory: {exc}; use --knn store", field="knn") from exc
        log.info("%s: the run queries the store", exc)
        return None
    except StoreError as exc:
        if knn == "memory":
            raise Unavailable(f"--knn memory: the index cannot be read ({exc})") from exc
        log.warning("the index cannot be read into memory (%s): the run queries the store", exc)
        return None
    log.info("read %d indexed points into memory in %.1fs", len(index), time.perf_counter() - start)
    return index


class _PartWriter:
    def __init__(
        self, runtime: Runtime, options: BulkOptions, ckpt: Checkpoint, top_k: int, index: MemoryIndex | None
    ) -> None:
        self.runtime, self.options, self.ckpt, self.top_k, self.index = runtime, options, ckpt, top_k, index
        self.folder = parts_dir(options.out)
        self.columns = output_columns(top_k, options.store)
        self.schema = arrow_schema(top_k, options.store)
        self.ext = options.output_format

    def part(self, n: int, kind: str) -> Path:
        return self.folder / f"part-{n:06d}.{kind}"

    def classify_rows(self, rows: Sequence[InputRow]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        size = self.options.batch_size
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            items = [ClassifyItem(r.text or "", r.id) for r in chunk]
            results = classify(self.runtime, None, items, self.top_k, batch=True, index=self.index)
            if self.options.store:
                self._store(chunk, results)
            out.extend(output_row(r, self.top_k, self.options.store) for r in results)
        return out

    def _store(self, rows: Sequence[InputRow], results: list[Classification]) -> None:
        """Store with ids derived from the run and the line; rows a crashed run already stored are skipped."""
        ids = [uuid.uuid5(_RUN_NAMESPACE, f"{self.ckpt.run_id}:{r.line}").hex for r in rows]
        with self.runtime.sessions() as session:
            done = set(session.scalars(select(Prediction.id).where(Prediction.id.in_(ids))))
            fresh = [(i, r) for i, r in zip(ids, results, strict=True) if i not in done]
            if fresh:
                store_predictions(session, [r for _, r in fresh], ids=[i for i, _ in fresh])
                if not all(r.stored for _, r in fresh):
                    raise ServiceError(
                        f"could not store {len(fresh)} prediction(s) (see the log); the run stopped at a "
                        "checkpoint: rerun the same command to continue"
                    )
        for i, r in zip(ids, results, strict=True):
            r.prediction_id, r.stored = i, True

    def commit(self, rows: Sequence[InputRow], classified: list[dict[str, Any]], errors: list[Any], ids: Any) -> None:
        n = self.ckpt.parts
        _atomic(lambda p: np.save(p.open("wb"), ids), self.part(n, "ids.npy"))
        _atomic(lambda p: _write_errors(p, errors), self.part(n, "errors.csv"))
        fmt = self.options.output_format
        _atomic(lambda p: write_rows(p, fmt, classified, self.columns, self.schema), self.part(n, self.ext))
        self.ckpt.parts += 1
        self.ckpt.records += len(rows)
        self.ckpt.written += len(classified)
        self.ckpt.errors += len(errors)
        self.ckpt.abstained += sum(bool(r["abstained"]) for r in classified)
        self.ckpt.save(self.folder)  # the commit point

    def seen_ids(self) -> set[int]:
        seen: set[int] = set()
        for n in range(self.ckpt.parts):
            seen.update(int(h) for h in np.load(self.part(n, "ids.npy")))
        return seen

    def finalise(self) -> Path | None:
        """Concatenate the parts into OUT and their bad rows into OUT.errors.csv (each renamed into place)."""
        out, fmt, n_parts = self.options.out, self.options.output_format, self.ckpt.parts
        if fmt == "parquet":
            import pyarrow.parquet as pq

            def write_parquet(tmp: Path) -> None:
                with pq.ParquetWriter(tmp, self.schema) as writer:
                    for n in range(n_parts):
                        for batch in pq.ParquetFile(self.part(n, self.ext)).iter_batches():
                            writer.write_batch(batch)

            _atomic(write_parquet, out)
        else:

            def write_text(tmp: Path) -> None:
                with tmp.open("wb") as target:
                    if fmt == "csv":
                        target.write((",".join(self.columns) + "\r\n").encode())
                    for n in range(n_parts):
                        with self.part(n, self.ext).open("rb") as source:
                            shutil.copyfileobj(source, target)

            _atomic(write_text, out)
        errors_file = errors_path(out)
        if self.ckpt.errors:

            def write_errors(tmp: Path) -> None:
                with tmp.open("wb") as target:
                    target.write((",".join(ERROR_HEADER) + "\r\n").encode())
                    for n in range(n_parts):
                        with self.part(n, "errors.csv").open("rb") as source:
                            shutil.copyfileobj(source, target)

            _atomic(write_errors, errors_file)
        else:
            errors_file.unlink(missing_ok=True)
        shutil.rmtree(self.folder)
        return errors_file if self.ckpt.errors else None


def classify_file(runtime: Runtime, options: BulkOptions, progress: Progress | None = None) -> BulkSummary:
    """Classify every record of ``options.input`` into ``options.out`` (see the module docstring)."""
    start = time.perf_counter()
    loaded = runtime.model
    top_k = max(1, min(options.top_k, loaded.classifier.n_classes))
    options = BulkOptions(**{**asdict(options), "top_k": top_k})
    records = read_rows(options.input, options.input_format, options.id_column, options.text_column)
    first = next(records, None)  # the file's own problems (columns, encoding) before anything is written
    index = bulk_index(runtime, options.knn)
    ckpt = _prepare(options, loaded.version)
    writer = _PartWriter(runtime, options, ckpt, top_k, index)
    resumed_from = ckpt.records
    if resumed_from:
        log.info("resuming %s after %d records (%d parts)", options.out, resumed_from, ckpt.parts)
    seen = writer.seen_ids()
    total = count_records(options.input, options.input_format) if progress else 0
    pending: list[InputRow] = []
    errors: list[tuple[int, str | None, str]] = []
    consumed: list[InputRow] = []
    skipped = 0

    def flush() -> None:
        classified = writer.classify_rows(pending)
        ids = np.fromiter((id_hash(r.id or "") for r in pending), dtype=np.uint64, count=len(pending))
        writer.commit(consumed, classified, errors, ids)
        pending.clear()
        errors.clear()
        consumed.clear()
        if progress:
            progress(ckpt.records, max(total, ckpt.records))

    if progress:
        progress(ckpt.records, max(total, ckpt.records))
    for row in itertools.chain([first] if first is not None else [], records):
        if skipped < resumed_from:
            skipped += 1
            continue
        consumed.append(row)
        reason = check_row(row, runtime, seen)
        if reason is None:
            pending.append(row)
        else:
            errors.append((row.line, row.id, reason))
        if len(consumed) >= options.part_rows:
            flush()
    if consumed or ckpt.parts == 0:
        flush()
    errors_file = writer.finalise()
    reasons = _count_reasons(errors_file) if errors_file is not None else {}
    return BulkSummary(
        out=options.out,
        errors_file=errors_file,
        records=ckpt.records,
        written=ckpt.written,
        errors=ckpt.errors,
        abstained=ckpt.abstained,
        parts=ckpt.parts,
        resumed_from=resumed_from,
        model_version=ckpt.model_version,
        seconds=time.perf_counter() - start,
        error_reasons=reasons,
    )


def _count_reasons(path: Path) -> dict[str, int]:
    """Bad rows by kind of problem (the reason without its particulars)."""
    counts: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            kind = record["reason"].split(" (")[0].split(";")[0]
            if kind.startswith("text is ") and kind.endswith("characters"):
                kind = "text too long"
            if kind.startswith("id is ") and kind.endswith("characters"):
                kind = "id too long"
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def read_output(path: Path, fmt: Format | None = None) -> list[dict[str, Any]]:
    """The rows of a classify-file output (for tests and small files: it reads the whole file)."""
    fmt = fmt or file_format(path, what="output")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(io.StringIO(handle.read())))
