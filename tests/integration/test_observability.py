"""The review-queue endpoint, /metrics, request ids and the web page's routes.

Tests that read or write predictions run on SQLite and Postgres with a seeded runtime; the others use a
bare app (no model, no database writes), which starts in milliseconds."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from qdrant_client import QdrantClient
from sqlalchemy import update

from app.api.web import STATIC_DIR
from app.db import Prediction
from app.main import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.factories import classify, seed
from tests.fakes import FakeEncoder

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"
NURSE = "nurse for elderly care on a hospital ward"
GUARD = "Vagt, sikkerhed og overvågning"


@pytest.fixture
def app(runtime: Runtime, tmp_path: Path) -> FastAPI:
    seed(runtime, tmp_path)
    return create_app(runtime.settings, runtime)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def bare_runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    yield runtime
    runtime.close()


@pytest.fixture
def bare_app(bare_runtime: Runtime) -> FastAPI:
    return create_app(bare_runtime.settings, bare_runtime)


@pytest.fixture
def bare_client(bare_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(bare_app) as test_client:
        yield test_client


def set_confidence(runtime: Runtime, prediction_id: str, confidence: float) -> None:
    with runtime.sessions() as session:
        session.execute(update(Prediction).where(Prediction.id == prediction_id).values(confidence=confidence))
        session.commit()


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# ---- GET /v1/predictions ---------------------------------------------------------------------
def test_predictions_are_newest_first_with_their_latest_correction(client: TestClient, runtime: Runtime) -> None:
    ids = [classify(client, t)["prediction_id"] for t in (CARPENTER, DEVELOPER, NURSE)]
    for label in ("Ledelse", GUARD):  # the latest feedback wins
        assert client.post("/v1/feedback", json={"prediction_id": ids[1], "label": label}).status_code == 201

    listed = client.get("/v1/predictions")
    assert listed.status_code == 200, listed.text
    items = listed.json()["predictions"]
    assert [p["id"] for p in items] == ids[::-1]
    by_id = {p["id"]: p for p in items}
    corrected = by_id[ids[1]]
    assert corrected["reviewed_label"] == GUARD and corrected["feedback_count"] == 2
    assert corrected["reviewed_at"] is not None
    first = by_id[ids[0]]
    assert first["reviewed_label"] is None and first["feedback_count"] == 0
    assert first["label"] == "Bygge og anlæg" and first["display_name"] == "Building and construction"
    assert first["text"] == CARPENTER and first["model_version"] == runtime.model.version
    assert first["probabilities"][0]["display_name"] == "Building and construction"
    assert first["neighbours"] and first["neighbours"][0]["label"] == "Bygge og anlæg"

    unreviewed = client.get("/v1/predictions", params={"unreviewed": "true"}).json()["predictions"]
    assert [p["id"] for p in unreviewed] == [ids[2], ids[0]]
    assert [p["id"] for p in client.get("/v1/predictions", params={"limit": 1}).json()["predictions"]] == [ids[2]]


def test_predictions_filter_by_confidence(client: TestClient, runtime: Runtime) -> None:
    ids = [classify(client, t)["prediction_id"] for t in (CARPENTER, DEVELOPER, NURSE)]
    for pid, confidence in zip(ids, (0.2, 0.9, 0.45), strict=True):
        set_confidence(runtime, pid, confidence)
    low = client.get("/v1/predictions", params={"max_confidence": 0.45}).json()["predictions"]
    assert [(p["id"], p["confidence"]) for p in low] == [(ids[2], 0.45), (ids[0], 0.2)]
    empty = client.get("/v1/predictions", params={"max_confidence": 0.1}).json()
    assert empty == {"predictions": [], "order": "newest"}


def test_predictions_reject_bad_parameters(bare_client: TestClient) -> None:
    cases: list[tuple[dict[str, str | float], str]] = [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"max_confidence": 1.5}, "max_confidence"),
        ({"unreviewed": "maybe"}, "unreviewed"),
    ]
    for params, field in cases:
        response = bare_client.get("/v1/predictions", params=params)
        assert response.status_code == 422 and response.json()["field"] == field


def test_predictions_take_the_feedback_token_when_one_is_set(client: TestClient, runtime: Runtime) -> None:
    runtime.settings.api_token = SecretStr("api-secret")
    assert client.get("/v1/predictions").status_code == 401
    ok = client.get("/v1/predictions", headers={"Authorization": "Bearer api-secret"})
    assert ok.status_code == 200


# ---- /metrics --------------------------------------------------------------------------------
def test_metrics_move_after_classify_and_feedback(client: TestClient, runtime: Runtime) -> None:
    before = samples(client)
    pid = classify(client, CARPENTER)["prediction_id"]
    assert client.post("/v1/feedback", json={"prediction_id": pid, "label": GUARD}).status_code == 201  # disagrees
    assert client.post("/v1/feedback", json={"prediction_id": pid, "label": "Bygge og anlæg"}).status_code == 201
    runtime.settings.abstain_threshold = 1.01  # every answer below it: the next one abstains
    assert classify(client, DEVELOPER)["abstained"] is True
    assert client.get("/v1/vacancies/t0-00/similar").status_code == 200
    after = samples(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    classify_route = {"method": "POST", "route": "/v1/classify", "status": "200"}
    assert moved("jobclass_http_requests_total", **classify_route) == 2
    assert moved("jobclass_http_request_duration_seconds_count", **classify_route) == 2
    assert moved("jobclass_http_request_duration_seconds_sum", **classify_route) > 0
    assert moved("jobclass_http_request_duration_seconds_bucket", **classify_route, le="+Inf") == 2
    # route templates, not raw paths: bounded label values
    similar = {"method": "GET", "route": "/v1/vacancies/{vacancy_id}/similar", "status": "200"}
    assert moved("jobclass_http_requests_total", **similar) == 1
    assert moved("jobclass_http_requests_total", method="POST", route="/v1/feedback", status="201") == 2
    assert moved("jobclass_predictions_total", label="Bygge og anlæg") == 1
    assert moved("jobclass_predictions_total", label="uncertain") == 1
    assert moved("jobclass_abstentions_total") == 1
    assert moved("jobclass_feedback_total") == 2
    assert moved("jobclass_feedback_disagreements_total") == 1
    # the ratio gauges over recent traffic agree with the counters (fewer events than the window here)
    answers = sum(v for (name, _), v in after.items() if name == "jobclass_predictions_total")
    assert value(after, "jobclass_abstain_ratio") == pytest.approx(value(after, "jobclass_abstentions_total") / answers)
    assert value(after, "jobclass_feedback_disagreement_ratio") == pytest.approx(
        value(after, "jobclass_feedback_disagreements_total") / value(after, "jobclass_feedback_total")
    )
    assert 0 < value(after, "jobclass_abstain_ratio") < 1
    assert value(after, "jobclass_model_info", version=runtime.model.version, variant="fp32") == 1
    assert (
        value(after, "jobclass_index_vectors") == runtime.store.count() == value(before, "jobclass_index_vectors") + 1
    )


def test_each_app_has_its_own_registry(bare_runtime: Runtime) -> None:
    health = {"method": "GET", "route": "/health", "status": "503"}  # no model: degraded
    with (
        TestClient(create_app(bare_runtime.settings, bare_runtime)) as one,
        TestClient(create_app(bare_runtime.settings, bare_runtime)) as two,
    ):
        one.get("/health")
        assert value(samples(one), "jobclass_http_requests_total", **health) == 1
        assert value(samples(two), "jobclass_http_requests_total", **health) == 0
        assert value(samples(two), "jobclass_index_vectors") == 0
        assert not any(name == "jobclass_model_info" for name, _ in samples(two))


def test_unmatched_paths_share_one_route_label(bare_client: TestClient) -> None:
    for path in ("/nope", "/also/nope"):
        assert bare_client.get(path).status_code == 404
    found = samples(bare_client)
    assert value(found, "jobclass_http_requests_total", method="GET", route="<unmatched>", status="404") == 2
    assert not any("/nope" in dict(labels).get("route", "") for _, labels in found)


def test_made_up_methods_share_one_method_label(bare_client: TestClient) -> None:
    methods = [f"X{i:03d}" for i in range(20)]
    for method in methods:
        assert bare_client.request(method, "/v1/taxonomy").status_code < 500
    found = samples(bare_client)
    seen = {dict(labels).get("method") for name, labels in found if name == "jobclass_http_requests_total"}
    assert seen <= {"GET", "POST", "OTHER"}
    assert sum(
        v
        for (name, labels), v in found.items()
        if dict(labels).get("method") == "OTHER" and name == "jobclass_http_requests_total"
    ) == len(methods)


# ---- request ids and the access log ----
def test_migrating_keeps_the_json_log_handler(tmp_path: Path) -> None:
    from app.db import migrate
    from app.observability import JsonFormatter, configure_json_logging

    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_json_logging()
        migrate(f"sqlite:///{tmp_path / 'm.db'}")
        assert [type(h.formatter) for h in root.handlers] == [JsonFormatter]
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_request_id_is_echoed_or_made(bare_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client = bare_client
    with caplog.at_level(logging.INFO, logger="jobclass.access"):
        given = client.get("/v1/taxonomy", headers={"X-Request-ID": "req-42.a"})
    assert given.status_code == 200 and given.headers["X-Request-ID"] == "req-42.a"
    [record] = [r for r in caplog.records if r.name == "jobclass.access"]
    fields = vars(record)
    assert fields["request_id"] == "req-42.a" and fields["method"] == "GET" and fields["path"] == "/v1/taxonomy"
    assert fields["status"] == 200 and fields["route"] == "/v1/taxonomy" and fields["duration_ms"] > 0

    made = client.get("/health").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert client.get("/health").headers["X-Request-ID"] != made
    for bad in ("has spaces", "x" * 129, 'quote"d'):
        echoed = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed)
    # errors carry it too
    assert client.post("/v1/classify", json={}, headers={"X-Request-ID": "r1"}).headers["X-Request-ID"] == "r1"
    assert client.get("/nope", headers={"X-Request-ID": "r2"}).headers["X-Request-ID"] == "r2"


def test_an_unexpected_error_answers_500_with_the_request_id(
    bare_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    bare_app.add_api_route("/boom", boom)
    with TestClient(bare_app, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO):
        response = client.get("/boom", headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "r-500" and response.json()["request_id"] == "r-500"
    access = [r for r in caplog.records if r.name == "jobclass.access"]
    assert [(getattr(r, "status", None), getattr(r, "request_id", None)) for r in access] == [(500, "r-500")]


# ---- the web page's routes -------------------------------------------------------------------
@pytest.mark.parametrize(("path", "title"), [("/", "Classify a vacancy"), ("/review", "Review queue")])
def test_pages_are_served_with_a_strict_csp(bare_client: TestClient, path: str, title: str) -> None:
    client = bare_client
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert f"<title>{title}" in response.text
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', response.text):
        assert client.get(asset).status_code == 200, asset


def test_static_files_load_nothing_from_other_hosts() -> None:
    files = sorted(p for p in STATIC_DIR.iterdir() if p.suffix in {".html", ".css", ".js"})
    assert {p.name for p in files} >= {"index.html", "review.html", "app.css", "common.js", "classify.js", "review.js"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?i:https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import)|\burl\(", text), path.name
