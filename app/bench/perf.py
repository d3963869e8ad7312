"""``jobclass bench-perf``: speed of the embedder, the service and the vector index, side by side.

Every figure that the targets compare is a ratio of two measurements taken in the same run on the same
machine (a shared 2-core box is noisy; absolute numbers drift, ratios much less). Results go to
``OUT/metrics.json`` and ``OUT/report.md`` (``app.bench.markdown.write_perf_outputs``); docs/performance.md quotes them.

Sections (``--only`` picks some):
- ``embedding``: texts/s of raw ``SentenceTransformer.encode`` (float32) vs our embedder in float32,
  bfloat16 (forced, even where emulated) and int8 (dynamic quantization of the Linear layers), short
  (~60 words) and long (~250 words) ads, with cosine of each variant's vectors to float32;
- ``service``: ``POST /v1/classify/batch`` of 256 ads vs the same ads through encode + head;
- ``microbatch``: 16 concurrent clients sending single ``POST /v1/classify``, with and without micro-batching;
- ``knn``: upsert rate and query latency (p50/p99, with and without a payload filter) at 10k/100k/1M
  synthetic clustered 384-d vectors: qdrant-client local mode, exact numpy, the embedded Qdrant engine
  (HNSW), and at 100k recall@10 of scalar int8 and binary quantization vs none;
- ``memory``: RSS of a serving process (embedding model loaded) with 100k vectors indexed;
- ``signals``: one ~60-word ad classified the way the service serves it (hybrid dense + BM25 query, head,
  lexical model, vote) vs the two-signal path it replaced (dense query, head + vote), in adjacent pairs:
  the p50 ratio is what the lexical signal and hybrid retrieval cost per request.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import DATA_DIR, PROJECT_ROOT

Echo = Callable[[str], None]
SECTIONS = ("embedding", "service", "microbatch", "knn", "memory", "signals")
DIM = 384
N_LABELS = 20


@dataclass
class PerfConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    n_queries: int = 200
    local_max: int = 100_000  # qdrant-client local mode is measured up to this size
    local_queries_large: int = 20  # queries for local mode at 100k (≈0.2 s each)
    hnsw_max: int = 100_000  # the edge HNSW index is built up to this size (above: exact scan in the engine)
    n_short: int = 24
    n_long: int = 8
    rounds: int = 1  # embedding rounds per variant, interleaved; the best round counts
    service_batch: int = 256
    clients: int = 16
    requests_per_client: int = 2
    service_rounds: int = 6
    signal_rounds: int = 200  # single-ad classifications per path (served vs two-signal), interleaved
    train_per_label: int = 6
    sections: tuple[str, ...] = SECTIONS
    seed: int = 20240601


# ---- helpers -------------------------------------------------------------------------------
def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def _words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def sample_texts(n: int, words: int, path: Path = DATA_DIR / "vacancies.csv") -> list[str]:
    """``n`` ads cut to ``words`` words; short ads are extended with the next ones (long texts)."""
    with path.open(newline="", encoding="utf-8") as handle:
        texts = [r["text"] for r in csv.DictReader(handle)]
    out: list[str] = []
    i = 0
    while len(out) < n:
        text = texts[i % len(texts)]
        j = i + 1
        while len(text.split()) < words:
            text += "\n" + texts[j % len(texts)]
            j += 1
        out.append(_words(text, words))
        i += 7  # spread over categories
    return out


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


# ---- embedding -----------------------------------------------------------------------------
Embed = Callable[[list[str]], np.ndarray]


def _embedders() -> tuple[dict[str, Embed], dict[str, str]]:
    """The embedding variants by name, and the variant each one's vectors are compared with."""
    from sentence_transformers import SentenceTransformer

    from indexing.embed import DEFAULT_MODEL, SentenceEmbedder, resolve_model_path

    raw = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")

    def ours(dtype: str, chunking: str) -> SentenceEmbedder:
        return SentenceEmbedder(DEFAULT_MODEL, dtype=dtype, chunking=chunking, bf16_fallback=False)  # type: ignore[arg-type]

    variants: dict[str, Embed] = {
        "raw_st_float32": lambda t: np.asarray(raw.encode(t, batch_size=32, normalize_embeddings=True)),
        "ours_float32": ours("float32", "none").encode,
        "ours_bfloat16": ours("bfloat16", "none").encode,
        "ours_int8": ours("int8", "none").encode,
        "ours_float32_sentences": ours("float32", "sentences").encode,
        # the service's default where bf16 is native: bfloat16 and sentence chunks
        "ours_bfloat16_sentences": ours("bfloat16", "sentences").encode,
    }
    reference = {k: "raw_st_float32" for k in variants}
    # chunked vectors are a different embedding (mean of chunks): compared with float32 chunked
    reference["ours_float32_sentences"] = reference["ours_bfloat16_sentences"] = "ours_float32_sentences"
    return variants, reference


def _embedding_set(
    set_name: str, texts: list[str], variants: dict[str, Embed], reference: dict[str, str], rounds: int, echo: Echo
) -> dict[str, Any]:
    """Every variant on one set of texts, interleaved for ``rounds`` rounds (the best counts): speed, and
    cosine of its vectors to the reference variant's."""
    for fn in variants.values():
        fn(texts[:4])  # warm-up
    best: dict[str, float] = {k: float("inf") for k in variants}
    vectors: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            vectors[name] = fn(texts)
            best[name] = min(best[name], time.perf_counter() - t0)
            echo(f"  embedding {set_name} round {r + 1} {name}: {len(texts) / best[name]:.1f} texts/s")
    rows = {}
    base = len(texts) / best["raw_st_float32"]
    for name in variants:
        cos = np.sum(vectors[name] * vectors[reference[name]], axis=1)
        rows[name] = {
            "texts_per_s": len(texts) / best[name],
            "speed_vs_raw_float32": (len(texts) / best[name]) / base,
            "cosine_reference": reference[name],
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
        }
    return {"n_texts": len(texts), "variants": rows}


def bench_embedding(cfg: PerfConfig, echo: Echo) -> dict[str, Any]:
    import torch

    from indexing.embed import effective_dtype, native_bf16

    sets = {"short_60w": sample_texts(cfg.n_short, 60), "long_250w": sample_texts(cfg.n_long, 250)}
    variants, reference = _embedders()
    out: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
        "default_dtype_here": effective_dtype("bfloat16"),
        "torch_threads": torch.get_num_threads(),
        "sets": {},
    }
    for set_name, texts in sets.items():
        out["sets"][set_name] = _embedding_set(set_name, texts, variants, reference, cfg.rounds, echo)
    return out


# ---- service and micro-batching ------------------------------------------------------------
@dataclass
class _Service:
    runtime: Any
    runtime_off: Any
    tmp: Path
    encoder: Any
    close: Callable[[], None] = field(default=lambda: None)


def _training_subset(per_label_max: int, path: Path) -> tuple[Path, int]:
    """The first ``per_label_max`` sample ads of each label written to ``path`` (id,text,label); their count."""
    with (DATA_DIR / "vacancies.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    per_label: dict[str, int] = {}
    subset = []
    for r in rows:
        if per_label.get(r["label"], 0) < per_label_max:
            per_label[r["label"]] = per_label.get(r["label"], 0) + 1
            subset.append(r)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("id", "text", "label")} for r in subset)
    return path, len(subset)


def _build_service(cfg: PerfConfig, echo: Echo) -> _Service:
    from app.db import migrate
    from app.encoders import load_encoder
    from app.runtime import Runtime
    from app.services.index import reindex
    from app.services.training import train
    from app.services.vacancies import ingest_csv
    from app.settings import Settings
    from indexing.store import connect

    tmp = Path(tempfile.mkdtemp(prefix="jobclass-perf-"))
    settings = Settings(
        _env_file=None,
        state_dir=tmp,
        qdrant_backend="edge",
        embedding_cache=False,
        microbatch=True,
    )
    migrate(settings.db_url)
    path, n_subset = _training_subset(cfg.train_per_label, tmp / "train.csv")
    encoder = load_encoder(settings)
    client = connect(path=settings.qdrant_location, backend="edge")
    runtime = Runtime(settings, encoder=encoder, qdrant=client)
    t0 = time.perf_counter()
    with runtime.sessions() as session:
        ingest_csv(session, path, runtime.taxonomy, source="perf")
        train(runtime, session)
        reindex(runtime, session)
    echo(f"  service: trained and indexed {n_subset} ads in {time.perf_counter() - t0:.0f}s")
    off = Runtime(
        settings.model_copy(update={"microbatch": False}), encoder=encoder, qdrant=client, engine=runtime.engine
    )
    off.load_active_model()

    def close() -> None:
        runtime.close()
        off.jobs.shutdown()

    return _Service(runtime, off, tmp, encoder, close)


def _paired_rounds(
    cfg: PerfConfig, svc: _Service, body: dict[str, Any], cleaned: list[str], echo: Echo
) -> tuple[list[float], list[float]]:
    """Seconds of ``POST /v1/classify/batch`` and of encode + head, round by round, in adjacent pairs
    whose order alternates."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    runtime = svc.runtime
    head = runtime.model.classifier

    def raw() -> float:
        t0 = time.perf_counter()
        head.head_proba(svc.encoder.encode(cleaned))
        return time.perf_counter() - t0

    service_times, raw_times = [], []
    with TestClient(create_app(runtime.settings, runtime)) as client:

        def service() -> float:
            t0 = time.perf_counter()
            response = client.post("/v1/classify/batch", json=body)
            elapsed = time.perf_counter() - t0
            assert response.status_code == 200, response.text
            return elapsed

        client.post("/v1/classify/batch", json={"items": body["items"][:8]})  # warm-up
        for r in range(cfg.service_rounds):
            if r % 2 == 0:
                s_, r_ = service(), raw()
            else:
                r_, s_ = raw(), service()
            service_times.append(s_)
            raw_times.append(r_)
            echo(f"  service round {r + 1}: batch {s_:.2f}s, encode+head {r_:.2f}s ({100 * (s_ / r_ - 1):+.1f}%)")
    return service_times, raw_times


def _service_steps(svc: _Service, items: list[Any], cleaned: list[str]) -> dict[str, float]:
    """The service's own steps around the model, each timed alone (best of 3): cleaning, kNN search,
    fusion, storing the predictions."""
    from app.services.classification import classify, clean_items, store_predictions
    from models.classifier import Neighbour

    runtime = svc.runtime
    head = runtime.model.classifier
    vectors = svc.encoder.encode(cleaned)
    k = max(head.params.k, 5)

    def steps() -> dict[str, float]:
        out: dict[str, float] = {}
        t0 = time.perf_counter()
        clean_items(runtime, items, batch=True)
        out["clean_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        hits = runtime.store.search_many(vectors, k)
        out["knn_search_s"] = time.perf_counter() - t0
        neighbours = [[Neighbour(h.label, h.score, h.labelled_at) for h in row] for row in hits]
        t0 = time.perf_counter()
        head.predict_proba(vectors, neighbours)
        out["fusion_s"] = time.perf_counter() - t0
        return out

    parts = [steps() for _ in range(3)]
    breakdown = {key: min(p[key] for p in parts) for key in parts[0]}
    results = classify(runtime, None, items, batch=True)
    store_times = []
    for _ in range(3):
        with runtime.sessions() as session:
            t0 = time.perf_counter()
            store_predictions(session, results)
            store_times.append(time.perf_counter() - t0)
    breakdown["store_predictions_s"] = min(store_times)
    return breakdown


def bench_service(cfg: PerfConfig, svc: _Service, echo: Echo) -> dict[str, Any]:
    """``POST /v1/classify/batch`` vs the same embedder's encode + head on the same texts, in adjacent
    pairs (the order alternates every round), so machine noise hits both sides alike. The overhead is
    the median of the per-round ratios; the service's own steps are timed apart as a breakdown."""
    from app.services.classification import ClassifyItem, clean_items

    texts = sample_texts(cfg.service_batch, 60)
    body = {"items": [{"id": str(i), "text": t} for i, t in enumerate(texts)]}
    items = [ClassifyItem(t, str(i)) for i, t in enumerate(texts)]
    cleaned = clean_items(svc.runtime, items)
    service_times, raw_times = _paired_rounds(cfg, svc, body, cleaned, echo)
    ratios = [s_ / r_ for s_, r_ in zip(service_times, raw_times, strict=True)]
    breakdown = _service_steps(svc, items, cleaned)
    median_ratio = float(np.median(ratios))
    return {
        "n_texts": len(texts),
        "rounds": cfg.service_rounds,
        "service_batch_s": float(np.median(service_times)),
        "encode_plus_head_s": float(np.median(raw_times)),
        "overhead_pct": 100.0 * (median_ratio - 1.0),
        "overhead_pct_rounds": [100.0 * (x - 1.0) for x in ratios],
        "breakdown": breakdown,
        "breakdown_pct": {key: 100.0 * v / float(np.median(raw_times)) for key, v in breakdown.items()},
        "what": "POST /v1/classify/batch (clean, embed, kNN on the edge index, fusion, 256 prediction rows "
        "in SQLite, JSON) vs the same embedder's encode + the head on the cleaned texts; rounds in adjacent "
        "pairs, order alternating; overhead = median of the per-round ratios",
    }


def bench_signals(cfg: PerfConfig, svc: _Service, echo: Echo) -> dict[str, Any]:
    """One ~60-word ad, classified ``signal_rounds`` times each way in adjacent pairs (order alternating):
    the served path (``app.services.classification.classify``: clean, embed, BM25 query vector, one hybrid
    query, head + lexical + vote) vs the two-signal path before the lexical signal (clean, embed, a dense
    query, head + vote with the same k and temperatures). Nothing is stored on either side, and both embed
    through the same encoder without micro-batching (whose wait for company would fall on one side only)."""
    from dataclasses import replace

    from app.services.classification import ClassifyItem, classify, clean_items
    from models.classifier import FusedClassifier, Neighbour
    from models.training import MAX_K

    runtime = svc.runtime_off
    served = runtime.model.classifier
    dense_only = FusedClassifier(served.labels, served.head, replace(served.params, beta=0.0), served.variant)
    item = ClassifyItem(sample_texts(1, 60)[0], "0")

    def hybrid() -> float:
        t0 = time.perf_counter()
        classify(runtime, None, [item])
        return time.perf_counter() - t0

    def dense() -> float:
        t0 = time.perf_counter()
        vectors = runtime.encoder.encode(clean_items(runtime, [item]))
        hits = runtime.store.search_many(vectors, max(MAX_K, served.params.k))
        neighbours = [[Neighbour(h.label, h.score, h.labelled_at) for h in row] for row in hits]
        dense_only.predict_proba(vectors, neighbours)
        return time.perf_counter() - t0

    hybrid(), dense()  # warm-up
    served_s, before_s = [], []
    for r in range(cfg.signal_rounds):
        if r % 2 == 0:
            served_s.append(hybrid())
            before_s.append(dense())
        else:
            before_s.append(dense())
            served_s.append(hybrid())
    p_served, p_before = percentiles(served_s), percentiles(before_s)
    ratio = p_served["p50_ms"] / p_before["p50_ms"]
    echo(f"  signals: served p50 {p_served['p50_ms']:.1f} ms vs two-signal {p_before['p50_ms']:.1f} ms ({ratio:.2f}x)")
    return {
        "rounds": cfg.signal_rounds,
        "words": len(item.text.split()),
        "served": p_served,
        "two_signal": p_before,
        "p50_ratio": ratio,
        "what": "one ad per request: served (hybrid dense + BM25 query, head + lexical + vote) vs the two-signal "
        "path it replaced (dense query, head + vote); adjacent pairs, order alternating",
    }


def bench_microbatch(cfg: PerfConfig, svc: _Service, echo: Echo) -> dict[str, Any]:
    """Concurrent single requests with and without micro-batching, on ad-length and title-length texts:
    grouping pays where a call's fixed cost dominates (short texts); a 60-word ad already fills the cores."""
    sets = {
        "ads_60w": sample_texts(cfg.clients * cfg.requests_per_client, 60),
        "titles_6w": sample_texts(cfg.clients * cfg.requests_per_client, 6),
    }
    out: dict[str, Any] = {"clients": cfg.clients, "requests": cfg.clients * cfg.requests_per_client, "sets": {}}
    for name, texts in sets.items():
        out["sets"][name] = _microbatch_runs(cfg, svc, texts, name, echo)
    return out


def _concurrent_run(cfg: PerfConfig, runtime: Any, texts: list[str]) -> dict[str, Any]:
    """``cfg.clients`` threads sending single ``POST /v1/classify`` requests for ``texts`` to one app:
    wall time, CPU time per request, latency percentiles (and the micro-batcher's calls and largest group)."""
    from fastapi.testclient import TestClient

    from app.batching import MicroBatchingEncoder
    from app.main import create_app

    batcher = runtime.encoder if isinstance(runtime.encoder, MicroBatchingEncoder) else None
    latencies: list[float] = []
    lock = threading.Lock()
    with TestClient(create_app(runtime.settings, runtime)) as client:
        client.post("/v1/classify", json={"text": texts[0]})

        def worker(k: int) -> None:
            for text in texts[k :: cfg.clients]:
                t0 = time.perf_counter()
                response = client.post("/v1/classify", json={"text": text})
                assert response.status_code == 200, response.text
                with lock:
                    latencies.append(time.perf_counter() - t0)

        calls_before = batcher.stats.calls if batcher is not None else 0
        if batcher is not None:
            batcher.stats.largest = 0
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(cfg.clients) as pool:
            list(pool.map(worker, range(cfg.clients)))
        wall = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
    row: dict[str, Any] = {
        "wall_s": wall,
        "requests_per_s": len(texts) / wall,
        "cpu_s_per_request": cpu / len(texts),
        **percentiles(latencies),
    }
    if batcher is not None:
        row["model_calls"] = batcher.stats.calls - calls_before
        row["largest_group"] = batcher.stats.largest
    return row


def _microbatch_runs(cfg: PerfConfig, svc: _Service, texts: list[str], name: str, echo: Echo) -> dict[str, Any]:
    """Without, with and again without micro-batching; the speed-up against the faster run without."""
    out: dict[str, Any] = {}
    for mode, runtime in (("without", svc.runtime_off), ("with", svc.runtime), ("without_again", svc.runtime_off)):
        out[mode] = _concurrent_run(cfg, runtime, texts)
        echo(f"  micro-batching {name} {mode}: {out[mode]['requests_per_s']:.2f} req/s")
    slow = min(out["without"]["requests_per_s"], out["without_again"]["requests_per_s"])
    fast = max(out["without"]["requests_per_s"], out["without_again"]["requests_per_s"])
    out["speedup"] = out["with"]["requests_per_s"] / fast
    out["speedup_vs_slower_run"] = out["with"]["requests_per_s"] / slow
    cpu_without = min(out["without"]["cpu_s_per_request"], out["without_again"]["cpu_s_per_request"])
    out["cpu_ratio"] = cpu_without / out["with"]["cpu_s_per_request"]
    return out


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its threads: on a loaded machine, where many
    threads win a larger share of the cores than one, CPU time per request is the fair capacity measure."""
    t = os.times()
    return t.user + t.system


# ---- kNN -----------------------------------------------------------------------------------
def clustered(
    n: int, rng: np.random.Generator, centres: np.ndarray, spread: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors around random centres (cluster = index into centres)."""
    cluster = rng.integers(0, len(centres), n)
    x = centres[cluster] + (spread / np.sqrt(DIM)) * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), cluster


def _points(x: np.ndarray, cluster: np.ndarray, start: int) -> list[Any]:
    from indexing.store import VacancyPoint

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        VacancyPoint(
            vacancy_id=f"p{start + i}",
            vector=x[i],
            label=f"label-{int(cluster[i]) % N_LABELS}",
            source="synthetic",
            created_at=t0 + timedelta(minutes=start + i),
        )
        for i in range(len(x))
    ]


def _load(store: Any, x: np.ndarray, cluster: np.ndarray, batch: int = 2000) -> float:
    name = store.create_version(DIM)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        store.upsert(_points(x[i : i + batch], cluster[i : i + batch], i), collection=name)
    elapsed = time.perf_counter() - t0
    store.swap_alias(name)
    return elapsed


def _load_slim(client: Any, store: Any, x: np.ndarray, cluster: np.ndarray, batch: int = 5000) -> float:
    name = store.create_version(DIM)
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        ids = list(range(i + 1, i + 1 + len(x[i : i + batch])))
        payloads = [
            {"vacancy_id": f"p{j - 1}", "label": f"label-{int(c) % N_LABELS}"}
            for j, c in zip(ids, cluster[i : i + batch], strict=True)
        ]
        client.upsert_arrays(name, ids, x[i : i + batch], payloads)
    elapsed = time.perf_counter() - t0
    store.swap_alias(name)
    return elapsed


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 200_000) -> np.ndarray:
    scores = np.concatenate([q @ x[i : i + chunk].T for i in range(0, len(x), chunk)], axis=1)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, 1)


def _numpy_latency(x: np.ndarray, q: np.ndarray, mask_idx: np.ndarray | None, k: int = 10) -> dict[str, float]:
    times = []
    sub = x if mask_idx is None else None
    for v in q:
        t0 = time.perf_counter()
        if sub is not None:
            s = sub @ v
            idx = np.argpartition(-s, k)[:k]
        else:
            assert mask_idx is not None
            s = x[mask_idx] @ v
            idx = mask_idx[np.argpartition(-s, k)[:k]]
        idx[np.argsort(-s[:k] if sub is None else -s[idx])]  # order the k results, as an index would
        times.append(time.perf_counter() - t0)
    return percentiles(times)


def _store_latency(store: Any, q: np.ndarray, flt: Any = None, k: int = 10) -> dict[str, float]:
    times = []
    for v in q:
        t0 = time.perf_counter()
        store.search(v, k, flt)
        times.append(time.perf_counter() - t0)
    return percentiles(times)


def _recall(found: Sequence[Sequence[str]], truth: np.ndarray) -> float:
    hits = [len({f"p{j}" for j in row} & set(f)) / len(row) for f, row in zip(found, truth, strict=True)]
    return float(np.mean(hits))


@dataclass
class _KnnCase:
    """One index size of the kNN section: the points, their clusters, the queries and the exact top 10."""

    n: int
    x: np.ndarray
    cluster: np.ndarray
    qx: np.ndarray
    truth: np.ndarray
    flt: Any


def _knn_numpy(case: _KnnCase) -> dict[str, Any]:
    mask_idx = np.flatnonzero(case.cluster % N_LABELS == 3)
    return {
        "upsert_per_s": None,
        "search": _numpy_latency(case.x, case.qx, None),
        "search_filtered": _numpy_latency(case.x, case.qx, mask_idx),
        "recall_at_10": 1.0,
    }


def _knn_edge(cfg: PerfConfig, case: _KnnCase, echo: Echo) -> dict[str, Any]:
    """The embedded Qdrant engine: upsert (full payloads up to ``local_max``), HNSW build up to ``hnsw_max``,
    latency, recall (and at 100k the quantization table, under ``edge_quantization``)."""
    from indexing.edge_store import EdgeClient
    from indexing.store import VectorStore

    n, x, cluster = case.n, case.x, case.cluster
    client = EdgeClient(tempfile.mkdtemp(prefix="jobclass-perf-edge-"), background_optimize=False)
    store = VectorStore(client, alias="bench")
    if n <= cfg.local_max:
        load_s, payload = _load(store, x, cluster), "full (VectorStore.upsert)"
    else:
        load_s = _load_slim(client, store, x, cluster)
        payload = "vacancy_id + label only (EdgeClient.upsert_arrays), to fit the run in minutes"
    edge: dict[str, Any] = {"upsert_per_s": n / load_s, "upsert_s": load_s, "payload": payload}
    if n <= cfg.hnsw_max:
        t0 = time.perf_counter()
        client.optimize("bench")
        edge["hnsw_build_s"] = time.perf_counter() - t0
        edge["index"] = "hnsw m=16 ef_construct=100"
    else:
        edge["index"] = "none (HNSW build skipped at this size; exact scan inside the engine)"
    edge["search"] = _store_latency(store, case.qx)
    edge["search_filtered"] = _store_latency(store, case.qx, case.flt)
    found = [[h.vacancy_id for h in hits] for hits in store.search_many(case.qx, 10)]
    edge["recall_at_10"] = _recall(found, case.truth)
    edge["indexed_vectors"] = client.get_collection("bench").indexed_vectors_count
    echo(f"  knn {n}: edge {edge}")
    quantization = _quantization(cfg, x, cluster, case.qx, case.truth, echo) if n == 100_000 else None
    client.close()
    return {"edge": edge, **({"edge_quantization": quantization} if quantization is not None else {})}


def _knn_local(cfg: PerfConfig, case: _KnnCase, echo: Echo) -> dict[str, Any]:
    """qdrant-client local mode (brute force in Python), up to ``local_max`` points."""
    from qdrant_client import QdrantClient

    from indexing.store import VectorStore

    n = case.n
    if n > cfg.local_max:
        return {"skipped": f"brute force in Python: ≈{n // 100_000}× the 100k latency, minutes of upsert"}
    local = VectorStore(QdrantClient(":memory:"), alias="bench")
    load_s = _load(local, case.x, case.cluster)
    nq = cfg.n_queries if n < 100_000 else cfg.local_queries_large
    row = {
        "upsert_per_s": n / load_s,
        "upsert_s": load_s,
        "search": _store_latency(local, case.qx[:nq]),
        "search_filtered": _store_latency(local, case.qx[:nq], case.flt),
        "queries_measured": nq,
        "recall_at_10": 1.0,
    }
    local.client.close()
    echo(f"  knn {n}: local {row}")
    return row


def bench_knn(cfg: PerfConfig, echo: Echo) -> dict[str, Any]:
    from indexing.store import SearchFilter

    rng = np.random.default_rng(cfg.seed)
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    qx, _ = clustered(cfg.n_queries, rng, centres)
    flt = SearchFilter(labels=["label-3"])  # 1 label of 20: ≈5% of the points
    out: dict[str, Any] = {"sizes": {}, "dim": DIM, "queries": cfg.n_queries, "filter": "label = one of 20 (≈5%)"}
    for n in cfg.sizes:
        x, cluster = clustered(n, rng, centres)
        case = _KnnCase(n, x, cluster, qx, exact_topk(x, qx, 10), flt)
        row: dict[str, Any] = {"numpy_exact": _knn_numpy(case)}
        echo(f"  knn {n}: numpy p50 {row['numpy_exact']['search']['p50_ms']:.2f} ms")
        row.update(_knn_edge(cfg, case, echo))
        row["qdrant_local"] = _knn_local(cfg, case, echo)
        out["sizes"][str(n)] = row
        del x, cluster, case
    return out


def _quantization(
    cfg: PerfConfig, x: np.ndarray, cluster: np.ndarray, qx: np.ndarray, truth: np.ndarray, echo: Echo
) -> dict[str, Any]:
    """Recall@10 and latency at 100k on the edge HNSW index: no quantization, scalar int8, binary."""
    import qdrant_edge as qe
    from qdrant_client.http import models

    from indexing.edge_store import EdgeClient
    from indexing.store import VectorStore

    configs: dict[str, Any] = {
        "int8": qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True),
        "binary": qe.BinaryQuantizationConfig(always_ram=True),
    }
    searches = {
        "int8": {
            "no_rescore": models.QuantizationSearchParams(rescore=False),
            "rescore": models.QuantizationSearchParams(rescore=True, oversampling=2.0),
        },
        "binary": {
            "no_rescore": models.QuantizationSearchParams(rescore=False),
            "rescore_x3": models.QuantizationSearchParams(rescore=True, oversampling=3.0),
        },
    }
    out: dict[str, Any] = {}
    for name, qcfg in configs.items():
        tmp = tempfile.mkdtemp(prefix="jobclass-perf-q-")
        client = EdgeClient(tmp, quantization=qcfg, background_optimize=False)
        store = VectorStore(client, alias="q")
        _load(store, x, cluster)
        t0 = time.perf_counter()
        client.optimize("q")
        build = time.perf_counter() - t0
        for label, params in searches[name].items():
            out[f"{name}_{label}"] = {"build_s": build, **_quantized_search(client, qx, params, truth)}
            echo(f"  quantization {name} {label}: {out[f'{name}_{label}']}")
        client.close()
    return out


def _quantized_search(client: Any, qx: np.ndarray, params: Any, truth: np.ndarray) -> dict[str, Any]:
    """Recall@10 and latency of single queries with the given quantization search parameters."""
    from qdrant_client.http import models

    times, found = [], []
    for v in qx:
        request = models.QueryRequest(
            query=v.tolist(), limit=10, with_payload=True, params=models.SearchParams(quantization=params)
        )
        t1 = time.perf_counter()
        [resp] = client.query_batch_points("q", [request])
        times.append(time.perf_counter() - t1)
        found.append([str((p.payload or {}).get("vacancy_id")) for p in resp.points])
    return {"recall_at_10": _recall(found, truth), **percentiles(times)}


# ---- memory --------------------------------------------------------------------------------
def rss_probe(backend: str, n: int) -> dict[str, float]:
    """Run in a child process: RSS with the serving embedder loaded, then with ``n`` vectors indexed."""
    import gc

    from indexing.embed import DEFAULT_MODEL, SentenceEmbedder
    from indexing.store import VectorStore, connect

    base = rss_mb()
    embedder = SentenceEmbedder(DEFAULT_MODEL)
    embedder.encode(["warm-up text for the model"])
    with_model = rss_mb()
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((1000, DIM)).astype(np.float32)
    x, cluster = clustered(n, rng, centres)
    tmp = tempfile.mkdtemp(prefix="jobclass-perf-rss-")
    client = connect(path=tmp if backend == "edge" else ":memory:", backend=backend)  # type: ignore[arg-type]
    store = VectorStore(client, alias="m")
    _load(store, x, cluster)  # edge: no HNSW build here (the graph adds ≈ n·m·2·4 bytes ≈ 13 MB at 100k)
    q = x[:50]
    del x, cluster
    gc.collect()
    for v in q:
        store.search(v, 10)
    indexed = rss_mb()
    client.close()
    return {"python_mb": base, "with_model_mb": with_model, "with_index_mb": indexed, "index_mb": indexed - with_model}


def bench_memory(n: int, echo: Echo) -> dict[str, Any]:
    out: dict[str, Any] = {"vectors": n}
    for backend in ("edge", "local"):
        code = f"import json; from app.bench.perf import rss_probe; print(json.dumps(rss_probe({backend!r}, {n})))"
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=1800, check=False
        )
        if proc.returncode != 0:
            out[backend] = {"error": proc.stderr[-500:]}
        else:
            out[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
        echo(f"  memory {backend}: {out[backend]}")
    return out


# ---- run and report ------------------------------------------------------------------------
def run_perf(cfg: PerfConfig, echo: Echo = print) -> dict[str, Any]:
    import torch

    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_at_start": os.getloadavg(),
        },
        "config": asdict(cfg),
    }
    timings: dict[str, float] = {}
    if "embedding" in cfg.sections:
        t0 = time.perf_counter()
        result["embedding"] = bench_embedding(cfg, echo)
        timings["embedding"] = time.perf_counter() - t0
    if {"service", "microbatch", "signals"} & set(cfg.sections):
        t0 = time.perf_counter()
        svc = _build_service(cfg, echo)
        try:
            if "service" in cfg.sections:
                result["service"] = bench_service(cfg, svc, echo)
            if "microbatch" in cfg.sections:
                result["microbatch"] = bench_microbatch(cfg, svc, echo)
            if "signals" in cfg.sections:
                result["signals"] = bench_signals(cfg, svc, echo)
        finally:
            svc.close()
        timings["service+microbatch+signals"] = time.perf_counter() - t0
    if "knn" in cfg.sections:
        t0 = time.perf_counter()
        result["knn"] = bench_knn(cfg, echo)
        timings["knn"] = time.perf_counter() - t0
    if "memory" in cfg.sections:
        t0 = time.perf_counter()
        result["memory"] = bench_memory(100_000, echo)
        timings["memory"] = time.perf_counter() - t0
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    result["section_seconds"] = timings
    return result


def iter_sections(value: str | None) -> Iterator[str]:
    for part in (value or ",".join(SECTIONS)).split(","):
        part = part.strip()
        if part not in SECTIONS:
            raise ValueError(f"unknown section {part!r}; choose from {', '.join(SECTIONS)}")
        yield part
