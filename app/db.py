"""Relational storage (the source of truth): SQLAlchemy 2 models, engine and migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from app.settings import PROJECT_ROOT

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Vacancy(Base):
    """A vacancy text (cleaned) with its label, if known. Labelled vacancies make up the kNN index."""

    __tablename__ = "vacancies"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # Bumped by the database itself (``revision + 1``) in the transaction that changes the label or text:
    # index payloads carry it, so an older write never replaces a newer one (0003; 0 before it)
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    external_id: Mapped[str | None] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(200))  # the most probable (finest) label, also when it abstained
    confidence: Mapped[float] = mapped_column(Float)
    abstained: Mapped[bool] = mapped_column(Boolean, default=False)
    # the answer given (0007): ``label``, or in a hierarchical taxonomy the deepest node that met the
    # threshold (a parent of ``label``); null when it abstained. Its depth and root → answer path: null for
    # rows stored before 0007 (whose answer was their label unless they abstained)
    answer: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[list[str] | None] = mapped_column(JSON)
    probabilities: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    neighbours: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # ISO 639-1 guess of indexing.language ("da", "en", …; "und" when too short); null before 0002
    language: Mapped[str | None] = mapped_column(String(8), index=True)
    # uncertainty at classify time (0005; null before): the conformal prediction set (labels, most probable
    # first), its size, top-1 minus top-2 probability, and head/kNN disagreement (total variation distance
    # of their probability vectors; null without neighbours). The review queue orders by them.
    prediction_set: Mapped[list[str] | None] = mapped_column(JSON)
    set_size: Mapped[int | None] = mapped_column(Integer)
    margin: Mapped[float | None] = mapped_column(Float)
    disagreement: Mapped[float | None] = mapped_column(Float)

    feedback: Mapped[list[Feedback]] = relationship(back_populates="prediction", order_by="Feedback.id")


class Feedback(Base):
    """A user's correction of a prediction. History is kept: the latest row that is not retracted wins.
    A retracted row stays (``retracted_at`` set): the audit trail, never a hard delete."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), index=True)
    vacancy_id: Mapped[str] = mapped_column(ForeignKey("vacancies.id"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # when the correction was withdrawn (0006); null while it stands
    retracted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    prediction: Mapped[Prediction] = relationship(back_populates="feedback")
    vacancy: Mapped[Vacancy] = relationship()


class ModelVersion(Base):
    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    embedder: Mapped[str] = mapped_column(String(300))
    taxonomy_hash: Mapped[str] = mapped_column(String(64))
    data_hash: Mapped[str] = mapped_column(String(64))
    n_train: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent: Mapped[str | None] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(Boolean, default=False)


JOB_ACTIVE_STATUSES = ("queued", "running")


class JobRow(Base):
    """A background job (reindex, retrain, encoder upgrade or rollback): written when it is submitted, as
    it progresses and when it ends, so its status survives restarts and every API worker reads the same.
    The partial unique index lets one job of a kind be queued or running at a time, across processes."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # queued | running | succeeded | failed | interrupted
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the owner is alive
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    owner_host: Mapped[str] = mapped_column(String(255))
    owner_pid: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[str] = mapped_column(String(32))  # the JobRegistry instance that runs it

    __table_args__ = (
        Index(
            "uq_jobs_active_kind",
            "kind",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


# ---- engine and sessions -------------------------------------------------------------------
def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    # pool_pre_ping: a connection the server dropped (restart, pg_terminate_backend) is replaced on checkout,
    # so the service recovers without a restart; connect_timeout and pool_timeout bound how long a request
    # waits for a database that is gone before it answers 503.
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=10, connect_args={"connect_timeout": 5}
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


# ---- migrations -----------------------------------------------------------------------------
def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # alembic.ini's [loggers] are for the alembic command line: applied inside the service they replaced
    # its JSON handler, and `jobclass serve` logged no request lines after migrating.
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``: the only way tables are created."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
