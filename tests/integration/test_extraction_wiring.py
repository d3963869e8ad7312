"""Extraction wired into ingest, index and classify, with a fake extractor, on SQLite and Postgres:
compact strings are embedded, names are scrubbed, and no personal data reaches a database row."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from app.db import Base, Vacancy
from app.main import create_app
from app.runtime import Runtime
from app.services.index import reindex
from app.services.training import train
from app.services.vacancies import ingest_csv
from indexing.extract import DEFAULT_LABELS, ExtractingEncoder, Extraction, Span, compact_string
from tests.conftest import make_settings, memory_qdrant
from tests.factories import write_csv
from tests.fakes import FakeEncoder, topic_texts

EMAIL, PHONE, NAME = "mette.lund@example.dk", "+45 22 33 44 55", "Mette Lund"
AD = (
    "<p>Carpenter for timber roofing and scaffolding on our building site in Aarhus.</p>"
    f"<p>Contact {NAME} at {EMAIL} or {PHONE}. {NAME} answers weekdays.</p>"
)
_TITLES = ("carpenter", "developer", "nurse", "cook", "chef")
_SKILLS = ("timber roofing", "python", "scaffolding", "cloud database")
_PERSON = re.compile(r"\b(?:Contact|Kontakt) ([A-Z]\w+ [A-Z]\w+)")


class FakeExtractor:
    """Finds a few known titles and skills, and the name after "Contact"."""

    signature = "gliner:fake|test"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def extract(self, texts: Sequence[str]) -> list[Extraction]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            spans = []
            for role, words in (("title", _TITLES), ("skills", _SKILLS)):
                for word in words:
                    for m in re.finditer(rf"\b{word}\b", text, re.IGNORECASE):
                        spans.append(Span(DEFAULT_LABELS[role], role, m.group(), m.start(), m.end(), 0.9))
            for m in _PERSON.finditer(text):
                spans.append(Span("person", "person", m.group(1), m.start(1), m.end(1), 0.8))
            spans.sort(key=lambda s: s.start)
            out.append(Extraction(compact_string(spans), tuple(spans)))
        return out


class RecordingEncoder(FakeEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.texts.extend(texts)
        return super().encode(texts, show_progress=show_progress)


def make_runtime(tmp_path: Path, engine: Engine, sessions: sessionmaker, **overrides: object) -> Runtime:
    values: dict[str, object] = {"extractor_model": "fake-gliner"} | overrides
    settings = make_settings(tmp_path, embedding_cache=False, **values)
    rt = Runtime(
        settings,
        encoder=RecordingEncoder(),
        extractor=FakeExtractor() if settings.extractor_model else None,
        qdrant=memory_qdrant(),
        engine=engine,
    )
    rt.sessions = sessions
    return rt


@pytest.fixture
def xruntime(tmp_path: Path, migrated_engine: Engine, db_sessions: sessionmaker) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path, migrated_engine, db_sessions)
    yield rt
    rt.store.client.close()


def seed_with_ad(runtime: Runtime, tmp_path: Path) -> None:
    rows = [*topic_texts(8), ("pii-ad", AD, "Bygge og anlæg")]
    path = write_csv(tmp_path / "seed.csv", rows)
    with runtime.sessions() as session:
        result = ingest_csv(
            session,
            path,
            runtime.taxonomy,
            extractor=runtime.extractor,
            store_raw_text=runtime.settings.store_raw_text,
        )
        assert result.ok, result.rejected
        train(runtime, session)
        reindex(runtime, session)


def all_rows_text(runtime: Runtime) -> str:
    """Every value of every row of every table, as one string."""
    parts = []
    with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def assert_no_personal_data(text: str) -> None:
    assert EMAIL not in text and "mette.lund" not in text
    assert "22 33 44 55" not in text and "22334455" not in text
    assert NAME not in text


def test_ingest_scrubs_names_and_the_index_embeds_the_compact_string(xruntime: Runtime, tmp_path: Path) -> None:
    seed_with_ad(xruntime, tmp_path)
    with xruntime.sessions() as session:
        stored = session.get(Vacancy, "pii-ad")
        assert stored is not None
        assert stored.text.count("[NAME]") == 2 and "[EMAIL]" in stored.text and "[PHONE]" in stored.text
    assert_no_personal_data(all_rows_text(xruntime))
    encoder = xruntime.encoder
    assert isinstance(encoder, ExtractingEncoder)
    inner = encoder.inner
    assert isinstance(inner, RecordingEncoder)
    assert "title: Carpenter; skills: timber roofing, scaffolding" in inner.texts  # what the index embedded
    assert not any(NAME in t for t in inner.texts)
    vector = xruntime.store.vector_of("pii-ad")
    assert vector is not None
    assert np.allclose(vector, inner.encode(["title: Carpenter; skills: timber roofing, scaffolding"])[0], atol=1e-5)
    hits = xruntime.store.search(vector, k=100)
    assert hits and all(NAME not in h.snippet and EMAIL not in h.snippet for h in hits)


def test_classify_explain_returns_spans_and_compact_text(xruntime: Runtime, tmp_path: Path) -> None:
    seed_with_ad(xruntime, tmp_path)
    with TestClient(create_app(xruntime.settings, xruntime)) as client:
        plain = client.post("/v1/classify", json={"text": AD})
        assert plain.status_code == 200, plain.text
        assert "extraction" not in plain.json()  # absent unless asked for
        response = client.post("/v1/classify", json={"text": AD, "explain": True})
        assert response.status_code == 200, response.text
        body = response.json()
        nothing = client.post("/v1/classify", json={"text": "an ad with no known words at all", "explain": True})
        batch = client.post("/v1/classify/batch", json={"items": [{"id": "a", "text": AD}], "explain": True})
        plain_batch = client.post("/v1/classify/batch", json={"items": [{"id": "a", "text": AD}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["extraction"] == body["extraction"]  # batch explains the same way
    assert "extraction" not in plain_batch.json()["results"][0]
    assert body["label"] == "Bygge og anlæg"
    e = body["extraction"]
    assert e["compact"] == "title: Carpenter; skills: timber roofing, scaffolding"
    assert e["embedded"] == e["compact"]
    roles = [(s["role"], s["text"]) for s in e["spans"]]
    assert ("person", NAME) in roles and ("title", "Carpenter") in roles
    for s in e["spans"]:
        assert e["text"][s["start"] : s["end"]] == s["text"]
    assert NAME not in e["compact"]
    fallback = nothing.json()["extraction"]
    assert fallback["compact"] == "" and fallback["embedded"] == "an ad with no known words at all"
    assert_no_personal_data(all_rows_text(xruntime))  # the predictions stored scrubbed text


def test_raw_text_is_stored_only_when_the_setting_allows_it(
    tmp_path: Path, migrated_engine: Engine, db_sessions: sessionmaker
) -> None:
    rt = make_runtime(tmp_path, migrated_engine, db_sessions, store_raw_text=True)
    try:
        seed_with_ad(rt, tmp_path)
        with rt.sessions() as session:
            stored = session.get(Vacancy, "pii-ad")
            assert stored is not None and EMAIL in stored.text and NAME in stored.text
    finally:
        rt.store.client.close()


def test_without_an_extractor_nothing_is_extracted_but_contacts_are_scrubbed(
    tmp_path: Path, migrated_engine: Engine, db_sessions: sessionmaker
) -> None:
    rt = make_runtime(tmp_path, migrated_engine, db_sessions, extractor_model="")
    try:
        assert rt.extractor is None and not isinstance(rt.encoder, ExtractingEncoder)
        seed_with_ad(rt, tmp_path)
        with TestClient(create_app(rt.settings, rt)) as client:
            body = client.post("/v1/classify", json={"text": AD, "explain": True}).json()
        assert body["extraction"] is None
        rows = all_rows_text(rt)
        assert EMAIL not in rows and "22 33 44 55" not in rows  # names need the extractor
    finally:
        rt.store.client.close()


def test_the_embedding_signature_names_the_extractor(tmp_path: Path) -> None:
    off = make_settings(tmp_path)
    on = make_settings(tmp_path, extractor_model="/models/gliner", extractor_labels="da")
    assert "extractor" not in off.embedding_signature
    assert on.embedding_signature["extractor"].startswith("gliner:/models/gliner|")
    assert "kompetencer" in on.embedding_signature["extractor"]
    assert make_settings(tmp_path, extractor_model="/models/gliner").embedding_signature != on.embedding_signature
    with pytest.raises(ValueError):
        make_settings(tmp_path, extractor_labels="colour=red")
