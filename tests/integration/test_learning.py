"""The learning loop end to end, on SQLite and Postgres, with the fake encoder: corrections that change
the next answer, and background jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import Vacancy
from app.errors import InvalidInput
from app.main import create_app
from app.runtime import Runtime
from models.classifier import DUPLICATE_TRUST, FusedClassifier
from tests.factories import seed

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"
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
