"""Schema and ingest, on SQLite and the real Postgres."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from app.db import Base, Vacancy, make_engine, migrate
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


def test_0007_fills_the_answer_of_older_predictions_from_their_label(tmp_path: Path) -> None:
    """Before 0007 an answer was the top label unless it abstained; level and path stay unknown."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, "0006")
    engine = make_engine(url)
    row = "INSERT INTO predictions (id, text, text_hash, label, confidence, abstained, probabilities, neighbours, "
    row += "model_version, created_at) VALUES (:id, 't', 'h', :label, 0.5, :abstained, '[]', '[]', 'm', '2026-01-01')"
    with engine.begin() as conn:
        conn.execute(text(row), {"id": "answered", "label": "Ledelse", "abstained": False})
        conn.execute(text(row), {"id": "abstained", "label": "Ledelse", "abstained": True})
    migrate(url)
    with engine.connect() as conn:
        found: dict[str, str | None] = {i: a for i, a in conn.execute(text("SELECT id, answer FROM predictions"))}
        levels = set(conn.execute(text("SELECT level FROM predictions")).scalars())
    engine.dispose()
    assert found == {"answered": "Ledelse", "abstained": None} and levels == {None}
