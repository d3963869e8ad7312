"""Shared fixtures: settings in a temp state folder, SQLite and real Postgres, in-memory Qdrant.

Database tests run once per backend. Postgres is the real server at JOBCLASS_TEST_POSTGRES_URL
(default 127.0.0.1:5432/test, trust auth); when it is unreachable the tests skip locally but fail
under CI=true.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import sessionmaker

from app.db import JobRow, make_engine, make_session_factory, migrate
from app.runtime import Runtime
from app.services.jobs import JobRegistry
from app.settings import Settings
from indexing.edge_store import EdgeClient
from tests.fakes import FakeEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSTGRES_URL = os.environ.get("JOBCLASS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def memory_qdrant() -> QdrantClient | EdgeClient:
    """An in-memory vector store: qdrant-client local mode, or the embedded Qdrant engine when
    JOBCLASS_TEST_QDRANT_BACKEND=edge (the whole suite runs on either)."""
    if os.environ.get("JOBCLASS_TEST_QDRANT_BACKEND", "local") == "edge":
        return EdgeClient(":memory:")
    return QdrantClient(":memory:")


def make_settings(state_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "state_dir": state_dir,
        "database_url": f"sqlite:///{state_dir / 'test.db'}",
        "qdrant_path": ":memory:",
        "embedding_model": "fake-encoder",
        # tests that load the real model keep torch: an OpenVINO export per test folder would cost seconds each
        # (tests/unit/test_embed_backend.py covers the backends)
        "embedding_backend": "torch",
        "abstain_threshold": 0.0,
        # The seeded hold-outs are a handful of rows: at the default coverage 0.9 the conformal rank
        # ceil((n + 1)·0.9) exceeds n, the set is every label and every answer abstains (as it should with
        # so little evidence). Tests of the sets and the abstain rule give their own coverage and data.
        "coverage": 0.5,
        "microbatch": False,  # tests that need micro-batching turn it on (tests/unit/test_batching.py)
        # five extra head fits per training would double the suite; cross-fitting has its own tests
        "fusion_crossfit": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def _postgres_engine() -> Engine:
    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        engine.dispose()
        message = f"Postgres at {POSTGRES_URL} is unreachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: Postgres tests must run)", pytrace=False)
        pytest.skip(message)
    return engine


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def migrated_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A fresh schema, created by the Alembic migrations, per backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'jobclass.db'}"
        engine = make_engine(url)
    else:
        engine = _postgres_engine()
        url = POSTGRES_URL
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate(url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_sessions(migrated_engine: Engine, tmp_path: Path) -> Iterator[sessionmaker]:
    """A session factory whose writes the next test never sees, the code under test committing freely.

    Postgres: bound to one connection whose transaction is rolled back after the test (commits become
    savepoints). SQLite: a copy of the migrated database for this test alone, with the service's own engine
    (a connection per session, as in production): a job's thread and the requests polling it never share a
    connection, whose savepoints would interleave."""
    if migrated_engine.dialect.name == "sqlite":
        copy = tmp_path / "db-copy.sqlite"
        with migrated_engine.connect() as source:
            raw, target = source.connection.driver_connection, sqlite3.connect(copy)
            try:
                raw.backup(target)  # type: ignore[union-attr]
            finally:
                target.close()
        engine = make_engine(f"sqlite:///{copy}")
        yield make_session_factory(engine)
        engine.dispose()
        return
    connection = migrated_engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield factory
    outer.rollback()
    connection.close()


@pytest.fixture
def runtime(settings: Settings, migrated_engine: Engine, db_sessions: sessionmaker) -> Iterator[Runtime]:
    rt = Runtime(settings, encoder=FakeEncoder(), qdrant=memory_qdrant(), engine=migrated_engine)
    rt.sessions = db_sessions
    # On Postgres, job rows go through their own connections: a job's thread and the request threads polling
    # it must not share the test's one connection (their savepoints interleave). They are deleted afterwards.
    # (SQLite: db_sessions is a per-test database with a connection per session already.)
    own_jobs = migrated_engine.dialect.name == "postgresql"
    if own_jobs:
        rt.jobs = JobRegistry(sessionmaker(bind=migrated_engine, expire_on_commit=False))
    yield rt
    if own_jobs:
        rt.jobs.shutdown()
        with migrated_engine.begin() as connection:
            connection.execute(delete(JobRow))
    if rt.cache is not None:
        rt.cache.close()
    rt.store.client.close()
