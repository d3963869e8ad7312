"""The HTTP API end to end, on SQLite and Postgres, with in-memory Qdrant and the fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from app.db import Feedback, Prediction, Vacancy
from app.main import create_app
from app.runtime import Runtime
from tests.factories import seed, wait_for_job
from tests.fakes import FakeEncoder

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"


@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    seed(runtime, tmp_path)
    with TestClient(create_app(runtime.settings, runtime)) as test_client:
        yield test_client


def probs(body: dict) -> list[tuple[str, object]]:
    return [(p["label"], pytest.approx(p["probability"], abs=1e-9)) for p in body["probabilities"]]


def count(runtime: Runtime, model: type) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_classify_answers_and_stores_a_prediction(client: TestClient, runtime: Runtime) -> None:
    response = client.post("/v1/classify", json={"text": CARPENTER, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] == "Bygge og anlæg"
    assert body["abstained"] is False and body["stored"] is True and body["index_used"] is True
    probs = [p["probability"] for p in body["probabilities"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert body["probabilities"][0]["display_name"] == "Building and construction"
    assert body["neighbours"] and body["neighbours"][0]["label"] == "Bygge og anlæg"
    assert body["model_version"] == runtime.model.version
    with runtime.sessions() as session:
        row = session.get(Prediction, body["prediction_id"])
        assert row is not None and row.label == "Bygge og anlæg" and row.model_version == body["model_version"]


def test_batch_equals_single_and_embeds_once(client: TestClient, runtime: Runtime) -> None:
    texts = [CARPENTER, DEVELOPER, "nurse for elderly care on a hospital ward"]
    singles = [client.post("/v1/classify", json={"text": t}).json() for t in texts]
    encoder = runtime.encoder
    assert isinstance(encoder, FakeEncoder)
    encoder.calls.clear()
    batch = client.post("/v1/classify/batch", json={"items": [{"id": f"x{i}", "text": t} for i, t in enumerate(texts)]})
    assert batch.status_code == 200, batch.text
    assert encoder.calls == [3]  # one embedding call for the whole batch
    results = batch.json()["results"]
    assert [r["id"] for r in results] == ["x0", "x1", "x2"]
    for single, item in zip(singles, results, strict=True):
        assert item["label"] == single["label"]
        assert probs(item) == probs(single)
    assert len({r["prediction_id"] for r in results}) == 3


def test_feedback_is_stored_indexed_and_found_by_search(client: TestClient, runtime: Runtime) -> None:
    text = "night shift guard for cctv surveillance of a warehouse"
    prediction = client.post("/v1/classify", json={"text": text}).json()
    sent = client.post(
        "/v1/feedback",
        json={
            "prediction_id": prediction["prediction_id"],
            "label": "Vagt, sikkerhed og overvågning",
            "comment": "x",
        },
    )
    assert sent.status_code == 201, sent.text
    fb = sent.json()
    assert fb["indexed"] is True and fb["label"] == "Vagt, sikkerhed og overvågning"
    hits = client.post("/v1/search", json={"text": text, "k": 3}).json()["hits"]
    assert hits[0]["vacancy_id"] == fb["vacancy_id"]
    assert hits[0]["label"] == "Vagt, sikkerhed og overvågning" and hits[0]["source"] == "feedback"
    # the next classification of the same text sees the correction among its neighbours
    again = client.post("/v1/classify", json={"text": text}).json()
    assert again["neighbours"][0] == {
        "vacancy_id": fb["vacancy_id"],
        "label": fb["label"],
        "score": pytest.approx(1.0),
    }


def test_repeated_feedback_last_wins_with_history(client: TestClient, runtime: Runtime) -> None:
    pid = client.post("/v1/classify", json={"text": DEVELOPER}).json()["prediction_id"]
    for label in ("Akademisk arbejde", "It og teleteknik"):
        assert client.post("/v1/feedback", json={"prediction_id": pid, "label": label}).status_code == 201
    with runtime.sessions() as session:
        history = session.scalars(select(Feedback).where(Feedback.prediction_id == pid).order_by(Feedback.id)).all()
        assert [f.label for f in history] == ["Akademisk arbejde", "It og teleteknik"]
        vacancy = session.get(Vacancy, history[0].vacancy_id)
        assert vacancy is not None and vacancy.label == "It og teleteknik"
    hit = client.post("/v1/search", json={"text": DEVELOPER, "k": 1}).json()["hits"][0]
    assert hit["label"] == "It og teleteknik"


def test_reindex_keeps_answers_identical(client: TestClient, runtime: Runtime) -> None:
    before = client.post("/v1/classify", json={"text": CARPENTER}).json()
    old = runtime.store.active_collection()
    job = wait_for_job(client, client.post("/v1/admin/reindex"))
    assert job["kind"] == "reindex" and job["status"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] == 36 and job["progress"]["rate"] > 0
    body = job["result"]
    assert body["previous"] == old and body["collection"] != old and body["count"] == 36
    after = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert probs(after) == probs(before)
    assert after["neighbours"] == before["neighbours"]
    assert old not in {c.name for c in runtime.store.client.get_collections().collections}


def test_search_filters_and_similar(client: TestClient) -> None:
    hits = client.post(
        "/v1/search", json={"text": CARPENTER, "k": 5, "filter": {"labels": ["It og teleteknik"]}}
    ).json()["hits"]
    assert hits and {h["label"] for h in hits} == {"It og teleteknik"}
    none = client.post("/v1/search", json={"text": CARPENTER, "k": 5, "filter": {"source": "nowhere"}}).json()
    assert none["hits"] == []
    similar = client.get("/v1/vacancies/t0-00/similar", params={"k": 4})
    assert similar.status_code == 200
    ids = [h["vacancy_id"] for h in similar.json()["hits"]]
    assert len(ids) == 4 and "t0-00" not in ids
    assert client.get("/v1/vacancies/nope/similar").status_code == 404


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/classify", {"text": ""}, "text"),
        ("/v1/classify", {"text": "   \n "}, "text"),
        ("/v1/classify", {"text": 42}, "text"),
        ("/v1/classify", {}, "text"),
        ("/v1/classify", {"text": "x" * 20_001}, "text"),
        ("/v1/classify", {"text": "<p> </p>"}, "text"),
        ("/v1/classify", {"text": "ok text", "top_k": 0}, "top_k"),
        ("/v1/classify", {"text": "ok text", "unexpected": 1}, "unexpected"),
        ("/v1/classify/batch", {"items": []}, "items"),
        ("/v1/classify/batch", {"items": [{"text": "ok"}, {"text": ""}]}, "items[1].text"),
        ("/v1/classify/batch", {"items": [{"text": "ok words"}] * 257}, "items"),
        ("/v1/search", {"text": "carpenter", "k": 0}, "k"),
        ("/v1/search", {"text": "carpenter", "k": 101}, "k"),
        ("/v1/search", {"text": "carpenter", "filter": {"labels": ["Nope"]}}, "filter.labels"),
        ("/v1/search", {"text": "carpenter", "filter": {"since": "yesterday"}}, "filter.since"),
        ("/v1/feedback", {"prediction_id": "p", "label": "Not a label"}, "label"),
        ("/v1/feedback", {"prediction_id": "", "label": "Ledelse"}, "prediction_id"),
    ],
)
def test_bad_input_is_a_clear_422(client: TestClient, path: str, payload: dict, field: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"]


def test_unknown_prediction_is_404_and_nothing_is_written(client: TestClient, runtime: Runtime) -> None:
    before = count(runtime, Feedback)
    response = client.post("/v1/feedback", json={"prediction_id": "does-not-exist", "label": "Ledelse"})
    assert response.status_code == 404 and response.json()["field"] == "prediction_id"
    assert count(runtime, Feedback) == before


def test_a_form_encoded_body_gets_a_415_that_says_what_to_send(client: TestClient) -> None:
    response = client.post(
        "/v1/classify", content=b'{"text": "carpenter"}', headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]


def test_malformed_json_and_oversized_bodies(client: TestClient) -> None:
    response = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    big = client.post("/v1/classify", content=b"x", headers={"content-length": str(9 * 1024 * 1024)})
    assert big.status_code == 413


def test_health_models_and_taxonomy(client: TestClient, runtime: Runtime) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["database"]["ok"] and body["vector_store"]["ok"] and body["model"]["ok"]
    models = client.get("/v1/models").json()
    assert models["active"] == runtime.model.version and models["models"][0]["active"] is True
    assert models["models"][0]["variant_bytes"]["int8"] < models["models"][0]["variant_bytes"]["fp32"]
    assert len(client.get("/v1/taxonomy").json()["labels"]) == 22


def test_classify_falls_back_to_the_head_when_the_index_is_gone(client: TestClient, runtime: Runtime) -> None:
    collection = runtime.store.active_collection()
    assert collection is not None
    runtime.store.client.delete_collection(collection)
    body = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert body["index_used"] is False and body["neighbours"] == [] and body["label"] == "Bygge og anlæg"
    assert client.post("/v1/search", json={"text": CARPENTER}).status_code == 503
    assert client.get("/health").status_code == 503


def test_admin_and_feedback_need_tokens_when_configured(client: TestClient, runtime: Runtime) -> None:
    runtime.settings.admin_token = SecretStr("admin-secret")
    runtime.settings.api_token = SecretStr("api-secret")
    assert client.post("/v1/admin/reindex").status_code == 401
    assert client.post("/v1/admin/reindex", headers={"Authorization": "Bearer wrong"}).status_code == 401
    admin = {"Authorization": "Bearer admin-secret"}
    accepted = client.post("/v1/admin/reindex", headers=admin)
    assert client.get(accepted.headers["location"]).status_code == 401  # job status is admin-only too
    assert wait_for_job(client, accepted, admin)["status"] == "succeeded"
    pid = client.post("/v1/classify", json={"text": CARPENTER}).json()["prediction_id"]
    payload = {"prediction_id": pid, "label": "Bygge og anlæg"}
    assert client.post("/v1/feedback", json=payload).status_code == 401
    assert client.post("/v1/feedback", json=payload, headers={"Authorization": "Bearer api-secret"}).status_code == 201


def test_start_up_refuses_a_model_of_another_embedder(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    runtime.settings.embedding_chunking = "none"
    with pytest.raises(RuntimeError, match="run `jobclass reindex`"):
        runtime.load_active_model()
    with (
        pytest.raises(RuntimeError, match="run `jobclass reindex`"),
        TestClient(create_app(runtime.settings, runtime)),
    ):
        pass
