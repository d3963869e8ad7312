"""``--engine ray``: ``classify-file`` and ``reindex`` as Ray Data jobs (``ray[data]``, the ``bulk`` extra).

Nothing else imports this module, and it imports ``ray`` inside its functions: the service never needs Ray.

classify-file: read (``ray.data.read_csv`` / ``read_json`` / ``read_parquet``, the id and text columns as
strings) → ``repartition`` into blocks → :class:`ClassifyBatches` in an actor pool (``map_batches`` with a
callable class: each actor builds its runtime, encoder and classifier once, with a fractional ``num_cpus`` so
the read and write tasks keep a slot) → each batch checked, cleaned, embedded, searched (kNN) and fused by
:func:`app.services.classification.classify`, the same path as the service → ``write_parquet`` /
``write_csv`` / ``write_json`` into the folder ``OUT``. The kNN neighbours come from the Qdrant server of
``JOBCLASS_QDRANT_URL``, or, with the embedded index, from a read-only copy of its folder per actor; either
way each actor reads the index into memory when it fits (``--knn``, as for the local engine:
``app.services.bulk.bulk_index``).

Unlike the local engine, a Ray job is not resumable from parts (Ray retries failed tasks itself), writes a
folder of files (in no fixed order), does not check ids for duplicates across the file (that needs the whole
file in one place) and cannot tell a bad row's line (a distributed read has none): its bad rows are listed by
id and reason in ``OUT.errors.csv``. ``--store`` is for the local engine.

reindex: the labelled vacancies' texts → :class:`EmbedBatches` in an actor pool → vectors back to the driver,
which upserts them (with the BM25 vectors) into the new collection and swaps the alias
(:func:`app.services.index.reindex`); with a Qdrant server the upserts are the only work left to the driver.
"""

from __future__ import annotations

import atexit
import csv
import functools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidInput, Unavailable
from app.runtime import Runtime
from app.services.bulk import (
    ERROR_HEADER,
    BulkOptions,
    InputRow,
    KnnSource,
    arrow_schema,
    bulk_index,
    check_row,
    errors_path,
    output_row,
)
from app.services.classification import ClassifyItem, classify
from app.settings import Settings
from indexing.embed import Encoder

RuntimeFactory = Callable[[str | None], Runtime]  # given the folder of an index copy (or None: the settings')
EncoderFactory = Callable[[], Encoder]
SPARE_CPUS = 1.0  # left to Ray Data's own tasks (repartition, a JSON read): actors at 1 CPU each on 2 cores starve them
IO_CPUS = 0.1
BLOCKS_PER_WORKER = 4


@dataclass(frozen=True)
class RayResult:
    out: Path
    errors_file: Path | None
    records: int
    written: int
    errors: int
    seconds: float
    startup_seconds: float  # ray.init (0 when Ray was already running in this process)

    @property
    def rate(self) -> float:
        """Rows per second after start-up (actor construction, i.e. model loading, included)."""
        work = self.seconds - self.startup_seconds
        return self.records / work if work > 0 else 0.0


# ---- factories (picklable: Ray ships them to the actors) --------------------------------------------
def settings_runtime(settings: Settings, index: str | None) -> Runtime:
    s = settings if index is None else settings.model_copy(update={"qdrant_path": index})
    return Runtime(s)


def runtime_factory(settings: Settings) -> RuntimeFactory:
    return functools.partial(settings_runtime, settings)


def encoder_factory(settings: Settings) -> EncoderFactory:
    from app.encoders import load_encoder

    return functools.partial(load_encoder, settings)


def index_snapshot(settings: Settings) -> str | None:
    """The embedded index folder each actor copies, or None (a Qdrant server, or an in-memory index)."""
    if settings.qdrant_url or settings.qdrant_location == ":memory:":
        return None
    folder = Path(settings.qdrant_location)
    if not folder.is_dir():
        raise InvalidInput(f"no vector index at {folder}: run `jobclass reindex` first (or set JOBCLASS_QDRANT_URL)")
    return str(folder)


def _copy_index(folder: str) -> str:
    """A private copy of an index folder (its lock file left behind), removed when the actor exits."""
    copy = tempfile.mkdtemp(prefix="jobclass-index-")
    shutil.copytree(folder, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock", "*.lock"))
    atexit.register(shutil.rmtree, copy, True)
    return copy


def _limit_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---- the actors ---------------------------------------------------------------------------------
class ClassifyBatches:
    """One actor of the pool: its runtime (encoder, classifier, index copy) is built once."""

    def __init__(
        self,
        factory: RuntimeFactory,
        snapshot: str | None,
        top_k: int,
        id_column: str,
        text_column: str,
        errors_dir: str,
        threads: int | None = None,
        knn: KnnSource = "auto",
    ) -> None:
        _limit_threads(threads)
        self.runtime = factory(_copy_index(snapshot) if snapshot else None)
        if self.runtime.load_active_model() is None:
            raise Unavailable("no trained model is active: run `jobclass train`")
        self.index = bulk_index(self.runtime, knn)  # the actor's in-memory copy, as the local engine reads one
        self.top_k, self.id_column, self.text_column = top_k, id_column, text_column
        self.errors_dir = Path(errors_dir)
        self.schema = arrow_schema(top_k, False)

    def __call__(self, batch: Any) -> Any:  # a pyarrow.Table in, one out
        import pyarrow as pa

        ids, texts = batch.column(self.id_column).to_pylist(), batch.column(self.text_column).to_pylist()
        good: list[InputRow] = []
        bad: list[tuple[str, str | None, str]] = []
        for i, t in zip(ids, texts, strict=True):
            row = InputRow(0, None if i is None else str(i), None if t is None else str(t))
            reason = check_row(row, self.runtime, None)
            if reason is None:
                good.append(row)
            else:
                bad.append(("", row.id, reason))
        results = (
            classify(
                self.runtime,
                None,
                [ClassifyItem(r.text or "", r.id) for r in good],
                self.top_k,
                batch=True,
                index=self.index,
            )
            if good
            else []
        )
        if bad:
            with (self.errors_dir / f"{uuid.uuid4().hex}.csv").open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(bad)
        return pa.Table.from_pylist([output_row(r, self.top_k, False) for r in results], schema=self.schema)


class EmbedBatches:
    """An actor that embeds texts (reindex): the encoder is loaded once."""

    def __init__(self, factory: EncoderFactory, threads: int | None = None) -> None:
        _limit_threads(threads)
        self.encoder = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]])
        return {"position": batch["position"], "vector": vectors.astype(np.float32)}


# ---- Ray --------------------------------------------------------------------------------------------
def start_ray(address: str | None, workers: int) -> float:
    """Connect to the cluster at ``address`` or start a local Ray (once per process); seconds it took."""
    import ray

    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    return time.perf_counter() - start


def cpus_per_worker(workers: int) -> float:
    """A fractional CPU per actor, so that one whole CPU stays free for the tasks that read, split and
    write blocks (the actors' threads are set apart: ``torch.set_num_threads``)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return round(max(0.1, (cpus - SPARE_CPUS) / workers), 2)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _read(options: BulkOptions) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    path, cols = str(options.input), [options.id_column, options.text_column]
    if options.input_format == "parquet":
        return ray.data.read_parquet(path, columns=cols, num_cpus=IO_CPUS)
    if options.input_format == "csv":
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in cols}, include_columns=cols)
        parse = pacsv.ParseOptions(newlines_in_values=True)  # an ad's text has line breaks
        return ray.data.read_csv(path, convert_options=convert, parse_options=parse, num_cpus=IO_CPUS)
    return ray.data.read_json(path, lines=True, num_cpus=IO_CPUS)


def _write(ds: Any, options: BulkOptions) -> None:
    path, remote = str(options.out), {"num_cpus": IO_CPUS}
    if options.output_format == "parquet":
        ds.write_parquet(path, ray_remote_args=remote)
    elif options.output_format == "csv":
        ds.write_csv(path, ray_remote_args=remote)
    else:
        ds.write_json(path, ray_remote_args=remote, force_ascii=False)


def count_written(out: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return sum(int(pq.ParquetFile(f).metadata.num_rows) for f in sorted(out.glob("*.parquet")))
    total = 0
    for f in sorted(out.iterdir()):
        if f.is_file() and not f.name.startswith((".", "_")):
            with f.open("rb") as handle:
                total += sum(1 for line in handle if line.strip())
            total -= fmt == "csv"  # each CSV file has a header
    return total


def classify_file_on_ray(
    factory: RuntimeFactory,
    settings: Settings,
    options: BulkOptions,
    *,
    address: str | None = None,
    workers: int = 2,
    snapshot: str | bool | None = True,
) -> RayResult:
    """Classify ``options.input`` into the folder ``options.out`` on Ray (see the module docstring).
    ``snapshot``: the index folder to copy per actor (True: the settings' embedded index)."""
    if options.store:
        raise InvalidInput("--store works with --engine local (a Ray job does not write to the database)")
    out = options.out
    if out.exists():
        if not options.overwrite:
            raise InvalidInput(f"{out} exists: pass --overwrite to replace it")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    index = index_snapshot(settings) if snapshot is True else (snapshot or None)
    start = time.perf_counter()
    startup = start_ray(address, workers)
    import ray

    errors_dir = Path(tempfile.mkdtemp(prefix="jobclass-errors-", dir=out.parent))
    try:
        ds = (
            _read(options)
            .repartition(workers * BLOCKS_PER_WORKER)
            .map_batches(
                ClassifyBatches,
                fn_constructor_args=(
                    factory,
                    index,
                    options.top_k,
                    options.id_column,
                    options.text_column,
                    str(errors_dir),
                    _threads_per_worker(workers),
                    options.knn,
                ),
                batch_format="pyarrow",
                batch_size=options.batch_size,
                concurrency=workers,
                num_cpus=cpus_per_worker(workers),
            )
        )
        try:
            _write(ds, options)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            raise cause from exc
        n_errors, errors_file = _gather_errors(errors_dir, errors_path(out))
    finally:
        shutil.rmtree(errors_dir, ignore_errors=True)
    written = count_written(out, options.output_format)
    return RayResult(out, errors_file, written + n_errors, written, n_errors, time.perf_counter() - start, startup)


def _gather_errors(folder: Path, target: Path) -> tuple[int, Path | None]:
    files = sorted(folder.glob("*.csv"))
    target.unlink(missing_ok=True)
    if not files:
        return 0, None
    n = 0
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(ERROR_HEADER)
        for f in files:
            with f.open(newline="", encoding="utf-8") as source:
                for record in csv.reader(source):
                    writer.writerow(record)
                    n += 1
    return n, target


def embed_on_ray(
    factory: EncoderFactory, *, address: str | None = None, workers: int = 2, batch_size: int = 256
) -> Callable[[Sequence[str]], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """For :func:`app.services.index.reindex`: embed texts in an actor pool, yielding (positions, vectors)
    as the batches come back (in no fixed order)."""

    def embed(texts: Sequence[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import pyarrow as pa
        import ray.data

        start_ray(address, workers)
        if not texts:
            return
        table = pa.table({"position": np.arange(len(texts), dtype=np.int64), "text": list(texts)})
        ds = ray.data.from_arrow(table).repartition(workers * BLOCKS_PER_WORKER)
        ds = ds.map_batches(
            EmbedBatches,
            fn_constructor_args=(factory, _threads_per_worker(workers)),
            batch_format="numpy",
            batch_size=batch_size,
            concurrency=workers,
            num_cpus=cpus_per_worker(workers),
        )
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield np.asarray(batch["position"]), np.stack(list(batch["vector"])).astype(np.float32)

    return embed


__all__ = [
    "ClassifyBatches",
    "EmbedBatches",
    "RayResult",
    "classify_file_on_ray",
    "embed_on_ray",
    "encoder_factory",
    "runtime_factory",
    "start_ray",
]
