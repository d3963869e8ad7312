"""A hierarchical taxonomy through the service, on SQLite and Postgres with the fake encoder: the model trains
on the leaves, answers carry ``level`` and ``path``, an unsure leaf falls back to its parent, corrections and
ingested labels must be leaves. (A flat taxonomy's level 0 / path [label]: tests/integration/test_retract.py.)"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from app.main import create_app
from app.runtime import Runtime
from app.services.vacancies import ingest_csv
from tests.conftest import make_settings, memory_qdrant
from tests.factories import classify, seed, write_csv
from tests.fakes import FakeEncoder

BUILD, IT, CARE = "Bygge og anlæg", "It og teleteknik", "Sundhed, omsorg og personlig pleje"
TECH, PEOPLE = "Tekniske fag", "Mennesker"
MIXED = "carpenter timber roofing developer python software we offer a good team"


@pytest.fixture
def tree_runtime(tmp_path: Path, migrated_engine: Engine, db_sessions: sessionmaker) -> Iterator[Runtime]:
    path = tmp_path / "tree.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:  # parents by id (T, P) or by label
        csv.writer(handle).writerows(
            [
                ("id", "label", "display_name", "parent"),
                ("T", TECH, "Technical", ""),
                ("P", PEOPLE, "People", ""),
                ("1", BUILD, "Building", "T"),
                ("2", IT, "IT", TECH),
                ("3", CARE, "Care", "P"),
                ("4", "Pædagogisk arbejde", "Teaching", "P"),
            ]
        )
    rt = Runtime(
        make_settings(tmp_path, taxonomy_path=path),
        encoder=FakeEncoder(),
        qdrant=memory_qdrant(),
        engine=migrated_engine,
    )
    rt.sessions = db_sessions
    yield rt
    rt.store.client.close()


def set_threshold(runtime: Runtime, tmp_path: Path, value: float) -> None:
    runtime.settings = make_settings(tmp_path, taxonomy_path=runtime.settings.taxonomy_path, hierarchy_threshold=value)


def test_hierarchical_answers_fall_back_to_the_parent(
    tree_runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(tree_runtime, tmp_path)
    classifier = tree_runtime.model.classifier
    assert classifier.labels == [BUILD, IT, CARE, "Pædagogisk arbejde"]  # trained on the leaves
    with TestClient(create_app(tree_runtime.settings, tree_runtime)) as client:
        sure = classify(client, "carpenter for timber roofing and scaffolding on a building site", top_k=4)
        assert sure["label"] == BUILD and sure["level"] == 1 and sure["path"] == [TECH, BUILD]
        assert not sure["abstained"]

        # the trained model is sure of everything it knows: fix its probabilities to test the rule
        split = np.array([0.4, 0.35, 0.15, 0.1])
        monkeypatch.setattr(classifier, "fuse_signals", lambda s, *_a, **_k: np.tile(split, (len(s.head), 1)))
        set_threshold(tree_runtime, tmp_path, 0.3)
        assert classify(client, MIXED, top_k=4)["path"] == [TECH, BUILD]
        set_threshold(tree_runtime, tmp_path, 0.5)  # no leaf reaches it, their parent does (0.75)
        parent = classify(client, MIXED, top_k=4)
        assert parent["label"] == TECH and parent["level"] == 0 and parent["path"] == [TECH]
        assert not parent["abstained"] and parent["probabilities"][0]["label"] == BUILD
        assert parent["confidence"] == pytest.approx(0.4)  # the top leaf's, as before
        set_threshold(tree_runtime, tmp_path, 0.8)  # not even the best root
        none = classify(client, MIXED, top_k=4)
        assert none["abstained"] and none["label"] is None and none["level"] is None and none["path"] == []
        stored = {p["id"]: p for p in client.get("/v1/predictions", params={"limit": 10}).json()["predictions"]}
        kept = stored[parent["prediction_id"]]  # the answer given is stored beside the top leaf
        assert (kept["label"], kept["answer"], kept["level"], kept["path"]) == (BUILD, TECH, 0, [TECH])
        kept = stored[none["prediction_id"]]
        assert (kept["label"], kept["answer"], kept["level"], kept["path"]) == (BUILD, None, None, [])
        assert stored[sure["prediction_id"]]["path"] == [TECH, BUILD]

        taxonomy = {t["label"]: t for t in client.get("/v1/taxonomy").json()["labels"]}
        assert (taxonomy[IT]["parent"], taxonomy[IT]["leaf"]) == (TECH, True)
        assert (taxonomy[TECH]["parent"], taxonomy[TECH]["leaf"]) == (None, False)
        wrong = client.post("/v1/feedback", json={"prediction_id": sure["prediction_id"], "label": TECH})
        assert wrong.status_code == 422 and "not a leaf" in wrong.text


def test_ingest_refuses_a_label_with_children(tree_runtime: Runtime, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", [("a1", "carpenter on a site", TECH), ("a2", "python developer", IT)])
    with tree_runtime.sessions() as session:
        result = ingest_csv(session, path, tree_runtime.taxonomy)
    assert not result.ok and result.rejected == [
        f"line 2: id 'a1': label {TECH!r} is not a leaf of the taxonomy: choose one below it ({BUILD!r}, {IT!r})"
    ]
