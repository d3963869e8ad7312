"""The extractor without a real model: labels, compact string, chunking, span scoring, the data file."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.settings import PROJECT_ROOT
from indexing.extract import (
    DANISH_LABELS,
    DEFAULT_LABELS,
    ExtractingEncoder,
    Extraction,
    Extractor,
    Span,
    compact_string,
    parse_labels,
    text_for_embedding,
    word_windows,
)
from indexing.extract_training import (
    Example,
    GoldSpan,
    load_examples,
    span_scores,
    split_examples,
    to_gliner_example,
)
from tests.fakes import FakeEncoder

SPANS = PROJECT_ROOT / "data" / "extraction" / "spans.jsonl"


def span(role: str, text: str, start: int = 0, score: float = 0.9) -> Span:
    label = DEFAULT_LABELS[role]
    return Span(label, role, text, start, start + len(text), score)


# ---- labels and the compact string --------------------------------------------------------------
def test_labels_default_preset_and_explicit() -> None:
    assert parse_labels("") == DEFAULT_LABELS
    assert parse_labels("da") == DANISH_LABELS
    assert parse_labels("da")["skills"] == "kompetencer"
    custom = parse_labels("title=occupation, tasks=duty")
    assert custom == {"title": "occupation", "skills": "skill", "tasks": "duty", "person": "person"}
    for bad in ("title", "colour=red", "title=", "title=skill"):
        with pytest.raises(ValueError):
            parse_labels(bad)


def test_compact_string_is_ordered_deduplicated_and_has_no_persons() -> None:
    spans = [
        span("skills", "Python", 40),
        span("title", "Backend Developer", 0),
        span("person", "Mette Lund", 90),
        span("skills", "SQL", 50),
        span("skills", "python", 70),  # same skill, other case: dropped
        span("tasks", "build  REST APIs", 20),
    ]
    assert compact_string(spans) == "title: Backend Developer; skills: Python, SQL; tasks: build REST APIs"
    assert compact_string([span("person", "Mette Lund")]) == ""
    assert compact_string([]) == ""


def test_embedding_falls_back_to_the_text_when_nothing_was_found() -> None:
    assert text_for_embedding("cleaned ad", Extraction("", (span("person", "Bo"),))) == "cleaned ad"
    assert text_for_embedding("cleaned ad", Extraction("title: nurse")) == "title: nurse"
    assert text_for_embedding("cleaned ad", None) == "cleaned ad"


# ---- chunking -----------------------------------------------------------------------------------
def test_word_windows_cover_the_text_and_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    windows = word_windows(text, size=10, overlap=2)
    pieces = [text[s:e].split() for s, e in windows]
    assert all(len(p) <= 10 for p in pieces)
    assert pieces[0][0] == "w0" and pieces[-1][-1] == "w24"
    assert pieces[1][0] == "w8"  # 2 words of overlap
    assert {w for p in pieces for w in p} == set(text.split())
    assert word_windows("  short text ", 10, 2) == [(2, 12)]
    assert word_windows("   ", 10, 2) == []


class FakeGliner:
    """Stands in for a GLiNER model: finds fixed words, records the chunks it was given."""

    def __init__(self, max_len: int = 384) -> None:
        self.config = SimpleNamespace(max_len=max_len)
        self.calls: list[list[str]] = []
        self.words = {"nurse": "job title", "Danish": "skill", "Mette Lund": "person", "teaching": "colour"}

    def inference(self, texts: Sequence[str], labels: list[str], threshold: float, batch_size: int) -> list[Any]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            found = []
            for word, label in self.words.items():
                for m in re.finditer(re.escape(word), text):
                    found.append({"start": m.start(), "end": m.end(), "text": word, "label": label, "score": 0.8})
            out.append(found)
        return out


def test_extractor_chunks_long_texts_and_maps_offsets_back() -> None:
    model = FakeGliner(max_len=20)  # windows of at most 14 words
    extractor = Extractor(model, name="fake", threshold=0.4)
    filler = " ".join(["word"] * 30)
    text = f"We need a nurse. {filler} You speak Danish. {filler} Contact Mette Lund today, nurse"
    [result] = extractor.extract([text])
    assert len(model.calls) == 1 and len(model.calls[0]) > 3  # one batched call over every window
    assert all(len(chunk.split()) <= extractor.window_words for chunk in model.calls[0])
    for s in result.spans:
        assert text[s.start : s.end] == s.text
    assert [(s.role, s.text) for s in result.spans] == [
        ("title", "nurse"),
        ("skills", "Danish"),
        ("person", "Mette Lund"),
        ("title", "nurse"),
    ]
    assert len({(s.start, s.end) for s in result.spans}) == 4  # overlapping windows: no duplicates
    assert result.compact == "title: nurse; skills: Danish"
    assert [p.text for p in result.persons] == ["Mette Lund"]
    assert "colour" not in {s.label for s in result.spans}  # labels it was not asked for are ignored


def test_extractor_batches_texts_and_handles_empty_ones() -> None:
    model = FakeGliner()
    results = Extractor(model, name="fake").extract(["a nurse", "", "Danish nurse"])
    assert len(model.calls) == 1 and model.calls[0] == ["a nurse", "Danish nurse"]
    assert [r.compact for r in results] == ["title: nurse", "", "title: nurse; skills: Danish"]


def test_extractor_signature_names_model_labels_and_threshold() -> None:
    a = Extractor(FakeGliner(), name="m", threshold=0.5)
    b = Extractor(FakeGliner(), name="m", labels=DANISH_LABELS, threshold=0.5)
    assert a.signature != b.signature and "kompetencer" in b.signature
    assert Extractor(FakeGliner(), name="m", threshold=0.3).signature != a.signature
    with pytest.raises(ValueError):
        Extractor(FakeGliner(), name="m", threshold=1.5)


def test_extracting_encoder_embeds_the_compact_string() -> None:
    inner = FakeEncoder()
    encoder = ExtractingEncoder(inner, Extractor(FakeGliner(), name="fake"))
    vectors = encoder.encode(["Wanted: a nurse who speaks Danish", "a carpenter"])
    expected = inner.encode(["title: nurse; skills: Danish", "a carpenter"])
    assert np.allclose(vectors, expected)
    assert encoder.name != inner.name and "gliner:fake" in encoder.name and encoder.dim == inner.dim


# ---- training data and scoring ------------------------------------------------------------------
def test_shipped_span_file_is_valid() -> None:
    examples = load_examples(SPANS)  # raises if any offset does not give back its text
    assert len(examples) >= 150
    labels = [s.label for e in examples for s in e.spans]
    assert set(labels) == set(DEFAULT_LABELS.values())
    assert labels.count("person") >= 50
    assert len({e.category for e in examples}) == 22
    for e in examples:
        for s in e.spans:
            assert e.text[s.start : s.end] == s.text and s.text == s.text.strip()
        gl = to_gliner_example(e)
        assert len(gl["ner"]) == len(e.spans)  # every span falls on GLiNER word boundaries


def test_span_file_is_reproducible_from_the_annotated_passages() -> None:
    spec = importlib.util.spec_from_file_location("build_spans", SPANS.parent / "build_spans.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.build(sorted(SPANS.parent.glob("passages_*.txt")))
    assert rows == [json.loads(line) for line in SPANS.read_text(encoding="utf-8").splitlines()]


def test_bad_offsets_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"text": "a nurse", "spans": [{"label": "job title", "start": 1, "end": 7, "text": "nurse"}]})
    )
    with pytest.raises(ValueError, match="does not match"):
        load_examples(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        load_examples(path)


def test_to_gliner_example_uses_inclusive_word_indices() -> None:
    text = "Hiring a CNC-operator, contact Mette Lund."
    e = Example("1", text, (GoldSpan("job title", 9, 21, "CNC-operator"), GoldSpan("person", 31, 41, "Mette Lund")))
    assert to_gliner_example(e) == {
        "tokenized_text": ["Hiring", "a", "CNC-operator", ",", "contact", "Mette", "Lund", "."],
        "ner": [[2, 2, "job title"], [5, 6, "person"]],
    }


def test_span_scores_exact_match_of_label_and_text() -> None:
    gold = [
        Example("1", "", (GoldSpan("skill", 0, 3, "SQL"), GoldSpan("task", 0, 9, "build API"))),
        Example("2", "", (GoldSpan("job title", 0, 5, "nurse"),)),
    ]
    predicted = [
        Extraction("", (span("skills", "sql"), span("tasks", "build"))),  # one hit, one wrong span
        Extraction("", (span("title", "nurse"), span("person", "Bo"))),  # one hit, one extra
    ]
    scores = span_scores(gold, predicted)
    assert (scores.tp, scores.fp, scores.fn) == (2, 2, 1)
    assert scores.precision == pytest.approx(0.5) and scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores.per_label["job title"]["f1"] == 1.0 and scores.per_label["person"]["precision"] == 0.0


def test_split_by_category_holds_out_whole_categories() -> None:
    examples = load_examples(SPANS)
    train, held = split_examples(examples, 0.2, seed=1, by_category=True)
    assert {e.category for e in train}.isdisjoint({e.category for e in held})
    assert len(train) + len(held) == len(examples)
    train2, held2 = split_examples(examples, 0.2, seed=1)
    assert len(held2) == round(len(examples) * 0.2) and not {e.id for e in train2} & {e.id for e in held2}
