"""A correction can be retracted, on SQLite and Postgres with the fake encoder and a real in-memory Qdrant:
the row stays (``retracted_at``), the vacancy falls back to the prediction's earlier correction that stands
or leaves the index, the next answer and the next retrain forget it; 404, 409 and the token as for
``POST /v1/feedback``; ``jobclass feedback retract ID``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.db import Feedback, Prediction, Vacancy, new_id
from app.main import create_app
from app.runtime import Runtime
from app.services.dataset import read_labelled
from app.services.feedback import feedback_vacancy_id, submit_feedback
from app.services.training import retrain
from tests.conftest import make_settings
from tests.factories import classify, correct, one_error_line, seed

GUARD = "night shift guard for cctv surveillance of a warehouse"
SECURITY, LEADERSHIP = "Vagt, sikkerhed og overvågning", "Ledelse"


@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[TestClient]:
    seed(runtime, tmp_path)
    with TestClient(create_app(runtime.settings, runtime)) as test_client:
        yield test_client


def review(client: TestClient, prediction_id: str, **params: Any) -> dict[str, Any] | None:
    listed = client.get("/v1/predictions", params={"limit": 200, **params}).json()["predictions"]
    return next((p for p in listed if p["id"] == prediction_id), None)


def test_a_retracted_correction_leaves_the_index_and_the_next_retrain(client: TestClient, runtime: Runtime) -> None:
    first = classify(client, GUARD)
    assert first["label"] not in (SECURITY, LEADERSHIP)
    # a flat taxonomy: the answer alone (or nothing, when the prediction-set rule abstains)
    assert (first["level"], first["path"]) == ((0, [first["label"]]) if first["label"] else (None, []))
    pid = first["prediction_id"]
    vid = feedback_vacancy_id(pid)
    older = correct(client, pid, LEADERSHIP)
    newer = correct(client, pid, SECURITY)
    assert classify(client, GUARD)["label"] == SECURITY

    # the newer one is retracted: the older correction of the same prediction stands again, in the index too
    plain = runtime.settings
    runtime.settings = make_settings(plain.state_dir, api_token="a" * 16)
    assert client.delete(f"/v1/feedback/{newer['id']}").status_code == 401  # the token, as for POST
    done = client.delete(f"/v1/feedback/{newer['id']}", headers={"Authorization": "Bearer " + "a" * 16})
    assert done.status_code == 200, done.text
    runtime.settings = plain
    body = done.json()
    assert body["id"] == newer["id"] and body["label"] == SECURITY and body["retracted_at"] is not None
    assert body["vacancy_label"] == LEADERSHIP and body["indexed"] is True
    again = classify(client, GUARD)
    assert again["label"] == LEADERSHIP and again["neighbours"][0]["vacancy_id"] == vid
    reviewed = review(client, pid)
    assert reviewed is not None and reviewed["reviewed_label"] == LEADERSHIP
    assert reviewed["reviewed_feedback_id"] == older["id"] and reviewed["feedback_count"] == 1

    twice = client.delete(f"/v1/feedback/{newer['id']}")
    assert twice.status_code == 409 and "already retracted" in twice.json()["detail"]
    for unknown in (987654, 2**40):
        missing = client.delete(f"/v1/feedback/{unknown}")
        assert missing.status_code == 404 and "no feedback" in missing.json()["detail"]

    # the older one too: no correction stands, the vacancy has no label and no point
    last = client.delete(f"/v1/feedback/{older['id']}").json()
    assert last["vacancy_label"] is None and last["indexed"] is True
    assert runtime.store.vectors_of(vid) is None
    after = classify(client, GUARD)
    assert after["label"] == first["label"] and vid not in [n["vacancy_id"] for n in after["neighbours"]]
    assert review(client, pid, unreviewed=True) is not None  # back in the unreviewed queue

    # an audit trail, not a delete; the training set (what retrain reads) no longer holds the vacancy
    other = classify(client, "guard for cctv and alarm response at the gate at night")
    kept = correct(client, other["prediction_id"], SECURITY)
    with runtime.sessions() as session:
        rows = {f.id: f for f in session.query(Feedback).filter(Feedback.prediction_id == pid)}
        assert set(rows) == {older["id"], newer["id"]} and all(f.retracted_at is not None for f in rows.values())
        vacancy = session.get(Vacancy, vid)
        assert vacancy is not None and vacancy.label is None
        assert vid not in read_labelled(session, runtime.taxonomy.leaves).ids
        result = retrain(runtime, session, margin=1.0)
    assert result.n_feedback == 1  # only the correction that stands
    assert kept["vacancy_id"] != vid


def test_cli_retract(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's output and errors (the index holds no collection here: the retraction still counts)."""
    with runtime.sessions() as session:
        prediction = Prediction(
            id=new_id(), text="a guard", text_hash="h", label="Ledelse", confidence=0.4, probabilities=[], neighbours=[]
        )
        prediction.model_version = "v"
        session.add(prediction)
        session.commit()
        fb = submit_feedback(runtime, session, prediction.id, SECURITY).feedback
    monkeypatch.setattr("app.cli.common.runtime", lambda settings=None: runtime)
    monkeypatch.setattr(runtime, "close", lambda: None)
    runner = CliRunner()
    done = runner.invoke(cli, ["feedback", "retract", str(fb.id)])
    assert done.exit_code == 0, done.output
    assert f"retracted feedback {fb.id} ({SECURITY!r} for prediction {prediction.id})" in done.output
    assert "no label (out of the index and the training set)" in done.output
    assert "run `jobclass reindex`" in done.output  # no collection to delete from: said, not hidden
    again = runner.invoke(cli, ["feedback", "retract", str(fb.id)])
    assert again.exit_code == 2 and "already retracted" in one_error_line(again)
    unknown = runner.invoke(cli, ["feedback", "retract", "424242"])
    assert unknown.exit_code == 2 and one_error_line(unknown) == "error: no feedback with id 424242"
