"""`jobclass snapshot` / `jobclass restore` (app/services/snapshot.py), on SQLite and the real Postgres: a
restore onto an empty state folder and database answers the same requests identically (label,
probabilities, neighbours), from the embedded engine's index snapshot and from an index rebuilt out of the
database (local mode has no snapshots); a non-empty target, a damaged file and an unknown format are one
line and exit 2."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, make_url, select, text
from typer.testing import CliRunner

from app.cli import cli, common
from app.db import Base, Feedback, JobRow, Prediction, make_engine
from app.runtime import Runtime
from app.services.classification import ClassifyItem, classify
from app.services.feedback import submit_feedback
from app.services.search import search_text
from app.services.snapshot import (
    FORMAT_VERSION,
    INDEX_FILE,
    SnapshotResult,
    read_manifest,
    restore_snapshot,
    take_snapshot,
)
from app.settings import Settings, get_settings
from tests.conftest import POSTGRES_URL, make_settings
from tests.factories import one_error_line, seed
from tests.fakes import TOPICS, FakeEncoder

QUERIES = [" ".join(words[:4]) + " team in aarhus" for words in TOPICS.values()] + ["good salary full time"]


def answers(runtime: Runtime) -> list[Any]:
    """What the same classify and search requests answer (nothing is stored)."""
    runtime.load_active_model()
    out: list[Any] = []
    for result in classify(runtime, None, [ClassifyItem(q) for q in QUERIES], top_k=5):
        out.append(
            (
                result.label,
                [(p.label, p.probability) for p in result.probabilities],
                [(h.vacancy_id, h.label, h.score) for h in result.neighbours],
                result.model_version,
            )
        )
    for q in QUERIES[:3]:
        out.append([(h.vacancy_id, h.label, h.score, h.labelled_at) for h in search_text(runtime, q, 8)])
    return out


def assert_same_classifications(after: list[Any], before: list[Any]) -> None:
    """Labels, probabilities and neighbours alike up to float32 rounding: a rebuilt local-mode index holds
    the same vectors in another order, which moves scores in the 7th digit (and the order of near-ties
    in a hybrid search, not compared here)."""
    n = len(QUERIES)
    for (label, probs, hits, model), (label0, probs0, hits0, model0) in zip(after[:n], before[:n], strict=True):
        assert (label, model, [p[0] for p in probs]) == (label0, model0, [p[0] for p in probs0])
        assert [p[1] for p in probs] == pytest.approx([p[1] for p in probs0], rel=1e-5, abs=1e-9)
        assert [h[:2] for h in hits] == [h[:2] for h in hits0]
        assert [h[2] for h in hits] == pytest.approx([h[2] for h in hits0], abs=1e-6)


def open_runtime(settings: Settings) -> Runtime:
    return Runtime(settings, encoder=FakeEncoder())


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def restore_url(migrated_engine: Engine, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind to restore into: a SQLite file in a new state folder, or a second
    Postgres database (``<name>_restore``, created here) whose schema is dropped before and after."""
    if migrated_engine.dialect.name == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'jobclass.db'}"
        return
    base = make_url(POSTGRES_URL)
    url = base.set(database=f"{base.database}_restore").render_as_string(hide_password=False)
    with migrated_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": f"{base.database}_restore"})
        if exists.scalar() is None:
            conn.execute(text(f'CREATE DATABASE "{base.database}_restore"'))
    engine = make_engine(url)

    def wipe() -> None:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))

    wipe()
    yield url
    wipe()
    engine.dispose()


@pytest.fixture
def source(migrated_engine: Engine) -> Iterator[Engine]:
    """The shared migrated database as a real installation's (independent sessions); emptied afterwards."""
    yield migrated_engine
    with migrated_engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


def installation(state: Path, engine: Engine, backend: str) -> Runtime:
    """A seeded installation: labelled vacancies, a model, an index, predictions and a correction."""
    settings = make_settings(
        state, database_url=url_of(engine), qdrant_path=str(state / "index"), qdrant_backend=backend
    )
    runtime = Runtime(settings, encoder=FakeEncoder(), engine=engine)
    seed(runtime, state)
    with runtime.sessions() as session:
        [first, second] = classify(runtime, session, [ClassifyItem(QUERIES[0]), ClassifyItem(QUERIES[1])])
        assert first.prediction_id and second.prediction_id
        submit_feedback(runtime, session, first.prediction_id, "Ledelse")  # a correction: enters the index
        submit_feedback(runtime, session, second.prediction_id, "Ledelse")
    return runtime


def check_manifest(snap: Path, source: Engine, model: str) -> None:
    manifest = read_manifest(snap)
    assert manifest["format_version"] == FORMAT_VERSION and manifest["jobclass_version"]
    assert manifest["database"]["dialect"] == source.dialect.name and manifest["database"]["revision"]
    assert manifest["model"]["active"] == model and manifest["encoder"]["embedding"]["model"] == "fake-encoder"
    assert manifest["index"]["collection"].startswith("vacancies_v") and manifest["index"]["points"] == 38
    assert set(manifest["database"]["rows"]) >= {"vacancies", "predictions", "feedback", JobRow.__tablename__}
    assert f"models/{model}/metadata.json" in manifest["files"]
    database_files = {name for name in manifest["files"] if name.startswith("database/")}
    if source.dialect.name == "sqlite":
        assert database_files == {"database/jobclass.db"}
    else:  # one file per table, in primary-key order
        assert "database/alembic_version.jsonl" in database_files and "database/vacancies.jsonl" in database_files
        ids = [json.loads(line)["id"] for line in (snap / "database" / "vacancies.jsonl").open()]
        assert ids == sorted(ids)


@pytest.mark.parametrize(("backend", "archive"), [("edge", False), ("local", True)])
def test_a_restore_onto_an_empty_state_answers_identically(
    backend: str, archive: bool, source: Engine, restore_url: str, tmp_path: Path
) -> None:
    runtime = installation(tmp_path / "a", source, backend)
    try:
        before = answers(runtime)
        out = tmp_path / ("snap.tar" if archive else "snap")
        done: SnapshotResult = take_snapshot(runtime, out)
    finally:
        runtime.close()
    assert done.index == ("edge" if backend == "edge" else "rebuild") and done.model is not None
    assert done.rows["feedback"] == 2 and done.rows["predictions"] == 2 and done.rows["vacancies"] == 38
    if not archive:
        check_manifest(out, source, done.model)

    target = make_settings(
        tmp_path / "b", database_url=restore_url, qdrant_path=str(tmp_path / "b" / "index"), qdrant_backend=backend
    )
    restored = restore_snapshot(target, out, open_runtime=open_runtime)
    assert restored.index == ("snapshot" if backend == "edge" else "rebuilt")
    assert restored.model == done.model and restored.rows["feedback"] == 2
    assert restored.points == done.points or done.points is None

    again = open_runtime(target)
    try:
        after = answers(again)
        if restored.index == "snapshot":
            assert after == before  # the same index: the same answers, bit for bit
        else:  # rebuilt (local mode has no snapshots): the same vectors, inserted in another order
            assert_same_classifications(after, before)
        with again.sessions() as session:
            # the sequences were reset past the restored ids: a new correction gets a new id
            [result] = classify(again, session, [ClassifyItem(QUERIES[2])])
            assert result.prediction_id
            submit_feedback(again, session, result.prediction_id, "Ledelse")
            ids = list(session.scalars(select(Feedback.id).order_by(Feedback.id)))
            assert len(ids) == 3 and len(set(ids)) == 3
            assert session.scalar(select(Prediction).where(Prediction.id == result.prediction_id)) is not None
    finally:
        again.close()


# ---- the CLI: one line and exit 2 for what the user can fix --------------------------------------
@pytest.fixture
def cli_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A SQLite installation (edge index) the CLI is pointed at through the environment."""
    state = tmp_path / "cli"
    for name in ("JOBCLASS_QDRANT_URL", "JOBCLASS_QDRANT_PATH", "JOBCLASS_PROFILE", "JOBCLASS_EXTRACTOR_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(common.TRACEBACK_ENV, raising=False)
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(state))
    monkeypatch.setenv("JOBCLASS_DATABASE_URL", f"sqlite:///{state / 'jobclass.db'}")
    monkeypatch.setenv("JOBCLASS_EMBEDDING_MODEL", "fake-encoder")
    monkeypatch.setenv("JOBCLASS_EMBEDDING_BACKEND", "torch")  # as make_settings: the state was built on it
    monkeypatch.setenv("JOBCLASS_QDRANT_BACKEND", "edge")
    monkeypatch.setenv("JOBCLASS_FUSION_CROSSFIT", "0")
    monkeypatch.setenv("JOBCLASS_MICROBATCH", "false")
    monkeypatch.setenv("JOBCLASS_ABSTAIN_THRESHOLD", "0")
    monkeypatch.setattr(common, "runtime", lambda settings=None: open_runtime(settings or get_settings()))
    get_settings.cache_clear()
    from app.db import migrate

    migrate(get_settings().db_url)
    runtime = open_runtime(get_settings())
    try:
        seed(runtime, tmp_path)
    finally:
        runtime.close()
    yield state
    get_settings.cache_clear()


def test_cli_snapshot_and_restore(cli_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    taken = runner.invoke(cli, ["snapshot", str(tmp_path / "s.tar")])
    assert taken.exit_code == 0, taken.output
    assert "an index snapshot of" in taken.output and "sqlite database" in taken.output

    again = runner.invoke(cli, ["snapshot", str(tmp_path / "s.tar")])
    assert again.exit_code == 2 and "already exists" in one_error_line(again)

    refused = runner.invoke(cli, ["restore", str(tmp_path / "s.tar")])  # onto the installation itself
    assert refused.exit_code == 2
    line = one_error_line(refused)
    assert "the target is not empty" in line and "--force" in line and "vacancies" in line

    forced = runner.invoke(cli, ["restore", "--force", str(tmp_path / "s.tar")])
    assert forced.exit_code == 0, forced.output
    assert "index from the snapshot" in forced.output

    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("JOBCLASS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty' / 'jobclass.db'}")
    get_settings.cache_clear()
    restored = runner.invoke(cli, ["restore", str(tmp_path / "s.tar")])
    assert restored.exit_code == 0, restored.output
    assert (tmp_path / "empty" / "models" / "ACTIVE").is_file()
    assert not [p.name for p in (tmp_path / "empty").iterdir() if p.name.startswith(".")]  # no staging left


def answers_of(settings: Settings) -> list[Any]:
    runtime = open_runtime(settings)
    try:
        return answers(runtime)
    finally:
        runtime.close()


def test_restore_checks_the_snapshot_and_a_failure_changes_nothing(cli_state: Path, tmp_path: Path) -> None:
    """A damaged file, an unknown format or a missing manifest: one line, exit 2, before anything changes.
    An error while the new state is built (an index archive damaged although its checksum fits) changes
    nothing either: the old database, models and index still serve, no staging folder is left."""
    runner = CliRunner()
    snap = tmp_path / "s"
    assert runner.invoke(cli, ["snapshot", str(snap)]).exit_code == 0
    target = ["restore", "--force", str(snap)]
    manifest = json.loads((snap / "manifest.json").read_text())
    model_file = next(name for name in manifest["files"] if name.endswith("metadata.json"))
    original = (snap / model_file).read_bytes()
    (snap / model_file).write_bytes(original + b" ")
    damaged = runner.invoke(cli, target)
    assert damaged.exit_code == 2 and f"checksum of {model_file} does not match" in one_error_line(damaged)
    (snap / model_file).write_bytes(original)

    (snap / "manifest.json").write_text(json.dumps(manifest | {"format_version": 99}))
    newer = runner.invoke(cli, target)
    assert newer.exit_code == 2 and "format version 99 is not supported" in one_error_line(newer)
    (snap / "manifest.json").write_text(json.dumps(manifest | {"format": "something else"}))
    other = runner.invoke(cli, target)
    assert other.exit_code == 2 and "not a jobclass snapshot manifest" in one_error_line(other)

    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    junk = runner.invoke(cli, ["restore", str(tmp_path / "junk.tar")])
    assert junk.exit_code == 2 and "not a readable snapshot archive" in one_error_line(junk)
    nothing = runner.invoke(cli, ["restore", str(tmp_path)])
    assert nothing.exit_code == 2 and "not a jobclass snapshot: no manifest.json" in one_error_line(nothing)
    before = answers_of(get_settings())
    active = (cli_state / "models" / "ACTIVE").read_text()
    (snap / INDEX_FILE).write_bytes(b"not a shard archive")
    manifest["files"][INDEX_FILE]["sha256"] = hashlib.sha256(b"not a shard archive").hexdigest()
    (snap / "manifest.json").write_text(json.dumps(manifest))
    failed = runner.invoke(cli, ["restore", "--force", str(snap)])
    assert failed.exit_code == 1 and one_error_line(failed)
    assert answers_of(get_settings()) == before
    assert (cli_state / "models" / "ACTIVE").read_text() == active
    assert not [p.name for p in cli_state.iterdir() if p.name.startswith(".")]
