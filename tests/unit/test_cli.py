"""CLI ergonomics: `jobclass --help` lists every command with a one-line description, and the one error
policy of `app.cli.common`: every error is one line `error: …`, never a traceback, with exit code 2 when the
user can fix it (bad input, configuration, a missing file) and 1 otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from app.cli import cli, common
from app.cli.common import describe
from app.db import migrate
from app.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.settings import Settings, get_settings
from indexing.store import StoreLockedError, connect
from tests.factories import one_error_line

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state folder (SQLite, models, Qdrant folder) through the environment, as a user sets it."""
    for name in ("JOBCLASS_DATABASE_URL", "JOBCLASS_QDRANT_URL", "JOBCLASS_QDRANT_PATH", "JOBCLASS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_help_lists_every_command_with_a_description() -> None:
    result = runner.invoke(cli, ["--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    group = typer.main.get_command(cli)
    commands = group.commands  # type: ignore[attr-defined]
    assert {"setup", "serve", "ingest", "train", "calibrate", "reindex", "retrain", "drift", "report", "models"} <= set(
        commands
    )
    lines = result.output.splitlines()
    for name, command in commands.items():
        summary = command.get_short_help_str(limit=1000)
        assert summary.strip(), f"`jobclass {name}` has no description"
        row = next((line for line in lines if line.strip(" │").startswith(name + " ")), None)
        assert row is not None, f"`jobclass {name}` is missing from --help:\n{result.output}"
        assert row.strip(" │")[len(name) :].strip(), f"`jobclass {name}` shows no description in --help"


def test_bad_date_is_one_line(state: Path) -> None:
    result = runner.invoke(cli, ["drift", "--since", "last tuesday", "--out", str(state / "out")])
    assert result.exit_code == 2
    assert "is not a date" in one_error_line(result)
    assert not (state / "out").exists()


def test_no_predictions_in_range_is_one_line(state: Path) -> None:
    migrate(f"sqlite:///{state / 'jobclass.db'}")
    result = runner.invoke(cli, ["drift", "--since", "2026-01-01", "--until", "2026-01-31", "--out", str(state / "o")])
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "no predictions in 2026-01-01" in line and "2026-02-01" in line


def test_report_without_a_model_is_one_line(state: Path) -> None:
    migrate(f"sqlite:///{state / 'jobclass.db'}")
    result = runner.invoke(cli, ["report", "--out", str(state / "report")])
    assert result.exit_code == 1
    assert "run `jobclass train`" in one_error_line(result)


def test_calibrate_without_a_model_is_one_line(state: Path) -> None:
    migrate(f"sqlite:///{state / 'jobclass.db'}")
    result = runner.invoke(cli, ["calibrate", "--target-accuracy", "0.95"])
    assert result.exit_code == 1
    assert "run `jobclass train`" in one_error_line(result)
    assert runner.invoke(cli, ["calibrate", "--target-accuracy", "1.5"]).exit_code == 2  # outside (0, 1)


@pytest.mark.parametrize("coverage", ["1", "0", "1.5", "-0.1"])
def test_a_coverage_outside_zero_one_is_one_line(state: Path, monkeypatch: pytest.MonkeyPatch, coverage: str) -> None:
    monkeypatch.setenv("JOBCLASS_COVERAGE", coverage)
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "JOBCLASS_COVERAGE" in one_error_line(result)


def test_unmigrated_database_says_to_migrate(state: Path) -> None:
    result = runner.invoke(cli, ["drift", "--since", "2026-01-01", "--out", str(state / "o")])
    assert result.exit_code == 1
    assert "jobclass migrate" in one_error_line(result)


def test_unreachable_database_is_one_line(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLASS_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/nowhere")
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: database error:") and "JOBCLASS_DATABASE_URL" in line


def test_invalid_settings_are_one_line(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLASS_PROFILE", "production")  # without an admin token
    monkeypatch.delenv("JOBCLASS_ADMIN_TOKEN", raising=False)
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "invalid configuration: the production profile needs JOBCLASS_ADMIN_TOKEN" in one_error_line(result)

    monkeypatch.setenv("JOBCLASS_PROFILE", "dev")
    monkeypatch.setenv("JOBCLASS_ABSTAIN_THRESHOLD", "2")
    get_settings.cache_clear()
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "JOBCLASS_ABSTAIN_THRESHOLD" in one_error_line(result)


def test_unknown_model_version_is_one_line(state: Path) -> None:
    migrate(f"sqlite:///{state / 'jobclass.db'}")
    result = runner.invoke(cli, ["models", "activate", "no-such-version"])
    assert result.exit_code == 2
    assert "unknown model version 'no-such-version'" in one_error_line(result)


@pytest.mark.parametrize("version", ["v" * 300, "v" * 5000, ".hidden", "a/b", "nul\x00"])
def test_a_missing_version_is_one_short_line_whatever_its_name(state: Path, version: str) -> None:
    """A name too long for a file name was an OSError (exit 1, the whole path printed)."""
    migrate(f"sqlite:///{state / 'jobclass.db'}")
    (state / "models" / "half").mkdir(parents=True)  # a folder without metadata is no version either
    for name in (version, "half"):
        result = runner.invoke(cli, ["models", "activate", name])
        assert result.exit_code == 2, result.output
        line = one_error_line(result)
        assert line.startswith("error: unknown model version ") and len(line) < 160, line


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_locked_index_is_one_line(state: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLASS_QDRANT_BACKEND", backend)
    settings = Settings()
    migrate(settings.db_url)
    holder = connect(path=settings.qdrant_location, backend=settings.qdrant_backend)  # as `jobclass serve` would
    try:
        result = runner.invoke(cli, ["reindex"])
    finally:
        holder.close()
    assert result.exit_code == 2
    assert "in use by another process" in one_error_line(result)


def test_known_errors_map_to_codes_and_bugs_do_not() -> None:
    assert describe(InvalidInput("bad")) == (2, "bad")
    assert describe(NotFound("gone")) == (2, "gone")
    assert describe(Conflict("busy")) == (2, "busy")
    assert describe(Unavailable("no model")) == (1, "no model")
    assert describe(StoreLockedError("locked\nmore")) == (2, "locked")
    missing = describe(FileNotFoundError(2, "No such file or directory", "/nope.csv"))
    assert missing == (2, "No such file or directory: /nope.csv")
    db = describe(OperationalError("SELECT 1", {}, Exception("connection refused\nDETAIL: x")))
    assert db is not None and db[0] == 1 and "connection refused" in db[1] and "DETAIL" not in db[1]
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, search_k=0)
    invalid = describe(info.value)
    assert invalid is not None and invalid[0] == 2 and invalid[1].startswith("invalid configuration: JOBCLASS_SEARCH_K")
    assert describe(ValueError("a bug\nsecond line")) == (1, "a bug")  # anything else: 1, still one line
    assert describe(RuntimeError()) == (1, "RuntimeError")


# ---- the error policy, one test per exit class --------------------------------------------------
def test_an_input_error_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def invalid(settings: Settings | None = None) -> Any:
        raise InvalidInput("training needs labelled vacancies of at least two classes")

    monkeypatch.setattr(common, "runtime", invalid)
    for args in (["train"], ["drift", "--since", "yesterday-ish", "--out", "unused"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        one_error_line(result)


def test_a_malformed_or_missing_file_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("id,text\n1,a carpenter\n")  # no label column
    args = ["finetune", "--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "train.csv")]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "missing column(s) label; the header must be id,text,label" in one_error_line(result)
    missing = describe(FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone.csv")))
    assert missing[0] == 2


def test_an_unexpected_error_exits_1_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(settings: Settings | None = None) -> Any:
        raise RuntimeError("the unexpected\nwith a second line")

    monkeypatch.setattr(common, "runtime", broken)
    monkeypatch.delenv(common.TRACEBACK_ENV, raising=False)
    result = runner.invoke(cli, ["reindex"])
    assert result.exit_code == 1, result.output
    assert one_error_line(result) == "error: the unexpected"
    assert not isinstance(result.exception, RuntimeError)  # handled, not escaped

    monkeypatch.setenv(common.TRACEBACK_ENV, "1")  # to debug: the exception escapes, traceback and all
    result = runner.invoke(cli, ["reindex"])
    assert isinstance(result.exception, RuntimeError)


def test_deliberate_exits_and_usage_errors_pass_through() -> None:
    demo = typer.Typer(cls=common.ErrorPolicy)

    @demo.command()
    def done(code: int) -> None:
        raise typer.Exit(code)

    @demo.command()
    def other() -> None:
        """A second command, so that DONE is a sub-command."""

    assert runner.invoke(demo, ["done", "3"]).exit_code == 3
    usage = runner.invoke(demo, ["done", "not-a-number"])
    assert usage.exit_code == 2 and "error: " not in usage.output
