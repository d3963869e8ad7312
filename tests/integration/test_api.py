"""The HTTP API end to end, on SQLite and Postgres, with in-memory Qdrant and the fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from app.db import Feedback, Prediction, Vacancy
from app.main import create_app
from app.runtime import Runtime
from tests.factories import seed, wait_for_job
from tests.fakes import FakeEncoder, FakeFinetune

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
        "rank_score": pytest.approx(1.0),  # first in the dense and in the BM25 ranking: 1/2 + 1/2
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
        ("/v1/classify/batch", {"items": [{"text": "<p> </p>"}]}, "items[0].text"),  # a batch of one is a batch
        ("/v1/classify/batch", {"items": [{"text": "ok words"}] * 257}, "items"),
        ("/v1/search", {"text": "carpenter", "k": 0}, "k"),
        ("/v1/search", {"text": "carpenter", "k": 101}, "k"),
        ("/v1/search", {"text": "carpenter", "filter": {"labels": ["Nope"]}}, "filter.labels"),
        ("/v1/search", {"text": "carpenter", "filter": {"since": "yesterday"}}, "filter.since"),
        ("/v1/feedback", {"prediction_id": "p", "label": "Not a label"}, "label"),
        ("/v1/feedback", {"prediction_id": "", "label": "Ledelse"}, "prediction_id"),
        # wrong JSON types, limits and malformed filters
        ("/v1/classify", {"text": ["a list"]}, "text"),
        ("/v1/classify", {"text": "ok text", "top_k": "five"}, "top_k"),
        ("/v1/classify", {"text": "ok text", "top_k": 51}, "top_k"),
        ("/v1/classify/batch", {"items": "not a list"}, "items"),
        ("/v1/classify/batch", {"items": [{"text": "ok words"}, {"text": "x" * 20_001}]}, "items[1].text"),
        ("/v1/classify/batch", {"items": [{"id": "a\x00b", "text": "ok words"}]}, "items[0].id"),
        ("/v1/classify/batch", {"items": [{"id": "x" * 129, "text": "ok words"}]}, "items[0].id"),
        ("/v1/search", {"text": "   "}, "text"),
        ("/v1/search", {"text": "x" * 20_001}, "text"),
        ("/v1/search", {"text": "carpenter", "k": "ten"}, "k"),
        ("/v1/search", {"text": "carpenter", "filter": {"labels": "Ledelse"}}, "filter.labels"),
        ("/v1/search", {"text": "carpenter", "filter": {"until": 12.5e99}}, "filter.until"),
        ("/v1/search", {"text": "carpenter", "filter": {"bogus": 1}}, "filter.bogus"),
        ("/v1/search", {"text": "carpenter", "filter": {"since": "2024-06-01", "until": "2024-01-01"}}, "filter.until"),
        ("/v1/feedback", {"prediction_id": 5, "label": "Ledelse"}, "prediction_id"),
        ("/v1/feedback", {"prediction_id": "p", "label": "Ledelse", "comment": "x" * 2001}, "comment"),
        ("/v1/admin/retrain", {"margin": 2}, "margin"),
        ("/v1/admin/upgrade-encoder", {"objective": "magic"}, "objective"),
        ("/v1/admin/upgrade-encoder", {"epochs": 0}, "epochs"),
        ("/v1/admin/upgrade-encoder", {"batch_size": 1}, "batch_size"),
    ],
)
def test_bad_input_is_a_clear_422(client: TestClient, path: str, payload: dict, field: str) -> None:
    response = client.post(path, json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/classify", '{"text": "carpenter \\ud800"}', "text"),
        ("/v1/classify/batch", '{"items": [{"id": "\\udfff", "text": "carpenter"}]}', "items[0].id"),
        ("/v1/search", '{"text": "carpenter", "filter": {"source": "\\ud800"}}', "filter.source"),
        ("/v1/search", '{"text": "carpenter", "filter": {"labels": ["\\ud800"]}}', "filter.labels"),
        ("/v1/feedback", '{"prediction_id": "p", "label": "Ledelse", "comment": "a\\ud83d"}', "comment"),
    ],
)
def test_lone_surrogates_are_a_422_and_the_connection_lives_on(
    client: TestClient, path: str, body: str, field: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and "surrogate" in response.json()["detail"]
    assert client.post("/v1/classify", json={"text": CARPENTER}).status_code == 200


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

    def chunks() -> Iterator[bytes]:  # streamed without a Content-Length: counted while read
        yield b'{"text": "'
        for _ in range(9):
            yield b"x" * 1024 * 1024

    streamed = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"


@pytest.mark.parametrize("body", [b'{"text": "caf\xe9 carpenter"}', b'{"text": "\xc3\x28 carpenter \xed\xa0\x80"}'])
def test_invalid_utf8_is_a_4xx_naming_the_body(client: TestClient, body: bytes) -> None:
    response = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "the body is not valid UTF-8: send JSON encoded as UTF-8", "field": "body"}


@pytest.mark.parametrize(("query", "field"), [("k=0", "k"), ("k=101", "k"), ("k=ten", "k")])
def test_similar_k_out_of_range(client: TestClient, query: str, field: str) -> None:
    response = client.get(f"/v1/vacancies/t0-00/similar?{query}")
    assert response.status_code == 422 and response.json()["field"] == field


HOSTILE = [
    "'; DROP TABLE predictions; --",
    '" OR "1"="1',
    "Robert'); DELETE FROM feedback WHERE ('1'='1",
    "1; UPDATE vacancies SET label='x' --",
    "nul\x00byte",
    "ümlaut ø å 中文 🚀 \u202eevil \U0001f600",
    "%s %(x)s {0} $1 \\ `id` ${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "y" * 5_000,
]


def test_hostile_strings_are_stored_verbatim_or_cleaned_never_executed(client: TestClient, runtime: Runtime) -> None:
    """SQL-like, quoting, NUL, unicode and long strings in every text field: never a 5xx, stored as sent
    (NUL bytes removed, ids with control characters refused), and the tables are intact afterwards."""
    vacancies = count(runtime, Vacancy)
    for h in HOSTILE:
        one = client.post("/v1/classify", json={"text": f"{CARPENTER} {h}"})
        assert one.status_code == 200, (h, one.text)
        pid = one.json()["prediction_id"]
        assert pid and one.json()["stored"] is True
        batch = client.post("/v1/classify/batch", json={"items": [{"id": h, "text": DEVELOPER}]})
        if len(h) <= 128 and "\x00" not in h:
            assert batch.status_code == 200, (h, batch.text)
            result = batch.json()["results"][0]
            assert result["id"] == h
            with runtime.sessions() as session:
                row = session.get(Prediction, result["prediction_id"])
                assert row is not None and row.external_id == h
        else:
            assert batch.status_code == 422 and batch.json()["field"] == "items[0].id"
        fb = client.post("/v1/feedback", json={"prediction_id": pid, "label": "Ledelse", "comment": h[:2000]})
        assert fb.status_code == 201, (h, fb.text)
        with runtime.sessions() as session:
            stored = session.get(Feedback, fb.json()["id"])
            assert stored is not None and stored.comment == h[:2000].replace("\x00", "")
        bad_label = client.post("/v1/feedback", json={"prediction_id": pid, "label": h[:200]})
        assert bad_label.status_code == 422 and bad_label.json()["field"] == "label"
        unknown = client.post("/v1/feedback", json={"prediction_id": h[:64], "label": "Ledelse"})
        assert unknown.status_code == 404 and unknown.json()["field"] == "prediction_id"
        search = client.post("/v1/search", json={"text": CARPENTER, "filter": {"source": h}})
        assert search.status_code == 200 and search.json()["hits"] == []
        labels = client.post("/v1/search", json={"text": CARPENTER, "filter": {"labels": [h]}})
        assert labels.status_code == 422 and labels.json()["field"] == "filter.labels"
        similar = client.get(f"/v1/vacancies/{quote(h, safe='')}/similar")
        assert similar.status_code == (404 if len(h) <= 128 else 422), (h, similar.text)
    assert count(runtime, Vacancy) == vacancies + len(HOSTILE)  # one corrected vacancy per prediction
    assert count(runtime, Feedback) == len(HOSTILE)
    assert count(runtime, Prediction) >= 2 * len(HOSTILE) - 2


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


def test_submitted_texts_are_shown_only_with_a_token_when_tokens_are_set(client: TestClient, runtime: Runtime) -> None:
    text = "night shift guard for cctv surveillance of a warehouse, call 12 34 56 78"
    pid = client.post("/v1/classify", json={"text": text}).json()["prediction_id"]
    fb = client.post("/v1/feedback", json={"prediction_id": pid, "label": "Vagt, sikkerhed og overvågning"}).json()
    assert fb["vacancy_id"].startswith("feedback-") and pid not in fb["vacancy_id"]  # the id tells no prediction id
    with runtime.sessions() as session:
        vacancy = session.get(Vacancy, fb["vacancy_id"])
        assert vacancy is not None
        stored = vacancy.text[:300]

    def snippets(headers: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
        """Snippets by vacancy id of a search and of a similar call that both reach every vacancy."""
        searched = client.post("/v1/search", json={"text": text, "k": 50}, headers=headers)
        similar = client.get("/v1/vacancies/t0-00/similar", params={"k": 50}, headers=headers)
        assert searched.status_code == similar.status_code == 200, (searched.text, similar.text)
        return tuple(  # type: ignore[return-value]
            {h["vacancy_id"]: h["snippet"] for h in r.json()["hits"]} for r in (searched, similar)
        )

    for found in snippets(None):  # no tokens set (the dev default): every snippet, as before
        assert found[fb["vacancy_id"]] == stored and found["t1-00"]
    runtime.settings.admin_token = SecretStr("admin-secret-0123456789")
    runtime.settings.api_token = SecretStr("api-secret-0123456789")
    for headers in (None, {"Authorization": "Bearer wrong-secret-0123456789"}):
        for found in snippets(headers):
            assert found[fb["vacancy_id"]] == ""  # listed, with its label, but not its text …
            assert found["t1-00"]  # … while ingested vacancies keep their snippets
            assert not any(pid in vid for vid in found)
    for token in ("api-secret-0123456789", "admin-secret-0123456789"):
        for found in snippets({"Authorization": f"Bearer {token}"}):
            assert found[fb["vacancy_id"]] == stored


def test_a_correction_before_opaque_ids_keeps_its_vacancy(client: TestClient, runtime: Runtime) -> None:
    """A prediction corrected before 0003 has the vacancy ``feedback-<prediction_id>``: a new correction
    updates that one (no second vacancy of one prediction), and it stays readable."""
    pid = client.post("/v1/classify", json={"text": DEVELOPER}).json()["prediction_id"]
    legacy = f"feedback-{pid}"
    with runtime.sessions() as session:
        prediction = session.get(Prediction, pid)
        assert prediction is not None
        session.add(
            Vacancy(id=legacy, text=prediction.text, text_hash=prediction.text_hash, label="Ledelse", source="feedback")
        )
        session.commit()
    sent = client.post("/v1/feedback", json={"prediction_id": pid, "label": "It og teleteknik"})
    assert sent.status_code == 201 and sent.json()["vacancy_id"] == legacy and sent.json()["indexed"] is True
    with runtime.sessions() as session:
        rows = session.scalars(select(Vacancy).where(Vacancy.source == "feedback")).all()
        assert [(v.id, v.label, v.revision) for v in rows] == [(legacy, "It og teleteknik", 1)]
    assert client.get(f"/v1/vacancies/{legacy}/similar").status_code == 200


def test_encoder_upgrade_and_rollback_run_as_jobs(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP side of the encoder lifecycle; the fine-tuning and model loading are the fakes (the real
    chain is tested in test_upgrade_encoder)."""
    from app.api import admin
    from app.services import encoder_upgrade

    refused = client.post("/v1/admin/rollback-encoder")
    assert refused.status_code == 409 and "nothing to roll back" in refused.json()["detail"]
    monkeypatch.setattr(admin, "sentence_transformers_finetune", lambda cfg: FakeFinetune())
    monkeypatch.setattr(encoder_upgrade, "load_sentence_embedder", lambda s: FakeEncoder(name=s.embedding_model))
    champion, base = runtime.model.version, runtime.settings.embedding_model

    upgraded = wait_for_job(client, client.post("/v1/admin/upgrade-encoder", json={"margin": 0.5}))
    assert upgraded["status"] == "succeeded" and upgraded["kind"] == "upgrade-encoder", upgraded
    result = upgraded["result"]
    assert result["promoted"] and result["champion"] == champion and result["challenger_scores"]["accuracy"] > 0
    assert client.post("/v1/classify", json={"text": CARPENTER}).json()["model_version"] == result["model_version"]

    rolled = wait_for_job(client, client.post("/v1/admin/rollback-encoder"))
    assert rolled["status"] == "succeeded" and rolled["kind"] == "rollback-encoder", rolled
    assert rolled["result"]["rolled_back"] == result["encoder_version"]
    assert rolled["result"]["encoder"] == base and rolled["result"]["model_version"] == champion
    body = client.post("/v1/classify", json={"text": CARPENTER}).json()
    assert body["model_version"] == champion and body["label"] == "Bygge og anlæg"


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


def test_language_is_detected_and_stored(client: TestClient, runtime: Runtime) -> None:
    danish = "Vi søger en erfaren tømrer til tagarbejde og nybyggeri i Aarhus. Du har svendebrev og kørekort."
    body = client.post("/v1/classify", json={"text": danish}).json()
    assert body["language"] == "da"
    assert client.post("/v1/classify", json={"text": CARPENTER}).json()["language"] == "en"
    assert client.post("/v1/classify", json={"text": "tømrer"}).json()["language"] == "und"
    with runtime.sessions() as session:
        row = session.get(Prediction, body["prediction_id"])
        assert row is not None and row.language == "da"
