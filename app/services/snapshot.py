"""Snapshots of a whole installation, and their restore (``jobclass snapshot`` / ``jobclass restore``).

A snapshot is a folder (or the same folder as one ``.tar`` file) with ``manifest.json`` and:

- ``database/``: SQLite → ``jobclass.db``, an online backup (``sqlite3.Connection.backup``); any other
  database (Postgres) → one ``<table>.jsonl`` per table of the ORM metadata and ``alembic_version``, rows in
  primary-key order, read in one repeatable-read transaction (no ``pg_dump`` needed);
- ``models/``: the model registry and, inside it, the encoder registry (``models/encoders``);
- ``index/``: a snapshot of the collection behind the alias where the backend has one (the embedded
  ``qdrant_edge`` engine: a tar of the flushed shard; a Qdrant server: its snapshot API). Qdrant local
  mode has none: the restore rebuilds the index from the restored database (the reindex use case).

``manifest.json`` records the format version, when and by which jobclass version it was taken, the
database dialect and revision with each table's row count, the active model and encoder, the collection
and its point count, and a SHA-256 checksum of every file.

A restore checks the manifest and every checksum first, refuses a target that holds data (a database
with rows, a state folder with models or an index) unless ``force``, builds the new state beside the old
(a SQLite file and the folders under temporary names; Postgres in one transaction) and swaps at the end:
an error before the swap leaves the target as it was. Rows load in dependency order and Postgres
sequences are reset past the restored ids; the schema is brought to this version's head.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Integer, Table, func, inspect, select, text
from sqlalchemy.types import DateTime

from app.db import Base, make_engine, migrate, utcnow
from app.errors import Conflict, InvalidInput
from app.runtime import Runtime
from app.settings import Settings
from indexing.edge_store import EdgeClient
from models.registry import EncoderRegistry, ModelRegistry

log = logging.getLogger(__name__)

FORMAT = "jobclass-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database/jobclass.db"
INDEX_FILE = "index/collection.snapshot"
ALEMBIC_TABLE = "alembic_version"
RuntimeFactory = Callable[[Settings], Runtime]


@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    dialect: str
    rows: dict[str, int]
    model: str | None
    index: str  # "edge" | "server" (a snapshot of the index) | "rebuild" (rebuilt from the database at restore)
    points: int | None
    bytes: int
    seconds: float


@dataclass(frozen=True)
class RestoreResult:
    source: Path
    dialect: str  # the target's
    rows: dict[str, int]
    model: str | None
    index: str  # "snapshot" (restored from the snapshot's index) | "rebuilt" (reindexed from the database)
    points: int
    seconds: float


def jobclass_version() -> str:
    try:
        return package_version("jobclass")
    except PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tables(engine: Engine | Connection) -> list[Table]:
    """The ORM tables the database has, in dependency order (parents first)."""
    present = set(inspect(engine).get_table_names())
    return [t for t in Base.metadata.sorted_tables if t.name in present]


def _revision(conn: Connection) -> str | None:
    if ALEMBIC_TABLE not in inspect(conn).get_table_names():
        return None
    return conn.execute(text(f"SELECT version_num FROM {ALEMBIC_TABLE}")).scalar()


# ---- snapshot ---------------------------------------------------------------------------------------
def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return value


def _dump_sqlite(engine: Engine, out: Path) -> None:
    """An online, consistent copy of the SQLite database (writers may go on meanwhile)."""
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(out)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        raw.close()


def _dump_sql(engine: Engine, folder: Path) -> None:
    """Every table as JSON lines, in primary-key order, from one consistent (repeatable-read) snapshot."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        for table in _tables(conn):
            order = list(table.primary_key.columns)
            with (folder / f"{table.name}.jsonl").open("w", encoding="utf-8") as handle:
                result = conn.execution_options(stream_results=True, yield_per=1000).execute(
                    select(table).order_by(*order)
                )
                for row in result.mappings():
                    handle.write(json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
        revision = _revision(conn)
        with (folder / f"{ALEMBIC_TABLE}.jsonl").open("w", encoding="utf-8") as handle:
            if revision is not None:
                handle.write(json.dumps({"version_num": revision}) + "\n")


def _counts(conn: Connection) -> dict[str, int]:
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in _tables(conn)}


def _row_counts(engine: Engine) -> tuple[dict[str, int], str | None]:
    with engine.connect() as conn:
        return _counts(conn), _revision(conn)


def _snapshot_index(runtime: Runtime, folder: Path) -> dict[str, Any]:
    """The index part of the manifest; writes ``index/collection.snapshot`` where the backend has snapshots."""
    store, settings = runtime.store, runtime.settings
    collection = store.active_collection()
    if collection is None:
        return {"kind": "rebuild", "alias": store.alias, "collection": None, "points": 0}
    points = store.count()
    base = {"alias": store.alias, "collection": collection, "points": points}
    client = store.client
    (folder / "index").mkdir()
    target = folder / INDEX_FILE
    if isinstance(client, EdgeClient):
        taken = client.snapshot_collection(collection, target)
        return {**base, "kind": "edge", "config": taken["config"]}
    if settings.qdrant_url:
        _download_server_snapshot(runtime, collection, target)
        return {**base, "kind": "server", "metadata": store.collection_metadata()}
    (folder / "index").rmdir()
    return {**base, "kind": "rebuild"}  # qdrant-client local mode has no snapshots


def _api_headers(settings: Settings) -> dict[str, str]:
    return {"api-key": settings.qdrant_api_key.get_secret_value()} if settings.qdrant_api_key else {}


def _download_server_snapshot(runtime: Runtime, collection: str, target: Path) -> None:
    """A Qdrant server's collection snapshot (``POST /collections/{name}/snapshots``), downloaded and then
    deleted on the server."""
    import httpx
    from qdrant_client import QdrantClient

    client = runtime.store.client
    assert isinstance(client, QdrantClient)
    taken = client.create_snapshot(collection_name=collection, wait=True)
    if taken is None:
        raise InvalidInput(f"the Qdrant server did not take a snapshot of {collection!r}")
    url = f"{str(runtime.settings.qdrant_url).rstrip('/')}/collections/{collection}/snapshots/{taken.name}"
    try:
        with httpx.stream("GET", url, headers=_api_headers(runtime.settings), timeout=300) as response:
            response.raise_for_status()
            with target.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
    finally:
        with contextlib.suppress(Exception):
            client.delete_snapshot(collection_name=collection, snapshot_name=taken.name)


def take_snapshot(runtime: Runtime, out: Path, *, include_index: bool = True) -> SnapshotResult:
    """Write a snapshot of the runtime's database, registries and (``include_index``) index to ``out``: a
    folder, or one tar file when ``out`` ends in ``.tar``. ``out`` must not exist (an empty folder may)."""
    start = time.perf_counter()
    out = out.expanduser().resolve()
    as_tar = out.suffix == ".tar"
    if out.exists() and not (out.is_dir() and not as_tar and not any(out.iterdir())):
        raise InvalidInput(f"{out} already exists: name a new folder or .tar file")
    if not out.parent.is_dir():
        raise InvalidInput(f"{out.parent} is not a folder")
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (work / "database").mkdir()
        engine = runtime.engine
        dialect = engine.dialect.name
        rows, revision = _row_counts(engine)
        if dialect == "sqlite":
            _dump_sqlite(engine, work / SQLITE_FILE)
        else:
            _dump_sql(engine, work / "database")
        models = runtime.settings.model_dir
        if models.is_dir():
            shutil.copytree(models, work / "models", ignore=shutil.ignore_patterns(".tmp-*"))
        index: dict[str, Any] = (
            _snapshot_index(runtime, work)
            if include_index
            else {"kind": "rebuild", "alias": runtime.store.alias, "collection": None, "points": None}
        )
        files: dict[str, dict[str, Any]] = {
            str(p.relative_to(work)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(work.rglob("*"))
            if p.is_file()
        }
        active = ModelRegistry(models).active_version()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": utcnow().isoformat(),
            "jobclass_version": jobclass_version(),
            "database": {"dialect": dialect, "revision": revision, "rows": rows},
            "model": {"active": active},
            "encoder": {
                "active": EncoderRegistry.under(models).active_version(),
                "embedding": runtime.settings.embedding_signature,
            },
            "index": index,
            "files": files,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
        if as_tar:
            tmp_tar = work.with_suffix(".tar")
            with tarfile.open(tmp_tar, "w") as tar:
                tar.add(work, arcname=".")
            os.replace(tmp_tar, out)
        else:
            with contextlib.suppress(FileNotFoundError):
                out.rmdir()  # the empty folder named
            os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        work.with_suffix(".tar").unlink(missing_ok=True)
    size = out.stat().st_size if as_tar else sum(int(f["bytes"]) for f in files.values())
    return SnapshotResult(
        out,
        dialect,
        rows,
        active,
        str(index["kind"]),
        index.get("points"),
        size,
        seconds=time.perf_counter() - start,
    )


# ---- restore ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _opened(source: Path) -> Iterator[Path]:
    """The snapshot's folder (a tar is unpacked into a temporary one)."""
    if source.is_dir():
        yield source
        return
    if not source.is_file():
        raise InvalidInput(f"no snapshot at {source}")
    with tempfile.TemporaryDirectory(prefix="jobclass-restore-") as tmp:
        try:
            with tarfile.open(source) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InvalidInput(f"{source} is not a readable snapshot archive ({exc})") from exc
        yield Path(tmp)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, checked: format, version, and every file's checksum."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{folder} is not a jobclass snapshot: no {MANIFEST}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InvalidInput(f"{path} is not a jobclass snapshot manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(
            f"snapshot format version {manifest.get('format_version')!r} is not supported "
            f"(this jobclass {jobclass_version()} reads version {FORMAT_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InvalidInput(f"{path} lists no files")
    for name, info in files.items():
        file = folder / name
        if not file.resolve().is_relative_to(folder.resolve()):
            raise InvalidInput(f"{path} names a file outside the snapshot: {name}")
        if not file.is_file():
            raise InvalidInput(f"snapshot is incomplete: {name} is missing")
        if _sha256(file) != info.get("sha256"):
            raise InvalidInput(f"snapshot is damaged: the checksum of {name} does not match the manifest")
    return manifest


def _target_problems(settings: Settings) -> list[str]:
    """What the target already holds (empty: nothing)."""
    problems = []
    engine = make_engine(settings.db_url)
    try:
        counts, _ = _row_counts(engine)
    finally:
        engine.dispose()
    filled = {name: n for name, n in counts.items() if n}
    if filled:
        problems.append("the database holds " + ", ".join(f"{n} {name}" for name, n in filled.items()))
    models = settings.model_dir
    if models.is_dir() and any(models.iterdir()):
        problems.append(f"{models} holds models")
    if not settings.qdrant_url:
        index = Path(settings.qdrant_location)
        if (
            settings.qdrant_location != ":memory:"
            and (index / "collections").is_dir()
            and any((index / "collections").iterdir())
        ):
            problems.append(f"{index} holds an index")
    return problems


def _from_json(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, value in row.items():
        column = table.columns.get(name)
        if column is None:
            raise InvalidInput(f"snapshot table {table.name} has a column this version does not know: {name}")
        if isinstance(column.type, DateTime) and isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        values[name] = value
    return values


def _snapshot_rows(folder: Path, manifest: dict[str, Any], table: Table) -> Iterator[dict[str, Any]]:
    """The rows of one table, from the JSON lines or from the SQLite backup."""
    if manifest["database"]["dialect"] == "sqlite":
        engine = make_engine(f"sqlite:///{folder / SQLITE_FILE}")
        try:
            with engine.connect() as conn:
                if table.name not in inspect(conn).get_table_names():
                    return
                for row in conn.execute(select(table).order_by(*table.primary_key.columns)).mappings():
                    yield _from_json(table, dict(row))
        finally:
            engine.dispose()
        return
    path = folder / "database" / f"{table.name}.jsonl"
    if not path.is_file():
        return  # a table newer than the snapshot
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield _from_json(table, json.loads(line))


def _check_revision(manifest: dict[str, Any], settings: Settings) -> None:
    from alembic.script import ScriptDirectory

    from app.db import alembic_config

    revision = manifest["database"].get("revision")
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config(settings.db_url)).walk_revisions()}
    if revision is not None and revision not in known:
        raise InvalidInput(
            f"the snapshot's database is at revision {revision!r}, unknown to this jobclass "
            f"({jobclass_version()}): restore it with the version that took it ({manifest.get('jobclass_version')})"
        )


def _load_rows(conn: Connection, folder: Path, manifest: dict[str, Any]) -> dict[str, int]:
    """Replace every table's rows with the snapshot's (in one transaction: the caller's)."""
    tables = _tables(conn)
    for table in reversed(tables):
        conn.execute(table.delete())
    counts = {}
    for table in tables:
        batch: list[dict[str, Any]] = []
        n = 0
        for row in _snapshot_rows(folder, manifest, table):
            batch.append(row)
            if len(batch) >= 1000:
                conn.execute(table.insert(), batch)
                n, batch = n + len(batch), []
        if batch:
            conn.execute(table.insert(), batch)
            n += len(batch)
        counts[table.name] = n
    if conn.dialect.name == "postgresql":
        for table in tables:
            pk = list(table.primary_key.columns)
            for column in pk:
                if len(pk) == 1 and isinstance(column.type, Integer) and column.autoincrement in (True, "auto"):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                            f"COALESCE(MAX({column.name}), 1), MAX({column.name}) IS NOT NULL) FROM {table.name}"
                        )
                    )
    return counts


def _swap_in(staged: Path, final: Path) -> None:
    """Put ``staged`` (a file or folder) at ``final``, replacing what was there."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _collection_name(manifest: dict[str, Any], alias: str) -> str:
    name = manifest["index"].get("collection") or ""
    prefix = f"{alias}_v"
    return name if name.startswith(prefix) and name[len(prefix) :].isdigit() else f"{alias}_v1"


def _restore_edge_index(folder: Path, manifest: dict[str, Any], settings: Settings, staging: Path) -> Path:
    """A new edge-store folder holding the snapshot's collection behind the alias (swapped in later)."""
    from qdrant_client import models

    client = EdgeClient(str(staging))
    try:
        name = _collection_name(manifest, settings.collection)
        client.restore_collection(name, folder / INDEX_FILE, manifest["index"]["config"])
        client.update_collection_aliases(
            [
                models.CreateAliasOperation(
                    create_alias=models.CreateAlias(collection_name=name, alias_name=settings.collection)
                )
            ]
        )
    finally:
        client.close()
    return staging


def _restore_server_index(folder: Path, manifest: dict[str, Any], runtime: Runtime) -> None:
    """Upload the snapshot to the Qdrant server as a new collection, then point the alias at it."""
    import httpx

    settings = runtime.settings
    store = runtime.store
    name = store.next_version_name()
    url = f"{str(settings.qdrant_url).rstrip('/')}/collections/{name}/snapshots/upload?priority=snapshot&wait=true"
    with (folder / INDEX_FILE).open("rb") as handle:
        response = httpx.post(
            url, headers=_api_headers(settings), files={"snapshot": ("collection.snapshot", handle)}, timeout=600
        )
    response.raise_for_status()
    store.swap_alias(name)


def _embedding_matches(manifest: dict[str, Any], runtime: Runtime) -> bool:
    return manifest["encoder"].get("embedding") == runtime.settings.embedding_signature


def restore_snapshot(
    settings: Settings, source: Path, *, open_runtime: RuntimeFactory, force: bool = False
) -> RestoreResult:
    """Restore a snapshot (folder or ``.tar``) into the state folder and database ``settings`` name.

    ``open_runtime`` builds the runtime of the restored state (it resolves the restored active encoder):
    it loads the model and, where the snapshot's index cannot be used here (local mode, another backend,
    other embedding settings), rebuilds the index from the restored database."""
    start = time.perf_counter()
    source = source.expanduser().resolve()
    with _opened(source) as folder:
        manifest = read_manifest(folder)
        _check_revision(manifest, settings)
        problems = _target_problems(settings)
        if problems and not force:
            raise Conflict(
                f"the target is not empty ({'; '.join(problems)}): restore into an empty state folder and "
                "database, or pass --force to replace them"
            )
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=state))
        try:
            # 1. stage the files beside their final places
            if (folder / "models").is_dir():
                shutil.copytree(folder / "models", staging / "models")
            else:
                (staging / "models").mkdir()
            index_kind = manifest["index"]["kind"]
            edge_target = (
                index_kind == "edge"
                and not settings.qdrant_url
                and settings.qdrant_backend == "edge"
                and settings.qdrant_location != ":memory:"
            )
            if edge_target:
                _restore_edge_index(folder, manifest, settings, staging / "index")
            # 2. the database: SQLite as a new file swapped in; Postgres in one transaction
            url = settings.db_url
            if url.startswith("sqlite"):
                db_path = Path(url.split("///", 1)[-1])
                staged_db = staging / "jobclass.db"
                if manifest["database"]["dialect"] == "sqlite":
                    shutil.copyfile(folder / SQLITE_FILE, staged_db)
                migrate(f"sqlite:///{staged_db}")
                engine = make_engine(f"sqlite:///{staged_db}")
            else:
                migrate(url)
                engine = make_engine(url)
            try:
                with engine.begin() as conn:
                    if not (url.startswith("sqlite") and manifest["database"]["dialect"] == "sqlite"):
                        rows = _load_rows(conn, folder, manifest)
                    else:
                        rows = _counts(conn)
            finally:
                engine.dispose()
            # 3. swap: the database file (SQLite), the registries, the index folder
            if url.startswith("sqlite"):
                db_path.parent.mkdir(parents=True, exist_ok=True)
                for suffix in ("-wal", "-shm"):
                    db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
                _swap_in(staged_db, db_path)
            _swap_in(staging / "models", settings.model_dir)
            if edge_target:
                _swap_in(staging / "index", Path(settings.qdrant_location))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # 4. the index of the other backends, and a model check, through the restored state's runtime
        runtime = open_runtime(settings)
        try:
            runtime.load_active_model()
            restored = "snapshot" if edge_target else "rebuilt"
            server = index_kind == "server" and bool(settings.qdrant_url)
            if not edge_target and server and _embedding_matches(manifest, runtime):
                _restore_server_index(folder, manifest, runtime)
                restored = "snapshot"
            elif not edge_target or not _embedding_matches(manifest, runtime):
                from app.services.index import reindex

                with runtime.sessions() as session:
                    reindex(runtime, session)
                restored = "rebuilt"
            points = runtime.store.count()
        finally:
            runtime.close()
    dialect = "sqlite" if settings.db_url.startswith("sqlite") else "postgresql"
    return RestoreResult(
        source, dialect, rows, manifest["model"].get("active"), restored, points, time.perf_counter() - start
    )
