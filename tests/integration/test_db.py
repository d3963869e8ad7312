"""Schema and ingest, on SQLite and the real Postgres."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from app.db import Base, Vacancy
from app.runtime import Runtime
from app.services.vacancies import count_labelled, ingest_csv
from tests.factories import write_csv


def test_migrations_create_exactly_the_models(migrated_engine: Engine) -> None:
    tables = set(inspect(migrated_engine).get_table_names())
    assert {"vacancies", "predictions", "feedback", "model_versions", "alembic_version"} <= tables
    with migrated_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_ingest_upserts_by_id_and_reports_bad_rows(runtime: Runtime, tmp_path: Path) -> None:
    first = write_csv(
        tmp_path / "a.csv",
        [
            ("v1", "<p>Carpenter for roofs, call +45 22 33 44 55</p>", "Bygge og anlæg"),
            ("v2", "Python developer", "It og teleteknik"),
            ("v3", "Unlabelled ad text", ""),
            ("v4", "Some ad", "Not a category"),
            ("v5", "   ", "Ledelse"),
            ("v2", "duplicate id", "Ledelse"),
        ],
    )
    with runtime.sessions() as session:
        result = ingest_csv(session, first, runtime.taxonomy, skip_invalid=True)
        assert (result.added, result.updated, result.unchanged) == (3, 0, 0)
        assert len(result.rejected) == 3
        assert any("Not a category" in r for r in result.rejected)
        assert any("no text" in r for r in result.rejected) and any("duplicate id" in r for r in result.rejected)
        v1 = session.get(Vacancy, "v1")
        assert v1 is not None and v1.text == "Carpenter for roofs, call [PHONE]"  # cleaned and scrubbed
        assert count_labelled(session) == 2

    second = write_csv(
        tmp_path / "b.csv", [("v1", "Carpenter for roofs", "Bygge og anlæg"), ("v2", "Python developer", "Ledelse")]
    )
    with runtime.sessions() as session:
        result = ingest_csv(session, second, runtime.taxonomy)
        assert (result.added, result.updated, result.unchanged) == (0, 2, 0)
        labels = {vid: label for vid, label in session.execute(select(Vacancy.id, Vacancy.label))}
        assert labels == {"v1": "Bygge og anlæg", "v2": "Ledelse", "v3": None}
        revisions = {vid: rev for vid, rev in session.execute(select(Vacancy.id, Vacancy.revision))}
        assert revisions == {"v1": 1, "v2": 1, "v3": 0}  # each change is counted (index writes are ordered by it)
