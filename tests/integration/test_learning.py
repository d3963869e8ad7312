"""The learning loop and the index lifecycle end to end, on SQLite and Postgres, with the fake encoder:
corrections that change the next answer, retraining with promotion and rollback, background jobs, and
a reindex during which classification never stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from app.cli import cli
from app.db import Base, ModelVersion, Prediction, Vacancy
from app.errors import InvalidInput
from app.main import create_app
from app.runtime import Runtime
from app.services.index import reindex
from app.services.training import retrain
from app.settings import Settings
from models.classifier import DUPLICATE_TRUST, FusedClassifier
from models.registry import ModelDamaged
from models.training import holdout_split
from tests.factories import classify, correct, seed, wait_for_job
from tests.fakes import FakeEncoder, SlowEncoder

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"
NURSE = "nurse for elderly care on a hospital ward"
GUARD = "night shift guard for cctv surveillance of a warehouse"
SECURITY = "Vagt, sikkerhed og overvågning"
SECURITY_ADS = [
    "security guard for night patrol and cctv surveillance",
    "guard wanted for alarm response and patrol of a warehouse",
    "surveillance operator watching cctv monitors and alarm systems",
    "night guard for patrol rounds and access control at the gate",
    "security officer for access control cctv and alarm response",
    "patrol guard for surveillance of a construction yard at night",
]


@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    seed(runtime, tmp_path)
    with TestClient(create_app(runtime.settings, runtime)) as test_client:
        yield test_client


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


# ---- retraining, promotion, rollback ----------------------------------------------------------
def test_retrain_learns_the_corrections_promotes_and_rolls_back(client: TestClient, runtime: Runtime) -> None:
    champion = runtime.model.version
    for text in SECURITY_ADS:
        correct(client, classify(client, text)["prediction_id"], SECURITY)
    job = wait_for_job(client, client.post("/v1/admin/retrain"))
    assert job["kind"] == "retrain" and job["status"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] == 36 + len(SECURITY_ADS)
    result = job["result"]
    assert result["champion"] == champion and result["n_feedback"] == len(SECURITY_ADS)
    assert result["n_train"] + result["n_val"] == result["n_examples"] == 42
    challenger, best = result["challenger_scores"]["accuracy"], result["champion_scores"]["accuracy"]
    assert result["promoted"] is (challenger >= best - result["margin"]) and result["promoted"] is True
    version = result["version"]
    assert result["active"] == version == runtime.model.version != champion

    with runtime.sessions() as session:
        row = session.get(ModelVersion, version)
        assert row is not None and row.is_active and row.parent == champion and row.embedder == "fake-encoder"
        assert row.n_train == 42 and row.data_hash and row.metrics["promotion"]["promoted"] is True
        old = session.get(ModelVersion, champion)
        assert old is not None and not old.is_active
    listed = client.get("/v1/models").json()
    assert listed["active"] == version
    assert {m["version"]: m["parent"] for m in listed["models"]}[version] == champion

    # every prediction records the model version that made it
    served = classify(client, "guard for cctv alarm patrol")
    assert served["label"] == SECURITY and served["model_version"] == version
    with runtime.sessions() as session:
        prediction = session.get(Prediction, served["prediction_id"])
        assert prediction is not None and prediction.model_version == version

    rollback = client.post(f"/v1/admin/models/{champion}/activate")
    assert rollback.status_code == 200, rollback.text
    assert rollback.json() == {"active": champion, "previous": version}
    assert runtime.model.version == champion == runtime.registry.active_version()
    assert classify(client, CARPENTER)["model_version"] == champion
    with runtime.sessions() as session:
        active = session.scalars(select(ModelVersion.id).where(ModelVersion.is_active)).all()
        assert active == [champion]
    assert client.post("/v1/admin/models/no-such-version/activate").status_code == 404


def test_a_worse_challenger_is_not_promoted_unless_the_margin_allows(client: TestClient, runtime: Runtime) -> None:
    use_head_only(runtime)  # a champion that relies on its head, trained on clean labels
    champion = runtime.model.version
    settings = runtime.settings
    with runtime.sessions() as session:  # rotate the labels of the training part only
        vacancies = session.scalars(select(Vacancy).where(Vacancy.label.is_not(None)).order_by(Vacancy.id)).all()
        labels = sorted({v.label for v in vacancies if v.label})
        y = np.array([labels.index(v.label) for v in vacancies if v.label])
        train_idx, val_idx = holdout_split(
            [v.id for v in vacancies], y, settings.validation_fraction, str(settings.seed)
        )
        for i in train_idx:
            vacancies[i].label = labels[(labels.index(vacancies[i].label or "") + 1) % len(labels)]
        session.commit()
    job = wait_for_job(client, client.post("/v1/admin/retrain"))
    result = job["result"]
    assert job["status"] == "succeeded" and result["n_val"] == len(val_idx)
    assert result["promoted"] is False and "<" in result["reason"]
    assert result["challenger_scores"]["accuracy"] < result["champion_scores"]["accuracy"]
    assert result["active"] == champion == runtime.model.version == runtime.registry.active_version()
    with runtime.sessions() as session:
        row = session.get(ModelVersion, result["version"])
        assert row is not None and not row.is_active and row.parent == champion
        assert row.metrics["promotion"]["promoted"] is False

    forced = wait_for_job(client, client.post("/v1/admin/retrain", json={"margin": 1.0}))["result"]
    assert forced["promoted"] is True and runtime.model.version == forced["version"]
    assert client.post("/v1/admin/retrain", json={"margin": 2}).status_code == 422


def test_retrain_is_the_migration_path_to_a_new_embedder(
    runtime: Runtime, tmp_path: Path, migrated_engine: Engine, db_sessions: sessionmaker
) -> None:
    seed(runtime, tmp_path)
    old = runtime.model.version
    changed = runtime.settings.model_copy(update={"embedding_chunking": "none"})
    fresh = Runtime(changed, encoder=FakeEncoder(), qdrant=runtime.store.client, engine=migrated_engine)
    fresh.sessions = db_sessions
    try:
        with pytest.raises(RuntimeError, match="run `jobclass reindex`"):
            fresh.load_active_model()  # the old head does not fit the new embedder
        with fresh.sessions() as session:
            result = retrain(fresh, session)
            reindex(fresh, session)
        assert result.promoted and result.champion is None and "cannot serve" in result.reason
        assert fresh.model.version == result.version != old
        with TestClient(create_app(changed, fresh)) as client:  # start-up accepts the new pair
            assert classify(client, CARPENTER)["label"] == "Bygge og anlæg"
    finally:
        if fresh.cache is not None:
            fresh.cache.close()


def test_cli_retrain_and_models_activate(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(runtime, tmp_path)
    first = runtime.model.version
    monkeypatch.setattr("app.cli.common.runtime", lambda settings=None: runtime)
    monkeypatch.setattr(runtime, "close", lambda: None)
    runner = CliRunner()
    done = runner.invoke(cli, ["retrain", "--margin", "1"])
    assert done.exit_code == 0, done.output
    assert "challenger" in done.output and "promoted:" in done.output
    second = runtime.model.version
    assert second != first
    back = runner.invoke(cli, ["models", "activate", first])
    assert back.exit_code == 0, back.output
    assert f"active model: {first} (was {second})" in back.output and runtime.model.version == first
    unknown = runner.invoke(cli, ["models", "activate", "nope"])
    assert unknown.exit_code == 2 and "unknown model version" in unknown.output


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


def test_training_tunes_the_fusion_on_out_of_fold_predictions(runtime: Runtime, tmp_path: Path) -> None:
    """With JOBCLASS_FUSION_CROSSFIT (default 5) the fusion is tuned on every training example's
    out-of-fold prediction; the hold-out it reports on is the same either way."""
    runtime.settings.fusion_crossfit = 5
    seed(runtime, tmp_path, n_per_label=8)
    meta = runtime.registry.metadata(runtime.model.version)
    tuning = meta["metrics"]["fusion_tuning"]
    assert tuning["on"] == "out_of_fold_5"
    assert tuning["n"] == meta["metrics"]["n_train"]  # every training example, not the hold-out
    assert meta["metrics"]["n_val"] > 0


def test_prediction_sets_are_calibrated_on_the_hold_out_and_the_out_of_fold_rows(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Cross-fitting gives every training row an out-of-fold probability: those rows join the hold-out as
    calibration rows, are kept with the version, and `calibrate` pools them again."""
    from app.services.uncertainty import calibrate

    runtime.settings.fusion_crossfit = 5
    runtime.settings.coverage = 0.9
    seed(runtime, tmp_path, n_per_label=8)
    version = runtime.model.version
    meta = runtime.registry.metadata(version)
    conformal = meta["uncertainty"]["conformal"]
    n_train, n_val = meta["metrics"]["n_train"], meta["metrics"]["n_val"]
    assert (conformal["n_holdout"], conformal["n_out_of_fold"], conformal["n"]) == (n_val, n_train, n_val + n_train)
    p_true, y = runtime.registry.calibration(version) or (None, None)
    assert p_true is not None and y is not None and len(y) == n_train == meta["calibration_rows"]
    assert ((p_true >= 0.0) & (p_true <= 1.0)).all() and set(y.tolist()) <= set(
        range(len(runtime.model.classifier.labels))
    )
    # alone, the hold-out is too small for 90 % (ceil((n + 1) · 0.9) > n): every label would be in every set
    assert n_val < 9 and not conformal["holdout_too_small"] and conformal["global_threshold"] > 0.0
    with runtime.sessions() as session:
        again = calibrate(runtime, session, None)
    assert again["conformal"]["n"] == n_val + n_train
    assert again["conformal"]["global_threshold"] == pytest.approx(conformal["global_threshold"])

    (runtime.registry.path(version) / "calibration.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelDamaged, match=r"calibration\.npz"), runtime.sessions() as session:
        calibrate(runtime, session, None)
