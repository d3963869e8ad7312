"""The learning loop end to end, on SQLite and Postgres, with the fake encoder: corrections that change
the next answer, background jobs, and a reindex during which classification never stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient
from sqlalchemy import Engine

from app.db import Base, Vacancy
from app.errors import InvalidInput
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from models.classifier import DUPLICATE_TRUST, FusedClassifier
from tests.factories import seed, wait_for_job
from tests.fakes import SlowEncoder

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"
NURSE = "nurse for elderly care on a hospital ward"
GUARD = "night shift guard for cctv surveillance of a warehouse"
SECURITY = "Vagt, sikkerhed og overvågning"


@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    seed(runtime, tmp_path)
    with TestClient(create_app(runtime.settings, runtime)) as test_client:
        yield test_client


def classify(client: TestClient, text: str) -> dict[str, Any]:
    response = client.post("/v1/classify", json={"text": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def correct(client: TestClient, prediction_id: str, label: str) -> dict[str, Any]:
    response = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def use_head_only(runtime: Runtime) -> None:
    """Serve the active model with α = 1: the blend ignores the neighbours' vote entirely."""
    loaded = runtime.model
    c = loaded.classifier
    runtime.set_model(FusedClassifier(c.labels, c.head, replace(c.params, alpha=1.0)), loaded.version, loaded.metadata)


# ---- feedback → the next answer ----------------------------------------------------------------
def test_one_correction_changes_the_next_answer(client: TestClient) -> None:
    first = classify(client, GUARD)
    assert first["label"] != SECURITY
    fb = correct(client, first["prediction_id"], SECURITY)
    assert fb["indexed"] is True
    again = classify(client, GUARD)
    assert again["label"] == SECURITY and again["confidence"] >= DUPLICATE_TRUST
    assert again["neighbours"][0]["vacancy_id"] == fb["vacancy_id"]
    assert again["neighbours"][0]["score"] == pytest.approx(1.0)
    assert classify(client, CARPENTER)["label"] == "Bygge og anlæg"  # other texts are not affected


def test_a_correction_wins_even_when_the_blend_ignores_the_vote(client: TestClient, runtime: Runtime) -> None:
    use_head_only(runtime)
    first = classify(client, DEVELOPER)
    assert first["label"] == "It og teleteknik"
    correct(client, first["prediction_id"], "Ledelse")
    again = classify(client, DEVELOPER)
    assert again["label"] == "Ledelse" and again["confidence"] >= DUPLICATE_TRUST
    # the rest of the ranking still comes from the model
    assert again["probabilities"][1]["label"] == "It og teleteknik"
    assert classify(client, "python developer for backend software")["label"] == "It og teleteknik"


def test_the_latest_label_of_a_duplicate_wins(client: TestClient, runtime: Runtime) -> None:
    with runtime.sessions() as session:
        sample = session.get(Vacancy, "t1-03")
        assert sample is not None and sample.label == "It og teleteknik"
        text = sample.text
    first = classify(client, text)
    assert first["label"] == "It og teleteknik"
    correct(client, first["prediction_id"], "Akademisk arbejde")  # newer than the sample's label
    second = classify(client, text)
    assert second["label"] == "Akademisk arbejde"
    correct(client, second["prediction_id"], "Ledelse")  # another correction of the same text
    assert classify(client, text)["label"] == "Ledelse"


# ---- jobs ---------------------------------------------------------------------------------------
def test_one_job_of_a_kind_at_a_time_and_failures_are_reported(client: TestClient, runtime: Runtime) -> None:
    release = threading.Event()

    def blocked(progress: Any) -> None:
        progress(1, 3)
        release.wait(10)

    running = runtime.jobs.submit("reindex", blocked)
    try:
        busy = client.post("/v1/admin/reindex")
        assert busy.status_code == 409 and running.id in busy.json()["detail"]
        status = client.get(f"/v1/admin/jobs/{running.id}").json()
        assert status["status"] in ("queued", "running") and status["result"] is None
    finally:
        release.set()
    assert runtime.jobs.wait(running.id, 10).status == "succeeded"

    def broken(progress: Any) -> None:
        raise InvalidInput("training needs labelled vacancies")

    failed = runtime.jobs.wait(runtime.jobs.submit("retrain", broken).id, 10)
    body = client.get(f"/v1/admin/jobs/{failed.id}").json()
    assert body["status"] == "failed" and body["error"] == "training needs labelled vacancies"
    assert body["finished_at"] is not None and body["result"] is None
    assert {j["id"] for j in client.get("/v1/admin/jobs").json()["jobs"]} >= {running.id, failed.id}
    assert client.get("/v1/admin/jobs/unknown").status_code == 404


# ---- reindex without downtime -----------------------------------------------------------------
@pytest.fixture
def live_runtime(settings: Settings, migrated_engine: Engine) -> Iterator[Runtime]:
    """A runtime with real, independent database sessions (the default), so requests and background
    jobs use the database at the same time as in production. Its rows are deleted afterwards."""
    settings.embedding_cache = False  # every reindex batch really calls the encoder
    settings.index_batch_size = 8
    rt = Runtime(settings, encoder=SlowEncoder(), qdrant=QdrantClient(":memory:"), engine=migrated_engine)
    try:
        yield rt
    finally:
        rt.jobs.shutdown()
        rt.store.client.close()
        with migrated_engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


def answer(body: dict[str, Any]) -> tuple[object, ...]:
    return (
        body["label"],
        body["model_version"],
        body["index_used"],
        tuple((p["label"], round(p["probability"], 9)) for p in body["probabilities"]),
        tuple((n["vacancy_id"], n["label"], round(n["score"], 6)) for n in body["neighbours"]),
    )


def test_classification_never_stops_during_a_reindex(live_runtime: Runtime, tmp_path: Path) -> None:
    seed(live_runtime, tmp_path, n_per_label=20)
    encoder = live_runtime.encoder
    assert isinstance(encoder, SlowEncoder)
    texts = [CARPENTER, DEVELOPER, NURSE, GUARD]
    with TestClient(create_app(live_runtime.settings, live_runtime)) as client:
        before = {t: answer(classify(client, t)) for t in texts}
        old = live_runtime.store.active_collection()
        errors: list[str] = []
        during: list[tuple[str, tuple[object, ...]]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                for text in texts:
                    try:
                        response = client.post("/v1/classify", json={"text": text})
                    except Exception as exc:  # a transport error is an error too
                        errors.append(repr(exc))
                        continue
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text}")
                    else:
                        during.append((text, answer(response.json())))

        encoder.gate, encoder.delay = threading.Event(), 0.02
        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            accepted = client.post("/v1/admin/reindex")
            assert encoder.waiting.wait(10)  # the rebuild is under way, held at its first batch
            deadline = time.monotonic() + 10
            while len(during) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            encoder.gate.set()
            progress: list[int] = []
            while (job := client.get(accepted.headers["location"]).json())["status"] in ("queued", "running"):
                progress.append(job["progress"]["done"])
                time.sleep(0.005)
        finally:
            encoder.gate.set()
            stop.set()
            worker.join(10)
        after = {t: answer(classify(client, t)) for t in texts}

    assert job["status"] == "succeeded", job
    assert job["result"]["count"] == 60 and job["result"]["previous"] == old
    assert job["progress"]["done"] == job["progress"]["total"] == 60 and job["progress"]["rate"] > 0
    assert any(0 < done < 60 for done in progress)  # progress was visible while it ran
    assert errors == []
    assert len(during) >= 20
    assert all(result == before[text] for text, result in during)
    assert after == before
    assert live_runtime.store.active_collection() != old


def test_a_correction_made_during_a_reindex_survives_the_swap(live_runtime: Runtime, tmp_path: Path) -> None:
    seed(live_runtime, tmp_path)
    encoder = live_runtime.encoder
    assert isinstance(encoder, SlowEncoder)
    with TestClient(create_app(live_runtime.settings, live_runtime)) as client:
        prediction = classify(client, GUARD)
        encoder.gate = threading.Event()
        accepted = client.post("/v1/admin/reindex")
        assert encoder.waiting.wait(10)  # the new collection is being built from a database snapshot
        fb = correct(client, prediction["prediction_id"], SECURITY)
        encoder.gate.set()
        job = wait_for_job(client, accepted)
        assert job["status"] == "succeeded" and job["result"]["caught_up"] >= 1
        hit = client.post("/v1/search", json={"text": GUARD, "k": 1}).json()["hits"][0]
        assert hit["vacancy_id"] == fb["vacancy_id"] and hit["label"] == SECURITY
        assert classify(client, GUARD)["label"] == SECURITY
