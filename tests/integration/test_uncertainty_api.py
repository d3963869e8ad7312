"""Prediction sets, the abstain rule, the operating point and the review queue's orders through the HTTP API,
on SQLite and Postgres, with in-memory Qdrant and the fake encoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.db import Prediction
from app.main import create_app
from app.runtime import Runtime
from tests.factories import seed, wait_for_job

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
ADMIN = {"Authorization": "Bearer admin-secret-for-tests"}


def test_answers_carry_a_prediction_set_and_the_version_its_operating_point(runtime: Runtime, tmp_path: Path) -> None:
    runtime.settings.coverage = 0.8
    runtime.settings.admin_token = SecretStr("admin-secret-for-tests")
    seed(runtime, tmp_path, n_per_label=30)
    with TestClient(create_app(runtime.settings, runtime)) as client:
        body = client.post("/v1/classify", json={"text": CARPENTER, "top_k": 2}).json()
        labels = [p["label"] for p in body["prediction_set"]]
        assert labels and labels[0] == "Bygge og anlæg" == body["probabilities"][0]["label"]
        probs = [p["probability"] for p in body["prediction_set"]]
        assert probs == sorted(probs, reverse=True)
        assert body["abstained"] is (body["abstain_reason"] is not None)
        assert body["abstained"] is (len(labels) > 1 or body["abstain_reason"] == "below_class_threshold")
        second = body["probabilities"][1]["probability"]
        assert body["margin"] == pytest.approx(body["probabilities"][0]["probability"] - second)
        with runtime.sessions() as session:
            row = session.get(Prediction, body["prediction_id"])
            assert row is not None and row.prediction_set == labels and row.set_size == len(labels)
            assert row.margin == pytest.approx(body["margin"])
            assert row.disagreement is not None and 0.0 <= row.disagreement <= 1.0

        models = client.get("/v1/models").json()
        active = next(m for m in models["models"] if m["active"])
        op = active["operating_point"]
        assert op["rule"] == "conformal" and op["target_accuracy"] is None and op["coverage_target"] == 0.8
        assert op["n_holdout"] == active["metrics"]["n_val"] and op["mean_set_size"] > 0.0
        assert 0.0 <= op["share_automated"] <= 1.0 and 0.0 <= op["empirical_coverage"] <= 1.0

        # an automation target: per-class thresholds replace the set rule, stored with the version, served at once
        refused = client.post("/v1/admin/calibrate", json={"target_accuracy": 1.5}, headers=ADMIN)
        assert refused.status_code == 422
        assert client.post("/v1/admin/calibrate", json={"target_accuracy": 0.9}).status_code == 401
        done = client.post("/v1/admin/calibrate", json={"target_accuracy": 0.9}, headers=ADMIN)
        assert done.status_code == 200, done.text
        point = done.json()
        assert point["rule"] == "operating_point" and point["target_accuracy"] == 0.9
        assert point["accuracy_automated"] is None or point["accuracy_automated"] >= 0.9
        assert point["share_automated"] >= point["global_share_automated"]
        meta = runtime.registry.metadata(runtime.model.version)
        assert meta["uncertainty"]["operating_point"]["target_accuracy"] == 0.9
        assert runtime.model.rule.automation is not None
        listed = next(m for m in client.get("/v1/models").json()["models"] if m["active"])
        assert listed["operating_point"]["target_accuracy"] == 0.9
        again = client.post("/v1/classify", json={"text": CARPENTER}).json()
        assert again["abstain_reason"] in (None, "below_automation_threshold")

        # retrain with a target: the challenger carries its own operating point
        job = wait_for_job(
            client, client.post("/v1/admin/retrain", json={"target_accuracy": 0.8}, headers=ADMIN), headers=ADMIN
        )
        assert job["status"] == "succeeded", job
        assert job["result"]["operating_point"]["target_accuracy"] == 0.8
        assert runtime.registry.metadata(job["result"]["version"])["uncertainty"]["operating_point"] is not None


def _row(i: int, *, set_size: int | None, margin: float | None, disagreement: float | None) -> Prediction:
    return Prediction(
        id=f"p{i:02d}",
        text=f"text {i}",
        text_hash=f"h{i}",
        label="Ledelse",
        confidence=0.5,
        abstained=False,
        probabilities=[{"label": "Ledelse", "probability": 0.5}],
        neighbours=[],
        model_version="v",
        created_at=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=i),
        prediction_set=["Ledelse"] * set_size if set_size is not None else None,
        set_size=set_size,
        margin=margin,
        disagreement=disagreement,
    )


def test_the_review_queue_orders_by_value(runtime: Runtime) -> None:
    rows = [
        _row(0, set_size=1, margin=0.9, disagreement=0.1),
        _row(1, set_size=3, margin=0.2, disagreement=0.0),
        _row(2, set_size=3, margin=0.05, disagreement=0.3),
        _row(3, set_size=2, margin=0.01, disagreement=None),
        _row(4, set_size=None, margin=None, disagreement=None),  # stored before 0005
        _row(5, set_size=1, margin=0.5, disagreement=0.8),
        _row(6, set_size=0, margin=0.3, disagreement=0.2),  # no label reached its threshold: the most uncertain
    ]
    with runtime.sessions() as session:
        session.add_all(rows)
        session.commit()
    with TestClient(create_app(runtime.settings, runtime)) as client:

        def ids(order: str | None) -> list[str]:
            params = {"order": order} if order else {}
            answer = client.get("/v1/predictions", params=params)
            assert answer.status_code == 200, answer.text
            return [p["id"] for p in answer.json()["predictions"]]

        assert ids(None) == ids("newest") == ["p06", "p05", "p04", "p03", "p02", "p01", "p00"]
        assert ids("uncertainty") == ["p06", "p02", "p01", "p03", "p05", "p00", "p04"]
        assert ids("margin") == ["p03", "p02", "p01", "p06", "p05", "p00", "p04"]
        assert ids("set_size") == ["p06", "p02", "p01", "p03", "p05", "p00", "p04"]
        assert ids("disagreement") == ["p05", "p02", "p06", "p00", "p01", "p03", "p04"]
        first = client.get("/v1/predictions", params={"order": "uncertainty", "limit": 2}).json()
        assert first["order"] == "uncertainty"
        empty, item = first["predictions"]
        assert empty["set_size"] == 0 and empty["prediction_set"] == []
        assert item["set_size"] == 3 and item["margin"] == pytest.approx(0.05) and len(item["prediction_set"]) == 3
        bad = client.get("/v1/predictions", params={"order": "random"})
        assert bad.status_code == 422 and "order" in bad.text
