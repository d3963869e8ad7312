"""Extract job titles, skills and tasks (and person names, for scrubbing) with GLiNER.

The seed system's trick: embed a compact string of what matters in an ad instead of the whole noisy
text::

    title: nurse; skills: wound care, Danish; tasks: observe patients, administer medication

``Extractor`` loads any GLiNER checkpoint by name or path (``GLiNER.from_pretrained``; only local
files when ``HF_HUB_OFFLINE`` is set), splits long texts into word windows the model accepts, runs
batched inference on CPU and returns an ``Extraction`` per text: the compact string and the spans.
Person spans are only used to scrub names (``indexing.clean.scrub_names``); they never enter the
compact string.

Labels are configurable: each *role* (``title``, ``skills``, ``tasks``, ``person``) maps to the label
text the model is prompted with. Defaults are English (``job title``, ``skill``, ``task``,
``person``); the seed system prompted a Danish model with ``stillingsbetegnelser``, ``kompetencer``,
``arbejdsopgaver`` (``DANISH_LABELS``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from indexing.embed import Encoder

log = logging.getLogger(__name__)

ROLES = ("title", "skills", "tasks", "person")
COMPACT_ROLES = ("title", "skills", "tasks")  # person: scrubbing only
DEFAULT_LABELS: dict[str, str] = {"title": "job title", "skills": "skill", "tasks": "task", "person": "person"}
DANISH_LABELS: dict[str, str] = {
    "title": "stillingsbetegnelser",
    "skills": "kompetencer",
    "tasks": "arbejdsopgaver",
    "person": "person",
}
PRESETS = {"en": DEFAULT_LABELS, "da": DANISH_LABELS}
_WORD = re.compile(r"\S+")


class ExtractorError(RuntimeError):
    """The extractor model could not be loaded or run."""


def parse_labels(spec: str | None) -> dict[str, str]:
    """``""``/``"en"`` → English defaults, ``"da"`` → the seed's Danish labels, or explicit
    ``"title=job title,skills=skill,tasks=task,person=person"`` (missing roles keep the default)."""
    spec = (spec or "").strip()
    if not spec:
        return dict(DEFAULT_LABELS)
    if spec.lower() in PRESETS:
        return dict(PRESETS[spec.lower()])
    labels = dict(DEFAULT_LABELS)
    for part in spec.split(","):
        if not part.strip():
            continue
        role, sep, label = part.partition("=")
        role, label = role.strip(), label.strip()
        if not sep or role not in ROLES or not label:
            raise ValueError(
                f"bad extractor label {part.strip()!r}: expected ROLE=LABEL with ROLE one of {', '.join(ROLES)}"
            )
        labels[role] = label
    if len(set(labels.values())) != len(labels):
        raise ValueError("extractor labels must be distinct")
    return labels


@dataclass(frozen=True)
class Span:
    label: str  # the label the model was prompted with, e.g. "job title"
    role: str  # title | skills | tasks | person
    text: str
    start: int  # character offsets into the text given to ``extract``
    end: int
    score: float


@dataclass(frozen=True)
class Extraction:
    compact: str  # "title: …; skills: …; tasks: …" ("" when nothing but persons was found)
    spans: tuple[Span, ...] = field(default=())

    @property
    def persons(self) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.role == "person")


def compact_string(spans: Sequence[Span]) -> str:
    """``title: a; skills: b, c; tasks: d``: spans in text order, deduplicated case-insensitively
    (the first spelling wins), empty roles left out, persons never included."""
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    parts = []
    for role in COMPACT_ROLES:
        seen: dict[str, str] = {}
        for span in ordered:
            value = " ".join(span.text.split())
            if span.role == role and value and value.casefold() not in seen:
                seen[value.casefold()] = value
        if seen:
            parts.append(f"{role}: {', '.join(seen.values())}")
    return "; ".join(parts)


def word_windows(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Character ranges of windows of ``size`` words overlapping by ``overlap`` words; cut at
    whitespace so offsets map back to ``text`` exactly."""
    words = [m.span() for m in _WORD.finditer(text)]
    if not words:
        return []
    if len(words) <= size:
        return [(words[0][0], words[-1][1])]
    step = max(1, size - overlap)
    windows = []
    for first in range(0, len(words), step):
        last = min(first + size, len(words)) - 1
        windows.append((words[first][0], words[last][1]))
        if last == len(words) - 1:
            break
    return windows


def signature_of(name: str, labels: dict[str, str], threshold: float) -> str:
    """What makes two extractions comparable (part of the embedding signature)."""
    spec = ",".join(f"{r}={labels[r]}" for r in ROLES if r in labels)
    return f"gliner:{name}|{spec}|{threshold:g}"


class TextExtractor(Protocol):
    """What the services need; ``Extractor`` is the real one, tests use a fake."""

    @property
    def signature(self) -> str: ...

    def extract(self, texts: Sequence[str]) -> list[Extraction]: ...


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class Extractor:
    """A GLiNER model with its labels, threshold and chunking."""

    def __init__(
        self,
        model: Any,
        *,
        name: str,
        labels: dict[str, str] | None = None,
        threshold: float = 0.5,
        batch_size: int = 8,
        window_words: int = 160,
        overlap_words: int = 20,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        self.model = model
        self.name = name
        self.labels = dict(labels or DEFAULT_LABELS)
        self.threshold = threshold
        self.batch_size = batch_size
        max_len = int(getattr(getattr(model, "config", None), "max_len", window_words) or window_words)
        # The model sees words (GLiNER's splitter cuts punctuation off, so a window of N whitespace
        # words is up to ~1.3 N model words): keep a margin under its max_len.
        self.window_words = max(8, min(window_words, int(max_len * 0.7)))
        self.overlap_words = min(overlap_words, self.window_words // 4)
        self._role_of = {label: role for role, label in self.labels.items()}

    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        labels: dict[str, str] | None = None,
        threshold: float = 0.5,
        batch_size: int = 8,
        window_words: int = 160,
    ) -> Extractor:
        """Load a GLiNER checkpoint from a local folder or the Hugging Face hub (local cache only
        when ``HF_HUB_OFFLINE`` is set)."""
        from gliner import GLiNER  # heavy import: only when an extractor is configured

        name = str(name_or_path)
        local = Path(name).expanduser()
        try:
            if local.is_dir():
                model = GLiNER.from_pretrained(str(local.resolve()), local_files_only=True, map_location="cpu")
            else:
                model = GLiNER.from_pretrained(name, local_files_only=_offline(), map_location="cpu")
        except Exception as exc:  # the library raises many kinds (OSError, HFValidationError, KeyError…)
            raise ExtractorError(f"could not load GLiNER model {name!r}: {exc}") from exc
        model.eval()
        return cls(
            model, name=name, labels=labels, threshold=threshold, batch_size=batch_size, window_words=window_words
        )

    @property
    def signature(self) -> str:
        return signature_of(self.name, self.labels, self.threshold)

    def extract(self, texts: Sequence[str]) -> list[Extraction]:
        """One batched inference over every window of every text; spans mapped back to the text."""
        windows: list[tuple[int, int, int]] = []  # (text index, start, end)
        for i, text in enumerate(texts):
            windows.extend((i, s, e) for s, e in word_windows(text, self.window_words, self.overlap_words))
        found: list[dict[tuple[int, int, str], Span]] = [{} for _ in texts]
        if windows:
            chunks = [texts[i][s:e] for i, s, e in windows]
            predictions = self.model.inference(
                chunks, list(self.labels.values()), threshold=self.threshold, batch_size=self.batch_size
            )
            for (i, offset, _), entities in zip(windows, predictions, strict=True):
                for ent in entities:
                    role = self._role_of.get(ent["label"])
                    if role is None:
                        continue
                    start, end = offset + int(ent["start"]), offset + int(ent["end"])
                    span = Span(ent["label"], role, texts[i][start:end], start, end, float(ent["score"]))
                    key = (start, end, role)
                    if key not in found[i] or found[i][key].score < span.score:  # overlap of windows
                        found[i][key] = span
        results = []
        for spans_by_key in found:
            spans = tuple(sorted(spans_by_key.values(), key=lambda s: (s.start, s.end, s.role)))
            results.append(Extraction(compact_string(spans), spans))
        return results


def text_for_embedding(text: str, extraction: Extraction | None) -> str:
    """The compact string, or the (cleaned) text itself when extraction found nothing."""
    return extraction.compact if extraction is not None and extraction.compact else text


class ExtractingEncoder:
    """An ``Encoder`` that embeds the compact string of each text (or the text when nothing was found).

    Its ``name`` carries the extractor's signature, so cached vectors of raw text are never reused."""

    def __init__(self, inner: Encoder, extractor: TextExtractor) -> None:
        self.inner = inner
        self.extractor = extractor
        self.name = f"{inner.name}+{extractor.signature}"
        self.dim = inner.dim
        self.prefix = getattr(inner, "prefix", "")
        self.dtype = getattr(inner, "dtype", "float32")
        self.chunking = getattr(inner, "chunking", "none")

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        return self.encode_extracted(texts, self.extractor.extract(list(texts)), show_progress=show_progress)

    def encode_extracted(
        self, texts: Sequence[str], extractions: Sequence[Extraction], *, show_progress: bool = False
    ) -> np.ndarray:
        compact = [text_for_embedding(t, e) for t, e in zip(texts, extractions, strict=True)]
        return self.inner.encode(compact, show_progress=show_progress)
