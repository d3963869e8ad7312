"""A labelled CSV's problems, on SQLite and Postgres: `jobclass ingest` (and ``ingest_csv``) is all or
nothing unless --skip-invalid, refuses rows the database would choke on (an id with NUL, one over 128
characters) and short rows with their line numbers, and a malformed file (empty, header only, missing
columns, not UTF-8, a 10 MB field) is one line and exit 2, for ingest and ``load_split`` alike. The
shipped files still load with zero rejects."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import cli, common
from app.db import Vacancy
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services.bootstrap import sample_sources
from app.services.dataset import load_split
from app.services.vacancies import ingest_csv
from app.settings import get_settings

runner = CliRunner()
HEADER = "id,text,label\n"
GOOD = "carpenter for timber roofing"
LABEL = "Bygge og anlæg"
ID_MAX_CHARS = 128  # vacancies.id is VARCHAR(128): Postgres refuses a longer id

# (name, file bytes, what the one error line says)
MALFORMED: list[tuple[str, bytes, str]] = [
    ("missing columns", b"id,text\nv1,a carpenter\n", "missing column(s) label; the header must be id,text,label"),
    ("empty", b"", "is empty: the first line must be the header id,text,label"),
    ("blank", b"\n  \n", "is empty"),
    ("header only", HEADER.encode(), "has a header but no rows"),
    ("header only, BOM", codecs.BOM_UTF8 + HEADER.encode() + b"\n", "has a header but no rows"),
    ("latin-1", (HEADER + f"v1,tømrer søges,{LABEL}\n").encode("latin-1"), "line 2 is not UTF-8 (byte 0xf8)"),
    ("utf-16", (HEADER + f"v1,tømrer,{LABEL}\n").encode("utf-16"), "is UTF-16 text, not UTF-8"),
    ("utf-16 no BOM", (HEADER + f"v1,tømrer,{LABEL}\n").encode("utf-16-le"), "line 1 has NUL bytes (UTF-16"),
    (
        "10 MB field",
        (HEADER + f"v1,{GOOD},{LABEL}\n" + f'v2,"{"a" * 10 * 1024 * 1024}",{LABEL}\n').encode(),
        "line 3: a field is longer than 10,000,000 characters",
    ),
]
MALFORMED_IDS = [name for name, _, _ in MALFORMED]


def invalid_rows_csv(path: Path) -> Path:
    """Two valid rows around invalid ones; line numbers are the lines the records start on."""
    lines = [
        HEADER.strip(),
        f"v1,{GOOD},{LABEL}",  # line 2
        f'v2,"{GOOD}\non two lines",{LABEL}',  # lines 3-4
        f"v\x003,{GOOD},{LABEL}",  # line 5: NUL in the id
        f"{'x' * (ID_MAX_CHARS + 1)},{GOOD},{LABEL}",  # line 6: too long for the id column
        f"v4,{GOOD}",  # line 7: a short row (no label field)
        "",  # a blank line is skipped
        f"v5,{GOOD},Not a category",  # line 9
        f"v6,{GOOD},{LABEL},extra",  # line 10: a long row
        f"{'y' * ID_MAX_CHARS},{GOOD},{LABEL}",  # line 11: exactly the limit is valid
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_rejects_listed(rejected: list[str] | str) -> None:
    text = "\n".join(rejected) if isinstance(rejected, list) else rejected
    assert "line 5: the id 'v\\x003' contains a NUL character" in text
    assert f"line 6: the id 'xxxxxxxxxxxxxxxxxxxx'… is {ID_MAX_CHARS + 1} characters long" in text
    assert "line 7 (id 'v4'): 2 field(s), but the header has 3" in text
    assert "line 9: id 'v5' has label 'Not a category'" in text
    assert "line 10 (id 'v6'): 4 field(s), but the header has 3" in text


def vacancy_ids(runtime: Runtime) -> set[str]:
    with runtime.sessions() as session:
        return set(session.scalars(select(Vacancy.id)))


# ---- the service, on both backends --------------------------------------------------------------
def test_invalid_rows_write_nothing_unless_skipped(runtime: Runtime, tmp_path: Path) -> None:
    path = invalid_rows_csv(tmp_path / "mixed.csv")
    with runtime.sessions() as session:
        result = ingest_csv(session, path, runtime.taxonomy)
    assert not result.written and (result.added, result.updated, result.unchanged) == (0, 0, 0)
    assert len(result.rejected) == 5
    assert_rejects_listed(result.rejected)
    assert vacancy_ids(runtime) == set()

    with runtime.sessions() as session:  # the same rows with skip_invalid: the database takes the valid ones
        result = ingest_csv(session, path, runtime.taxonomy, skip_invalid=True)
    assert result.written and result.added == 3 and len(result.rejected) == 5
    assert_rejects_listed(result.rejected)
    assert vacancy_ids(runtime) == {"v1", "v2", "y" * ID_MAX_CHARS}
    with runtime.sessions() as session:
        v2 = session.get(Vacancy, "v2")
        assert v2 is not None and v2.text == f"{GOOD}\non two lines"


@pytest.mark.parametrize(("name", "data", "message"), MALFORMED, ids=MALFORMED_IDS)
def test_a_malformed_file_is_invalid_input(
    runtime: Runtime, tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with runtime.sessions() as session, pytest.raises(InvalidInput) as info:
        ingest_csv(session, path, runtime.taxonomy)
    assert message in info.value.message and str(path) in info.value.message
    assert "\n" not in info.value.message
    assert vacancy_ids(runtime) == set()


def test_the_shipped_files_load_with_zero_rejects(runtime: Runtime) -> None:
    sources = sample_sources(runtime.settings)
    assert len(sources) == 3
    added = 0
    with runtime.sessions() as session:
        for path, source in sources:
            result = ingest_csv(session, path, runtime.taxonomy, source=source)
            assert result.ok and result.written, result.rejected[:5]
            assert result.added == len(load_split(path)), path
            added += result.added
        assert session.scalar(select(func.count()).select_from(Vacancy)) == added == 704 + 968 + 1540


# ---- `jobclass ingest`, on both backends --------------------------------------------------------
@pytest.fixture
def cli_runtime(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """`jobclass ingest` against the test's runtime (its backend, rolled back afterwards)."""
    for name in ("JOBCLASS_DATABASE_URL", "JOBCLASS_QDRANT_URL", "JOBCLASS_QDRANT_PATH", "JOBCLASS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path / "state"))  # the command migrates this SQLite file
    get_settings.cache_clear()
    monkeypatch.setattr(runtime, "close", lambda: None)  # the fixture closes it

    def the_runtime(settings: Any = None) -> Runtime:
        return runtime

    monkeypatch.setattr(common, "runtime", the_runtime)
    yield runtime
    get_settings.cache_clear()


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def test_cli_ingest_is_all_or_nothing_unless_skip_invalid(cli_runtime: Runtime, tmp_path: Path) -> None:
    path = invalid_rows_csv(tmp_path / "mixed.csv")
    result = runner.invoke(cli, ["ingest", str(path)])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "5 of 8 row(s) invalid" in line and "nothing was written" in line and "--skip-invalid" in line
    assert_rejects_listed(result.output)
    assert vacancy_ids(cli_runtime) == set()

    result = runner.invoke(cli, ["ingest", str(path), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "added 3, updated 0, unchanged 0, rejected 5" in result.output and "error: " not in result.output
    assert_rejects_listed(result.output)
    assert vacancy_ids(cli_runtime) == {"v1", "v2", "y" * ID_MAX_CHARS}


def test_cli_ingest_of_a_valid_file_is_unchanged(cli_runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_bytes(codecs.BOM_UTF8 + (HEADER + f"v1,{GOOD},{LABEL}\nv2,an unlabelled ad,\n").encode())
    result = runner.invoke(cli, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert "added 2, updated 0, unchanged 0, rejected 0" in result.output
    assert vacancy_ids(cli_runtime) == {"v1", "v2"}


@pytest.mark.parametrize(("name", "data", "message"), MALFORMED, ids=MALFORMED_IDS)
def test_cli_ingest_of_a_malformed_file_is_one_line(
    cli_runtime: Runtime, tmp_path: Path, name: str, data: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    result = runner.invoke(cli, ["ingest", str(path)])
    assert result.exit_code == 2, result.output
    assert message in one_error_line(result.output)
    assert not (tmp_path / "state" / "jobclass.db").exists()  # refused before the database is touched
    assert vacancy_ids(cli_runtime) == set()


# ---- load_split (bench, evaluate, finetune): the same errors -----------------------------------
@pytest.mark.parametrize(("name", "data", "message"), MALFORMED, ids=MALFORMED_IDS)
def test_load_split_of_a_malformed_file_is_invalid_input(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(InvalidInput) as info:
        load_split(path)
    assert message in info.value.message and "\n" not in info.value.message


def test_load_split_refuses_a_short_row_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(f'{HEADER}v1,"{GOOD}\nsecond line",{LABEL}\nv2,only a text\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"line 4 \(id 'v2'\): 2 field\(s\), but the header has 3"):
        load_split(path)
    fine = tmp_path / "fine.csv"
    fine.write_text(f"id,text,label,label_fine\nv1,{GOOD},{LABEL},tømrer\n", encoding="utf-8")
    split = load_split(fine)
    assert (split.ids, split.labels, split.fine) == (["v1"], [LABEL], ["tømrer"])
