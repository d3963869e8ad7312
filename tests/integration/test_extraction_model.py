"""The real GLiNER path on a tiny model trained in a temp folder: build on the packaged MiniLM →
train a few steps → save_pretrained → GLiNER.from_pretrained → extract. Marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.errors import Unavailable
from app.runtime import Runtime
from indexing.extract import DANISH_LABELS, Extractor, ExtractorError
from indexing.extract_training import TrainConfig, TrainResult, load_examples, train_extractor
from tests.conftest import make_settings, memory_qdrant
from tests.fakes import FakeEncoder

pytestmark = pytest.mark.slow
SPANS = Path(__file__).resolve().parents[2] / "data" / "extraction" / "spans.jsonl"
TINY = TrainConfig(steps=2, batch_size=2, holdout=0.34, hidden_size=32, max_width=6, max_len=64, threads=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    folder = tmp_path_factory.mktemp("gliner")
    lines = SPANS.read_text(encoding="utf-8").splitlines()[:6]
    spans = folder / "spans.jsonl"
    spans.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return train_extractor(spans, folder / "model", TINY)


def test_training_saves_a_model_and_metrics(tiny_model: TrainResult) -> None:
    folder = tiny_model.model_dir
    assert (folder / "gliner_config.json").is_file()
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n_train"] == 4 and metrics["n_heldout"] == 2 and metrics["steps_done"] == 2
    held = metrics["heldout"]
    assert held["tp"] + held["fn"] > 0  # the held-out gold spans were counted
    assert 0.0 <= held["f1"] <= 1.0


def test_a_saved_model_loads_from_its_folder_and_extracts(tiny_model: TrainResult) -> None:
    texts = [e.text for e in load_examples(SPANS)[:3]] + ["", "word " * 400]
    extractor = Extractor.load(tiny_model.model_dir, threshold=0.01)  # a low threshold: an untrained model
    results = extractor.extract(texts)
    assert len(results) == len(texts) and results[3].spans == ()
    assert any(r.spans for r in results)
    for text, result in zip(texts, results, strict=True):
        for s in result.spans:
            assert text[s.start : s.end] == s.text and 0.01 <= s.score <= 1.0
            assert s.role in {"title", "skills", "tasks", "person"}
        assert all(p.text not in result.compact.split(": ") for p in result.persons)
    danish = Extractor.load(tiny_model.model_dir, labels=DANISH_LABELS, threshold=0.01)
    assert {s.label for r in danish.extract(texts[:2]) for s in r.spans} <= set(DANISH_LABELS.values())


def test_runtime_loads_the_configured_extractor(tiny_model: TrainResult, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, extractor_model=str(tiny_model.model_dir))
    rt = Runtime(settings, encoder=FakeEncoder(), qdrant=memory_qdrant())
    try:
        assert isinstance(rt.extractor, Extractor)
        assert settings.embedding_signature["extractor"] == rt.extractor.signature
    finally:
        rt.close()


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="could not load GLiNER model"):
        Extractor.load(tmp_path / "nothing-here")
    rt = Runtime(make_settings(tmp_path, extractor_model=str(tmp_path / "missing")), qdrant=memory_qdrant())
    try:
        with pytest.raises(Unavailable, match="JOBCLASS_EXTRACTOR_MODEL"):
            _ = rt.extractor
    finally:
        rt.close()


def test_cli_rejects_a_bad_span_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "a nurse", "spans": [{"label": "skill", "start": 0, "end": 3, "text": "xyz"}]}))
    result = CliRunner().invoke(cli, ["train-extractor", str(bad), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "does not match" in result.output
    assert not (tmp_path / "m").exists()
