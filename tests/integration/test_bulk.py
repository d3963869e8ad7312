"""`jobclass classify-file`: CSV, JSONL and Parquet round-trips through the service's batch path, bad rows
listed by line (never dropped), a run killed with SIGKILL midway and resumed (every row exactly once),
and ``--store`` on SQLite and Postgres (a part written again after a crash stores nothing twice)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from app.cli import cli, common
from app.db import Prediction
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services import bulk
from app.services.bulk import (
    BulkOptions,
    Checkpoint,
    Format,
    classify_file,
    errors_path,
    file_format,
    parts_dir,
    read_output,
)
from app.services.classification import ClassifyItem, classify
from indexing import memory_index
from tests.bulk_child import make_state, open_state
from tests.factories import one_error_line

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
WORDS = ["carpenter timber roofing", "python developer cloud", "nurse hospital ward care", "bricklayer site"]


def ads(n: int) -> list[tuple[str, str]]:
    return [(f"ad-{i:04d}", f"{WORDS[i % len(WORDS)]} job {i}") for i in range(n)]


def write_input(path: Path, rows: list[tuple[Any, Any]], fmt: Format | None = None) -> Path:
    fmt = fmt or file_format(path)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text", "extra"])
            writer.writerows([i, t, "x"] for i, t in rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in rows), encoding="utf-8")
    else:
        table = pa.table({"id": [i for i, _ in rows], "text": [t for _, t in rows]})
        pq.write_table(table, path, row_group_size=7)
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once (training takes seconds); tests open it one at a time (the index folder has one
    owner) or copy it."""
    return make_state(tmp_path_factory.mktemp("bulk") / "state")


@pytest.fixture
def seeded(template: Path) -> Iterator[Runtime]:
    rt = open_state(template)
    yield rt
    rt.close()


def options(source: Path, out: Path, **kw: Any) -> BulkOptions:
    return BulkOptions(source, out, file_format(source), file_format(out), **kw)


@pytest.mark.parametrize(("source", "target"), [("csv", "csv"), ("jsonl", "jsonl"), ("parquet", "parquet")])
def test_each_format_round_trips_through_the_batch_path(
    seeded: Runtime, tmp_path: Path, source: str, target: str
) -> None:
    rows = ads(23)
    src = write_input(tmp_path / f"in.{source}", rows)
    out = tmp_path / f"out.{target}"
    summary = classify_file(seeded, options(src, out, top_k=2, batch_size=4, part_rows=5))
    assert (summary.records, summary.written, summary.errors, summary.parts) == (23, 23, 0, 5)
    got = read_output(out)
    assert [r["id"] for r in got] == [i for i, _ in rows]  # every row, once, in input order
    expected = classify(seeded, None, [ClassifyItem(t, i) for i, t in rows], top_k=2)
    for row, want in zip(got, expected, strict=True):
        assert row["top1_label"] == want.probabilities[0].label
        assert float(row["top1_probability"]) == pytest.approx(want.probabilities[0].probability, abs=1e-6)
        assert row["top2_label"] == want.probabilities[1].label
        assert float(row["confidence"]) == pytest.approx(want.confidence, abs=1e-6)
        assert row["model_version"] == want.model_version == seeded.model.version
        assert str(row["abstained"]).lower() == "false"
    assert not parts_dir(out).exists() and not errors_path(out).exists()


def test_the_in_memory_index_and_the_store_give_the_same_file(
    seeded: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_input(tmp_path / "in.csv", ads(30))
    runs = {}
    for knn in ("memory", "store"):
        classify_file(seeded, options(src, tmp_path / f"{knn}.csv", top_k=3, batch_size=8, knn=knn))
        runs[knn] = read_output(tmp_path / f"{knn}.csv")
    assert runs["memory"] == runs["store"] and len(runs["memory"]) == 30
    with pytest.raises(InvalidInput, match="--knn must be one of auto, memory, store"):
        classify_file(seeded, options(src, tmp_path / "x.csv", knn="nearest"))
    monkeypatch.setattr(memory_index, "MAX_POINTS", 3)  # an index too large to copy
    with pytest.raises(InvalidInput, match="use --knn store"):
        classify_file(seeded, options(src, tmp_path / "y.csv", knn="memory"))
    classify_file(seeded, options(src, tmp_path / "auto.csv", top_k=3, batch_size=8))  # auto: queries the store
    assert read_output(tmp_path / "auto.csv") == runs["store"]
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()  # refused before writing


def test_a_different_output_format_and_an_empty_input(seeded: Runtime, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.csv", ads(4))
    classify_file(seeded, options(src, tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == [i for i, _ in ads(4)]
    empty = write_input(tmp_path / "empty.jsonl", [])
    summary = classify_file(seeded, options(empty, tmp_path / "empty-out.csv"))
    assert summary.records == 0
    assert (tmp_path / "empty-out.csv").read_text().startswith("id,label,confidence,abstained,model_version")


def test_bad_rows_are_listed_by_line_and_counted(seeded: Runtime, tmp_path: Path) -> None:
    limit = seeded.settings.max_text_chars
    src = tmp_path / "in.csv"
    src.write_text(
        "\n".join(
            [
                "id,text",
                "a1,carpenter timber",  # line 2
                ",nurse hospital",  # line 3: no id
                "a3",  # line 4: no text field
                'a4,"<p> </p>"',  # line 5: empty after cleaning
                f"a5,{'x' * (limit + 1)}",  # line 6: too long
                'a6,"python\ndeveloper"',  # lines 7-8: fine, on two lines
                "a1,carpenter again",  # line 9: duplicate id
                "a9,nurse ward",  # line 10
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    summary = classify_file(seeded, options(src, out, part_rows=3))
    assert (summary.records, summary.written, summary.errors) == (8, 3, 5)
    assert [r["id"] for r in read_output(out)] == ["a1", "a6", "a9"]
    with errors_path(out).open(newline="", encoding="utf-8") as handle:
        errors = [(int(r["line"]), r["id"], r["reason"]) for r in csv.DictReader(handle)]
    assert [(line, ident) for line, ident, _ in errors] == [(3, ""), (4, "a3"), (5, "a4"), (6, "a5"), (9, "a1")]
    reasons = [reason for _, _, reason in errors]
    assert reasons[0] == "missing id" and reasons[1] == "missing text"
    assert reasons[2].startswith("text is empty after cleaning")
    assert reasons[3] == f"text is {limit + 1} characters; the limit is {limit}"
    assert reasons[4].startswith("duplicate id")
    assert summary.error_reasons == {
        "missing id": 1,
        "missing text": 1,
        "text is empty after cleaning": 1,
        "text too long": 1,
        "duplicate id": 1,
    }


def test_jsonl_lines_that_are_not_rows(seeded: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "text": "nurse ward"}\n\nnot json\n[1, 2]\n{"id": "b", "text": null}\n')
    out = tmp_path / "out.csv"
    summary = classify_file(seeded, options(src, out))
    assert (summary.written, summary.errors) == (1, 3)
    assert [r["id"] for r in read_output(out)] == ["1"]
    lines = errors_path(out).read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == ["3", "4", "5"]
    assert "not valid JSON" in lines[0] and "not a JSON object" in lines[1] and "missing text" in lines[2]


def test_a_file_without_the_columns_is_bad_input(seeded: Runtime, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("ident,body\n1,nurse\n")
    with pytest.raises(InvalidInput, match=r"no column 'id', 'text'.*--id-column"):
        classify_file(seeded, options(src, tmp_path / "out.csv"))
    summary = classify_file(seeded, options(src, tmp_path / "out.csv", id_column="ident", text_column="body"))
    assert summary.written == 1


def test_an_interrupted_run_with_other_options_is_not_mixed_in(seeded: Runtime, tmp_path: Path) -> None:
    src = write_input(tmp_path / "in.csv", ads(10))
    out = tmp_path / "out.csv"
    folder = parts_dir(out)
    folder.mkdir()
    Checkpoint("r", {"path": "elsewhere"}, {}, "v0").save(folder)
    with pytest.raises(InvalidInput, match=r"another input file and options and model version.*--restart"):
        classify_file(seeded, options(src, out))
    assert classify_file(seeded, options(src, out, restart=True)).written == 10
    with pytest.raises(InvalidInput, match="exists: pass --overwrite"):
        classify_file(seeded, options(src, out))


def _run_child(state: Path, src: Path, out: Path, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "tests.bulk_child", str(state), str(src), str(out), str(delay)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_midway_then_resumed_every_row_exactly_once(template: Path, tmp_path: Path) -> None:
    """SIGKILL while parts are being written (10 rows a part, a slow encoder), then the same command again."""
    rows = ads(120)
    rows[37] = ("ad-0037", "   ")  # a bad row: listed once, in the errors file
    src = write_input(tmp_path / "in.csv", rows)
    out = tmp_path / "out.csv"
    state = tmp_path / "state"
    shutil.copytree(template, state)
    rt = open_state(state)
    try:
        items = [ClassifyItem(t, i) for i, t in rows if t.strip()]
        expected = {r.id: r.probabilities[0].label for r in classify(rt, None, items)}
    finally:
        rt.close()  # the child opens the index folder

    child = _run_child(state, src, out, delay=0.15)
    checkpoint = parts_dir(out) / "checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        if checkpoint.is_file() and json.loads(checkpoint.read_text())["parts"] >= 6:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.communicate()[0]
    child.send_signal(signal.SIGKILL)
    child.wait()
    done = json.loads(checkpoint.read_text())
    assert 6 <= done["parts"] < 12 and not out.exists()

    rerun = _run_child(state, src, out, delay=0.0)
    output, _ = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, output
    assert f"resumed_from={done['records']}" in output
    got = read_output(out)
    assert [r["id"] for r in got] == [i for i, t in rows if t.strip()]  # each once, in order
    assert {r["id"]: r["top1_label"] for r in got} == expected
    assert errors_path(out).read_text().splitlines()[1:] == ["39,ad-0037,text is empty after cleaning (no words left)"]
    assert not parts_dir(out).exists()


# ---- --store, on SQLite and Postgres ------------------------------------------------------------
@pytest.fixture
def db_runtime(template: Path, migrated_engine: Engine, db_sessions: sessionmaker) -> Iterator[Runtime]:
    """The template's model and index, with the test database of each backend (rolled back after)."""
    rt = open_state(template, engine=migrated_engine)
    rt.sessions = db_sessions
    yield rt
    rt.store.client.close()


def test_store_writes_one_prediction_per_row_even_when_a_part_is_written_again(
    db_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after a part's predictions were committed but before the part itself was: the rerun
    classifies that part again and stores nothing twice."""
    runtime = db_runtime
    rows = ads(12)
    src = write_input(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.parquet"

    def stored() -> list[tuple[str, str | None]]:
        with runtime.sessions() as session:
            return [(i, e) for i, e in session.execute(select(Prediction.id, Prediction.external_id))]

    before = {i for i, _ in stored()}
    commit = bulk._PartWriter.commit

    def crash_on_second_part(self: Any, *args: Any) -> None:
        if self.ckpt.parts == 1:
            raise RuntimeError("power cut")
        commit(self, *args)

    monkeypatch.setattr(bulk._PartWriter, "commit", crash_on_second_part)
    opts = options(src, out, store=True, part_rows=5, batch_size=2)
    with pytest.raises(RuntimeError, match="power cut"):
        classify_file(runtime, opts)
    assert len(stored()) - len(before) == 10  # the first part and the crashed one were stored
    monkeypatch.setattr(bulk._PartWriter, "commit", commit)
    summary = classify_file(runtime, opts)
    assert (summary.resumed_from, summary.written) == (5, 12)
    new = {i: e for i, e in stored() if i not in before}
    assert sorted(str(e) for e in new.values()) == [i for i, _ in rows]  # each row stored exactly once
    assert {r["prediction_id"]: r["id"] for r in read_output(out)} == new
    with runtime.sessions() as session:
        row = session.get(Prediction, next(iter(new)))
        assert row is not None and row.model_version == runtime.model.version


def test_cli_classify_file_and_its_errors(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "runtime", lambda settings=None: open_state(template))  # the fake encoder
    rows = [*ads(6), ("", "nurse")]
    src = write_input(tmp_path / "in.csv", rows)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["classify-file", str(src), "--out", str(out), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert "classified 6 of 7 rows" in result.output
    assert "1 bad row(s) (1 missing id) listed by line in" in result.output
    assert len(read_output(out)) == 6 and set(read_output(out)[0]) >= {"top2_label", "top2_probability"}
    again = runner.invoke(cli, ["classify-file", str(src), "--out", str(out)])
    assert again.exit_code == 2
    assert "exists: pass --overwrite" in one_error_line(again)
    odd = runner.invoke(cli, ["classify-file", str(src), "--out", str(tmp_path / "out.txt")])
    assert odd.exit_code == 2
    assert "cannot tell the output format of out.txt" in one_error_line(odd)
