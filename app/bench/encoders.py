"""``jobclass bench-encoders``: the encoder backends side by side (speed, fidelity, accuracy) in one run.

Each variant is the service's own embedder (``app.encoders.load_encoder``: same prefix, chunking, batch size)
with one backend/dtype/quantisation; the exports are made (once) in the state folder's export folder, the
first load's seconds are reported apart. Speed: texts/s on job titles and on postings, rounds interleaved
across variants (a shared machine drifts: the median of rounds, and ratios within this run, count). Fidelity:
the lowest cosine of each variant's vectors to torch float32's. Accuracy: a logistic regression on banking77
(trained on a subset of train, scored on val) and a cosine kNN vote on the job titles (corpus: a subset of
train, queries: the timed val titles). Nothing is read from or written to the embedding cache.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.settings import PROJECT_ROOT, Settings

Echo = Callable[[str], None]
DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
REFERENCE = "torch-float32"
BASELINE = "torch-bfloat16"


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str
    dtype: str
    quantization: str = "none"


VARIANTS: tuple[Variant, ...] = (
    Variant(REFERENCE, "torch", "float32"),
    Variant(BASELINE, "torch", "bfloat16"),
    Variant("openvino-bf16", "openvino", "bfloat16"),
    Variant("openvino-int8", "openvino", "bfloat16", "int8"),
    Variant("onnx-int8", "onnx", "float32", "int8"),
)


@dataclass
class EncoderBenchConfig:
    datasets: Path = DATASETS
    n_titles: int = 2000
    n_postings: int = 500
    rounds: int = 5
    lr_train: int = 3000  # banking77 train rows the LR is fitted on
    knn_corpus: int = 6000  # job-title train rows the kNN votes over
    knn_k: int = 10
    accuracy: bool = True  # False: speed and cosine only (the accuracy part embeds ~10k more texts per variant)
    variants: tuple[str, ...] = field(default_factory=lambda: tuple(v.name for v in VARIANTS))
    seed: int = 20240601


def _subset(texts: list[str], labels: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    if n >= len(texts):
        return texts, labels
    pick = np.random.default_rng(seed).choice(len(texts), n, replace=False)
    return [texts[i] for i in pick], [labels[i] for i in pick]


def _load(cfg: EncoderBenchConfig, clean_max_chars: int) -> dict[str, tuple[list[str], list[str]]]:
    from app.services.dataset import load_split

    def split(name: str, part: str, n: int | None = None) -> tuple[list[str], list[str]]:
        s = load_split(cfg.datasets / name / f"{part}.csv", clean_max_chars)
        return _subset(s.texts, s.labels, n if n is not None else len(s.texts), cfg.seed)

    titles = split("jobbert_titles_isco", "val", cfg.n_titles)
    postings = split("en_google_job_skills", "val", cfg.n_postings)
    return {
        "titles": titles,
        "postings": postings,
        "titles_corpus": split("jobbert_titles_isco", "train", cfg.knn_corpus),
        "banking_train": split("banking77", "train", cfg.lr_train),
        "banking_val": split("banking77", "val"),
    }


def lr_accuracy(x_train: np.ndarray, y_train: Sequence[str], x_test: np.ndarray, y_test: Sequence[str]) -> float:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(x_train, list(y_train))
    return float(np.mean(model.predict(x_test) == np.asarray(y_test)))


def knn_accuracy(
    corpus: np.ndarray, corpus_labels: Sequence[str], queries: np.ndarray, labels: Sequence[str], k: int
) -> float:
    """Cosine kNN (unit vectors), votes weighted by similarity."""
    names = sorted(set(corpus_labels))
    index = {n: i for i, n in enumerate(names)}
    y = np.array([index[lab] for lab in corpus_labels])
    sims = queries @ corpus.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    votes = np.zeros((len(queries), len(names)))
    for row in range(len(queries)):
        np.add.at(votes[row], y[top[row]], sims[row, top[row]])
    predicted = [names[i] for i in votes.argmax(axis=1)]
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def _machine() -> dict[str, Any]:
    import torch

    from indexing.backends import runtime_versions

    return {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_at_start": list(os.getloadavg()),
        "versions": runtime_versions("openvino") | runtime_versions("onnx"),
    }


def run_encoder_bench(settings: Settings, cfg: EncoderBenchConfig, echo: Echo) -> dict[str, Any]:
    from app.encoders import load_encoder
    from indexing.backends import backend_label, missing_runtime

    machine = _machine()  # the load average before the run
    data = _load(cfg, settings.clean_max_chars)
    chosen = [v for v in VARIANTS if v.name in cfg.variants]
    encoders: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    loads: dict[str, float] = {}
    for v in chosen:
        missing = missing_runtime(v.backend)
        if missing is not None:
            skipped[v.name] = f"{missing} is not installed"
            echo(f"{v.name}: skipped ({skipped[v.name]})")
            continue
        variant_settings = settings.model_copy(
            update={
                "embedding_backend": v.backend,
                "embedding_dtype": v.dtype,
                "embedding_quantization": v.quantization,
            }
        )
        start = time.perf_counter()
        encoder = load_encoder(variant_settings)
        loads[v.name] = time.perf_counter() - start
        if encoder.backend_label != backend_label(v.backend, v.quantization):
            skipped[v.name] = f"fell back to {encoder.backend_label} (see the log)"
            echo(f"{v.name}: skipped ({skipped[v.name]})")
            continue
        encoders[v.name] = encoder
        echo(f"{v.name}: loaded in {loads[v.name]:.1f}s")

    # speed: interleaved rounds, the median counts; the last round's vectors are kept
    timings: dict[str, dict[str, list[float]]] = {n: {"titles": [], "postings": []} for n in encoders}
    vectors: dict[str, dict[str, np.ndarray]] = {n: {} for n in encoders}
    for enc in encoders.values():  # warm-up (first calls compile / allocate)
        enc.encode(data["titles"][0][:64])
    for r in range(cfg.rounds):
        for name, enc in encoders.items():
            for part in ("titles", "postings"):
                texts = data[part][0]
                start = time.perf_counter()
                vectors[name][part] = enc.encode(texts)
                timings[name][part].append(len(texts) / (time.perf_counter() - start))
        echo(f"round {r + 1}/{cfg.rounds} done")

    rows: dict[str, dict[str, Any]] = {}
    for name, enc in encoders.items():
        ref = vectors.get(REFERENCE, vectors[name])
        cosine = min(float(np.min(np.sum(vectors[name][p] * ref[p], axis=1))) for p in ("titles", "postings"))
        rows[name] = {
            "backend": enc.backend_label,
            "dtype": enc.dtype,
            "load_s": round(loads[name], 2),
            "titles_per_s": statistics.median(timings[name]["titles"]),
            "postings_per_s": statistics.median(timings[name]["postings"]),
            "rounds": timings[name],
            "min_cosine_to_fp32": cosine,
        }
        if cfg.accuracy:
            echo(f"{name}: accuracy")
            b_train = enc.encode(data["banking_train"][0])
            b_val = enc.encode(data["banking_val"][0])
            corpus = enc.encode(data["titles_corpus"][0])
            rows[name]["lr_acc_banking77"] = lr_accuracy(
                b_train, data["banking_train"][1], b_val, data["banking_val"][1]
            )
            rows[name]["knn_acc_titles"] = knn_accuracy(
                corpus, data["titles_corpus"][1], vectors[name]["titles"], data["titles"][1], cfg.knn_k
            )
    base = rows.get(BASELINE)
    for row in rows.values():
        if base is not None:
            row["x_titles"] = row["titles_per_s"] / base["titles_per_s"]
            row["x_postings"] = row["postings_per_s"] / base["postings_per_s"]
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "model": settings.embedding_model,
        "chunking": settings.embedding_chunking,
        "batch_size": settings.embedding_batch_size,
        "variants": rows,
        "skipped": skipped,
    }


def encoders_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    cfg = result["config"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m["versions"].items()))
    lines = [
        "| backend | titles/s | postings/s | × torch bf16 (titles / postings) | min cosine to fp32 "
        "| LR acc banking77 | kNN acc titles | first load s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["variants"].items():
        ratio = f"{r['x_titles']:.2f} / {r['x_postings']:.2f}" if "x_titles" in r else "–"
        lines.append(
            f"| {name} | {r['titles_per_s']:.0f} | {r['postings_per_s']:.1f} | {ratio} | "
            f"{r['min_cosine_to_fp32']:.5f} | {_acc(r, 'lr_acc_banking77')} | {_acc(r, 'knn_acc_titles')} | "
            f"{r['load_s']:.1f} |"
        )
    for name, why in result["skipped"].items():
        lines.append(f"| {name} | – | – | – | – | – | – | skipped: {why} |")
    head = [
        "# Encoder backends (`jobclass bench-encoders`)",
        "",
        f"Run {result['when']} on {m['cpus']} CPUs ({m['processor']}), {m['torch_threads']} torch threads, load "
        f"average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}; {versions}. Model "
        f"{result['model']}, chunking {result['chunking']}, batch {result['batch_size']}; texts/s is the median "
        f"of {cfg['rounds']} interleaved rounds on {cfg['n_titles']} job titles and {cfg['n_postings']} postings; "
        f"LR trained on {cfg['lr_train']} banking77 train rows, scored on val; kNN (k={cfg['knn_k']}) over "
        f"{cfg['knn_corpus']} job-title train rows, queried with the timed titles. Ratios are side by side "
        f"in one run.",
        "",
    ]
    return "\n".join([*head, *lines, ""])


def _acc(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f}" if key in row else "–"


def write_encoder_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoders.json").write_text(json.dumps(result, indent=2))
    (out / "encoders.md").write_text(encoders_markdown(result))
