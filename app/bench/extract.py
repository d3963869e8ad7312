"""``jobclass bench --extract``: raw text vs cleaned text vs extracted compact strings.

The same labelled ads are embedded three ways and the same classifiers (TF-IDF + LR, head, kNN,
fused) are fitted on each:

- ``raw``: the ad as it came (HTML, boilerplate, contact lines);
- ``cleaned``: ``indexing.clean.clean_text`` (what the service embeds without an extractor);
- ``extracted``: the GLiNER compact string ``title: …; skills: …; tasks: …`` of the cleaned text,
  or the cleaned text when nothing was found (what the service embeds with an extractor).

Accuracy is measured on a held-out split; throughput is the whole preparation + embedding of every
text (cleaning, extraction, encoding), in texts per second. It reuses the fitting and scoring
of ``app.bench.accuracy``; ``app.bench.markdown.extract_markdown`` writes its table.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.bench.accuracy import BenchConfig, Say, fit_all, indices, score
from app.bench.markdown import EXTRACT_REPORTED, extract_markdown
from indexing.cache import encode_cached
from indexing.clean import clean_text, scrub_names
from indexing.embed import Encoder
from indexing.extract import TextExtractor, text_for_embedding
from models.training import stratified_split

VARIANTS = ("raw", "cleaned", "extracted")
REPORTED = EXTRACT_REPORTED


@dataclass(frozen=True)
class Rows:
    ids: list[str]
    texts: list[str]  # raw
    labels: list[str]


def read_rows(path: Path) -> Rows:
    csv.field_size_limit(max(csv.field_size_limit(), 10_000_000))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"id", "text", "label"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with header id,text,label")
    return Rows([r["id"] for r in rows], [r["text"] for r in rows], [r["label"] for r in rows])


def prepare(
    variant: str, raw: list[str], extractor: TextExtractor | None, clean_max_chars: int
) -> tuple[list[str], dict[str, float]]:
    """The texts to embed for ``variant`` and the seconds each preparation stage took."""
    seconds: dict[str, float] = {}
    if variant == "raw":
        return list(raw), seconds
    t0 = time.perf_counter()
    cleaned = [clean_text(t, max_chars=clean_max_chars) for t in raw]
    seconds["clean"] = time.perf_counter() - t0
    if variant == "cleaned":
        return cleaned, seconds
    if extractor is None:
        raise ValueError("the extracted variant needs an extractor")
    t0 = time.perf_counter()
    extractions = extractor.extract(cleaned)
    seconds["extract"] = time.perf_counter() - t0
    texts = [text_for_embedding(scrub_names(t, e.persons), e) for t, e in zip(cleaned, extractions, strict=True)]
    seconds["n_fallback"] = float(sum(1 for e in extractions if not e.compact))
    return texts, seconds


@dataclass(frozen=True)
class _Pool:
    """The raw texts to fit on (train + val, split by ``tr_idx``/``va_idx``) and to test on, with their classes."""

    raw_pool: list[str]
    y_pool: np.ndarray
    raw_te: list[str]
    y_te: np.ndarray
    tr_idx: np.ndarray
    va_idx: np.ndarray


def _split(data: Path, test: Path | None, test_fraction: float, cfg: BenchConfig) -> tuple[_Pool, list[str]]:
    """DATA split into train/val/test (or train/val with TEST as test), stratified; and the labels."""
    rows = read_rows(data)
    labels = sorted(set(rows.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    y_all = indices(rows.labels, index)
    if test is None:
        rest_idx, te_idx = stratified_split(y_all, test_fraction, cfg.seed)
        raw_pool, y_pool = [rows.texts[i] for i in rest_idx], y_all[rest_idx]
        raw_te, y_te = [rows.texts[i] for i in te_idx], y_all[te_idx]
    else:
        test_rows = read_rows(test)
        raw_pool, y_pool = rows.texts, y_all
        raw_te, y_te = test_rows.texts, indices(test_rows.labels, index)
    tr_idx, va_idx = stratified_split(y_pool, cfg.val_fraction, cfg.seed)
    return _Pool(raw_pool, y_pool, raw_te, y_te, tr_idx, va_idx), labels


def _run_variant(
    variant: str,
    pool: _Pool,
    labels: list[str],
    encoder: Encoder,
    extractor: TextExtractor,
    cfg: BenchConfig,
    say: Say,
    clean_max_chars: int,
) -> dict[str, Any]:
    """Prepare and embed every text one way, fit every method on it and score it on the test texts."""
    texts, seconds = prepare(variant, pool.raw_pool + pool.raw_te, extractor, clean_max_chars)
    t0 = time.perf_counter()
    vectors = encode_cached(encoder, texts, None)  # no cache: the embedding time is part of the figure
    seconds["embed"] = time.perf_counter() - t0
    prep = sum(v for k, v in seconds.items() if k != "n_fallback")
    n_pool, tr_idx, va_idx = len(pool.raw_pool), pool.tr_idx, pool.va_idx
    x_pool, t_pool = vectors[:n_pool], texts[:n_pool]
    fitted = fit_all(
        x_pool[tr_idx],
        pool.y_pool[tr_idx],
        x_pool[va_idx],
        pool.y_pool[va_idx],
        [t_pool[i] for i in tr_idx],
        [t_pool[i] for i in va_idx],
        vectors[n_pool:],
        texts[n_pool:],
        labels,
        cfg,
        say,
    )
    scores = {m: score(fitted.probs[m], pool.y_te, labels) for m in REPORTED}
    return {
        "accuracy": {m: round(scores[m]["accuracy"], 4) for m in REPORTED},
        "macro_f1": {m: round(scores[m]["macro_f1"], 4) for m in REPORTED},
        "seconds": {k: round(v, 2) for k, v in seconds.items() if k != "n_fallback"},
        "texts_per_second": round(len(texts) / prep, 2) if prep > 0 else None,
        "extract_texts_per_second": (round(len(texts) / seconds["extract"], 2) if seconds.get("extract") else None),
        "n_texts": len(texts),
        "n_fallback_to_cleaned": int(seconds.get("n_fallback", 0)),
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "example": texts[-1][:300],
    }


def run_extract_bench(
    data: Path,
    encoder: Encoder,
    extractor: TextExtractor,
    cfg: BenchConfig,
    say: Say,
    *,
    test: Path | None = None,
    test_fraction: float = 0.25,
    clean_max_chars: int = 4000,
) -> dict[str, Any]:
    """Fit and score every method on each text variant of DATA (split into train/val/test, or
    tested on TEST when given); time the preparation and embedding of every text."""
    pool, labels = _split(data, test, test_fraction, cfg)
    say(
        f"[{cfg.name}] train {len(pool.tr_idx)}, val {len(pool.va_idx)}, test {len(pool.raw_te)}, {len(labels)} classes"
    )
    out: dict[str, Any] = {
        "dataset": cfg.name,
        "n_train": len(pool.tr_idx),
        "n_val": len(pool.va_idx),
        "n_test": len(pool.raw_te),
        "extractor": extractor.signature,
        "variants": {},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
    }
    for variant in VARIANTS:
        v = out["variants"][variant] = _run_variant(
            variant, pool, labels, encoder, extractor, cfg, say, clean_max_chars
        )
        say(
            f"  {variant:9s} fused {v['accuracy']['fused']:.4f}  head {v['accuracy']['head']:.4f}  "
            f"{v['texts_per_second']} texts/s"
        )
    return out


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "extract.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "extract.md").write_text(extract_markdown(result), encoding="utf-8")
