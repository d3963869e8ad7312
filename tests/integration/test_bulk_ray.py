"""`--engine ray` on a small local Ray (2 CPUs, started once per test session): classify-file as a Ray Data
job (an actor pool, each actor on its own copy of the index folder) gives the labels of the local path and
lists the bad rows; reindex embeds on Ray and upserts from the driver. Marked ``ray``: CI runs it (ray[data]
is in the dev extra); without Ray installed it skips locally and fails under CI=true."""

from __future__ import annotations

import csv
import functools
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from app.services.bulk import BulkOptions, errors_path
from app.services.classification import ClassifyItem, classify
from app.services.index import reindex
from app.services.vacancies import labelled_vacancies
from tests.bulk_child import make_state, open_state
from tests.conftest import IN_CI
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    if importlib.util.find_spec("ray") is None:
        message = "ray is not installed (pip install -e '.[bulk]')"
        if IN_CI:
            pytest.fail(message + " (CI=true: the Ray test must run)", pytrace=False)
        pytest.skip(message)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_state(tmp_path_factory.mktemp("bulk-ray") / "state")


def test_classify_file_on_ray_matches_the_local_path(local_ray: None, state: Path, tmp_path: Path) -> None:
    from app.services.bulk_ray import classify_file_on_ray

    words = ["carpenter timber roofing", "python developer cloud", "nurse hospital ward"]
    rows = [(f"r{i:02d}", f"{words[i % 3]}\non two lines {i}") for i in range(30)]  # quoted line breaks
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([*rows, ("r-bad", "   "), ("", "nurse")])
    out = tmp_path / "out.parquet"
    rt = open_state(state)
    try:
        expected = {r.id: r.probabilities[0].label for r in classify(rt, None, [ClassifyItem(t, i) for i, t in rows])}
        settings = rt.settings
    finally:
        rt.close()
    options = BulkOptions(src, out, "csv", "parquet", top_k=2, batch_size=8)
    factory = functools.partial(open_state, state)  # the fake encoder in every actor
    result = classify_file_on_ray(factory, settings, options, workers=2)

    assert (result.records, result.written, result.errors) == (32, 30, 2)
    table = pq.read_table(out)  # a folder of Parquet files
    got = dict(zip(table.column("id").to_pylist(), table.column("top1_label").to_pylist(), strict=True))
    assert got == expected  # every row once, the labels of the local path (kNN on each actor's index copy)
    assert set(table.column("model_version").to_pylist()) == {settings_version(state)}
    with errors_path(out).open(newline="", encoding="utf-8") as handle:
        bad = sorted((r["id"], r["reason"].split(" (")[0]) for r in csv.DictReader(handle))
    assert bad == [("", "missing id"), ("r-bad", "text is empty after cleaning")]


def settings_version(state: Path) -> str:
    rt = open_state(state)
    try:
        return rt.model.version
    finally:
        rt.close()


def test_reindex_embeds_on_ray_and_upserts_from_the_driver(local_ray: None, state: Path) -> None:
    from app.services.bulk_ray import embed_on_ray

    rt = open_state(state)
    try:
        with rt.sessions() as session:
            vacancies = labelled_vacancies(session)
            result = reindex(rt, session, embed=embed_on_ray(FakeEncoder, workers=2, batch_size=8))
        assert result.count == len(vacancies) == rt.store.count() > 0
        for v in vacancies:  # each vacancy got its own vector back from the pool (batches return in any order)
            stored = rt.store.vector_of(v.id)
            assert stored is not None
            assert float(stored @ FakeEncoder().encode([v.text])[0]) == pytest.approx(1.0, abs=1e-5)
    finally:
        rt.close()
