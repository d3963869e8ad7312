"""Damaged, half-written or read-only state (an adversarial run's items 9 and 10).

- A retrain whose database write fails leaves no registry version without its ``model_versions`` row,
  and a leftover ``models/.tmp-*`` folder (a save that crashed) is never listed as a version.
- A damaged model (an unreadable ``head.safetensors``, ``metadata.json`` or ``classifier.json``, an
  unreadable ``ACTIVE`` marker or one naming a missing version) and a read-only models folder give one
  error naming the file and the fix (``models.registry.RegistryError``: exit 2 in the CLI, 503 in the
  API), the server does not start, and nothing trains a new model over it.

Most tests copy one seeded installation (SQLite, two trained versions, the newer active) built once per
module; the database-outage test runs on SQLite and Postgres through the shared ``runtime`` fixture.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.cli import cli, common
from app.db import ModelVersion, migrate
from app.errors import ModelDamaged, RegistryError
from app.main import create_app
from app.runtime import Runtime
from app.services.bootstrap import bootstrap
from app.services.training import retrain, train
from app.settings import get_settings
from models.registry import ModelRegistry
from tests.conftest import make_settings, memory_qdrant
from tests.factories import one_error_line, seed
from tests.fakes import FakeEncoder

runner = CliRunner()
Damage = Callable[[Path, str, str], None]  # (models folder, active version, the other version)


# ---- a seeded installation, copied per test -------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder: SQLite with the topic texts, two trained versions (the newer one active)."""
    state = tmp_path_factory.mktemp("seeded")
    settings = make_settings(state)
    migrate(settings.db_url)
    rt = Runtime(settings, encoder=FakeEncoder(), qdrant=memory_qdrant())
    try:
        seed(rt, state)
        with rt.sessions() as session:
            train(rt, session)
    finally:
        rt.close()
    return state


@pytest.fixture
def state(seeded: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(seeded, copy)
    return copy


def versions_of(state: Path) -> tuple[str, str]:
    """(the active version, the other one)."""
    models = state / "models"
    active = (models / "ACTIVE").read_text().strip()
    other = next(p.name for p in models.iterdir() if p.is_dir() and p.name not in (active, "encoders"))
    return active, other


def folders(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.is_dir())


def make_runtime(state: Path) -> Runtime:
    return Runtime(make_settings(state), encoder=FakeEncoder(), qdrant=memory_qdrant())


@pytest.fixture
def cli_env(state: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The copied installation as a user points the CLI at it (the environment)."""
    for name in ("JOBCLASS_QDRANT_URL", "JOBCLASS_QDRANT_PATH", "JOBCLASS_PROFILE", "JOBCLASS_EXTRACTOR_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(common.TRACEBACK_ENV, raising=False)
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(state))
    monkeypatch.setenv("JOBCLASS_DATABASE_URL", f"sqlite:///{state / 'test.db'}")
    monkeypatch.setenv("JOBCLASS_EMBEDDING_MODEL", "fake-encoder")
    monkeypatch.setenv("JOBCLASS_EMBEDDING_BACKEND", "torch")  # as make_settings: the state was built on it
    monkeypatch.setenv("JOBCLASS_QDRANT_BACKEND", "local")
    get_settings.cache_clear()
    yield state
    get_settings.cache_clear()


def assert_suggests_a_good_version(state: Path, message: str) -> None:
    """The fix a damage message gives, `jobclass models activate <version>`, names a version that loads."""
    found = re.search(r"`jobclass models activate (\S+)`", message)
    assert found, message
    ModelRegistry(state / "models").load(found.group(1))


def model_rows(runtime: Runtime) -> set[str]:
    with runtime.sessions() as session:
        return set(session.scalars(select(ModelVersion.id)))


# ---- item 9: the registry and the database agree ----------------------------------------------------
class _Outage:
    """The database going away at a session's commit (or flush): an OperationalError, as psycopg gives."""

    def __init__(self, session: Session, at: str) -> None:
        self.calls = 0
        original = getattr(session, at)

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
            return original(*args, **kwargs)

        setattr(session, at, fail)


@pytest.mark.parametrize("at", ["commit", "flush"])
def test_a_retrain_that_fails_on_a_database_outage_leaves_no_version_without_a_row(
    runtime: Runtime, tmp_path: Path, at: str
) -> None:
    seed(runtime, tmp_path)
    registry = runtime.registry
    before = folders(registry.root)
    rows_before = model_rows(runtime)
    with runtime.sessions() as session:
        _Outage(session, at)
        with pytest.raises(OperationalError):
            retrain(runtime, session)
    assert folders(registry.root) == before  # no version folder, no .tmp-* folder
    assert {m["version"] for m in registry.versions()} == rows_before == model_rows(runtime)
    # the next retrain (the database is back) registers a version with its row
    with runtime.sessions() as session:
        done = retrain(runtime, session)
    assert done.version in model_rows(runtime) and (registry.root / done.version).is_dir()


def test_a_leftover_tmp_folder_is_not_a_version(state: Path, cli_env: Path) -> None:
    active, _ = versions_of(state)
    models = state / "models"
    shutil.copytree(models / active, models / f".tmp-{ModelRegistry.new_version_id()}")  # a crashed save
    (models / "encoders").mkdir(exist_ok=True)
    shutil.copytree(models / active, models / "encoders" / ".tmp-enc-20990101T000000Z-abcdef")

    runtime = make_runtime(state)
    try:
        assert len(runtime.registry.versions()) == 2
        with TestClient(create_app(runtime.settings, runtime)) as client:
            listed = client.get("/v1/models")
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["models"]) == 2 and listed.json()["active"] == active
    finally:
        runtime.close()
    result = runner.invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 2
    assert runner.invoke(cli, ["encoders", "list"]).exit_code == 0, result.output


# ---- item 10: damaged state: one line naming the file and the fix, never a silent retrain ---------
def _garbage(name: str) -> Damage:
    def damage(models: Path, active: str, other: str) -> None:
        (models / active / name).write_bytes(b"\x00\xff not what was written \xfe")

    return damage


def _written(name: str, content: bytes) -> Damage:
    def damage(models: Path, active: str, other: str) -> None:
        (models / active / name).write_bytes(content)

    return damage


def _truncated(name: str) -> Damage:
    def damage(models: Path, active: str, other: str) -> None:
        path = models / active / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def _marker(content: bytes) -> Damage:
    def damage(models: Path, active: str, other: str) -> None:
        (models / "ACTIVE").write_bytes(content)

    return damage


def _missing_version(models: Path, active: str, other: str) -> None:
    shutil.rmtree(models / active)  # the marker names a version that is gone


# (the damage, the file the message must name)
DAMAGES: dict[str, tuple[Damage, str]] = {
    "head.safetensors garbage": (_garbage("head.safetensors"), "{active}/head.safetensors"),
    "head.safetensors truncated": (_truncated("head.safetensors"), "{active}/head.safetensors"),
    "head_fp32.safetensors truncated": (_truncated("head_fp32.safetensors"), "{active}/head_fp32.safetensors"),
    "metadata.json garbage": (_garbage("metadata.json"), "{active}/metadata.json"),
    "metadata.json not metadata": (_written("metadata.json", b"[1, 2]"), "{active}/metadata.json"),
    "classifier.json garbage": (_garbage("classifier.json"), "{active}/classifier.json"),
    "classifier.json truncated": (_truncated("classifier.json"), "{active}/classifier.json"),
    "ACTIVE garbage": (_marker(b"\xff\xfe\x00\x01"), "models/ACTIVE"),
    "ACTIVE empty": (_marker(b""), "models/ACTIVE"),
    "ACTIVE not a version": (_marker(b"../elsewhere\n"), "models/ACTIVE"),
    "ACTIVE names a missing version": (_missing_version, "models/ACTIVE"),
}


@pytest.fixture(params=sorted(DAMAGES))
def damaged(request: pytest.FixtureRequest, state: Path) -> tuple[Path, str, str]:
    """The copied installation with one damage: (state, the file the error must name, the good version)."""
    active, other = versions_of(state)
    damage, file = DAMAGES[request.param]
    damage(state / "models", active, other)
    return state, file.format(active=active), other


def test_a_damaged_model_is_an_error_naming_the_file_and_the_fix(damaged: tuple[Path, str, str]) -> None:
    state, file, _ = damaged
    runtime = make_runtime(state)
    try:
        with pytest.raises(ModelDamaged) as info:
            runtime.load_active_model()
    finally:
        runtime.close()
    message = str(info.value)
    assert file in message and len(message.splitlines()) == 1 and "jobclass train" in message
    assert_suggests_a_good_version(state, message)


def test_setup_does_not_train_over_a_damaged_model(damaged: tuple[Path, str, str]) -> None:
    state, file, _ = damaged
    before = folders(state / "models")
    runtime = make_runtime(state)
    try:
        with pytest.raises(ModelDamaged, match=re.escape(file)):
            bootstrap(runtime, lambda _: None)
        assert folders(state / "models") == before  # no new version
        assert len(model_rows(runtime)) == 2
    finally:
        runtime.close()


def test_the_server_refuses_to_start_on_a_damaged_model(damaged: tuple[Path, str, str]) -> None:
    state, file, _ = damaged
    runtime = make_runtime(state)
    try:
        app = create_app(runtime.settings, runtime)
        with pytest.raises(ModelDamaged, match=re.escape(file)), TestClient(app):
            pass
    finally:
        runtime.close()


@pytest.mark.parametrize("command", [["setup"], ["serve", "--no-setup"], ["serve"], ["report", "--out"]])
def test_cli_commands_on_a_damaged_model_exit_2_with_one_line(
    damaged: tuple[Path, str, str], cli_env: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, file, _ = damaged
    started: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **_: started.append(app))  # a server must not start
    monkeypatch.setattr("app.observability.configure_json_logging", lambda: None)  # pytest keeps its handlers
    monkeypatch.setattr("app.runtime.load_encoder", lambda settings: FakeEncoder())
    before = folders(state / "models")
    result = runner.invoke(cli, [*command, str(state / "report")] if command[-1] == "--out" else command)
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert file in line
    assert_suggests_a_good_version(state, line)
    assert not started and folders(state / "models") == before


def test_activating_another_version_repairs_a_damaged_one(damaged: tuple[Path, str, str], cli_env: Path) -> None:
    state, _, other = damaged
    result = runner.invoke(cli, ["models", "activate", other])
    assert result.exit_code == 0, result.output
    runtime = make_runtime(state)
    try:
        loaded = runtime.load_active_model()
        assert loaded is not None and loaded.version == other
    finally:
        runtime.close()


def test_models_list_shows_the_readable_versions_and_names_the_damaged_one(state: Path, cli_env: Path) -> None:
    active, other = versions_of(state)
    (state / "models" / other / "metadata.json").write_text("{not json")
    result = runner.invoke(cli, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert f"* {active}" in result.output and "Traceback" not in result.output
    assert f"model {other} is damaged" in result.output and f"{other}/metadata.json" in result.output
    runtime = make_runtime(state)
    try:
        with TestClient(create_app(runtime.settings, runtime)) as client:
            listed = client.get("/v1/models")
        assert listed.status_code == 200 and [m["version"] for m in listed.json()["models"]] == [active]
    finally:
        runtime.close()


def test_activating_a_damaged_version_is_a_503_in_the_api_and_exit_2_in_the_cli(state: Path, cli_env: Path) -> None:
    active, other = versions_of(state)
    _truncated("head.safetensors")(state / "models", other, active)
    runtime = make_runtime(state)
    try:
        with TestClient(create_app(runtime.settings, runtime)) as client:
            answer = client.post(f"/v1/admin/models/{other}/activate")
            assert answer.status_code == 503, answer.text
            assert f"model {other} is damaged" in answer.json()["detail"]
            assert f"{other}/head.safetensors" in answer.json()["detail"]
            assert client.get("/v1/models").json()["active"] == active  # nothing switched
    finally:
        runtime.close()
    result = runner.invoke(cli, ["models", "activate", other])
    assert result.exit_code == 2, result.output
    assert f"{other}/head.safetensors" in one_error_line(result)
    assert (state / "models" / "ACTIVE").read_text().strip() == active


def test_setup_with_versions_but_no_active_marker_does_not_train(state: Path) -> None:
    active, _ = versions_of(state)
    (state / "models" / "ACTIVE").unlink()
    runtime = make_runtime(state)
    try:
        with pytest.raises(RegistryError, match=f"jobclass models activate {active}"):
            bootstrap(runtime, lambda _: None)
        assert len(runtime.registry.versions()) == 2
    finally:
        runtime.close()


# ---- a read-only models folder -------------------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make a folder read-only as a read-only mount does (EROFS on every write under it): chmod does not
    stop root, who may run the tests."""

    def apply(root: Path) -> None:
        root = root.resolve()

        def inside(path: Any) -> bool:
            return Path(path).resolve().is_relative_to(root)

        def refuse(path: Any) -> OSError:
            return OSError(errno.EROFS, "Read-only file system", str(path))

        def guard(original: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(path: Any, *args: Any, **kwargs: Any) -> Any:
                if inside(path):
                    raise refuse(path)
                return original(path, *args, **kwargs)

            return wrapped

        for name in ("mkdir", "write_text", "write_bytes", "touch"):
            monkeypatch.setattr(Path, name, guard(getattr(Path, name)))
        real_replace = os.replace

        def replace(src: Any, dst: Any) -> None:
            if inside(src) or inside(dst):
                raise refuse(dst)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)

    return apply


def test_training_into_a_read_only_models_folder_is_one_line_and_leaves_no_row(
    state: Path, cli_env: Path, read_only: Callable[[Path], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.runtime.load_encoder", lambda settings: FakeEncoder())
    read_only(state / "models")
    before = folders(state / "models")
    result = runner.invoke(cli, ["train"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result)
    assert "Read-only file system" in line and "writable" in line and str(state / "models") in line
    assert folders(state / "models") == before
    runtime = make_runtime(state)
    try:
        assert len(model_rows(runtime)) == 2  # the row was rolled back with the failed save
    finally:
        runtime.close()


def test_activating_in_a_read_only_models_folder_is_a_503(state: Path, read_only: Callable[[Path], None]) -> None:
    active, other = versions_of(state)
    runtime = make_runtime(state)
    try:
        with TestClient(create_app(runtime.settings, runtime)) as client:
            read_only(state / "models")
            answer = client.post(f"/v1/admin/models/{other}/activate")
            assert answer.status_code == 503, answer.text
            assert "writable" in answer.json()["detail"]
        assert runtime.model.version == active
        with runtime.sessions() as session:
            flagged = session.scalar(select(ModelVersion.id).where(ModelVersion.is_active.is_(True)))
            assert flagged == active and session.scalar(select(func.count()).select_from(ModelVersion)) == 2
    finally:
        runtime.close()


def test_registry_errors_map_to_exit_2() -> None:
    assert common.describe(RegistryError("model x is damaged: y\nmore")) == (2, "model x is damaged: y")
    assert common.describe(ModelDamaged("the active-model marker z is empty")) == (
        2,
        "the active-model marker z is empty",
    )
