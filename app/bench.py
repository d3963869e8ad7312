"""`jobclass bench`: every method trained on the same data, scored side by side, in one run.

Methods: ``tfidf_lr`` (the classic baseline), ``head``, ``knn``, ``fused`` (production), the fusion
with each compressed head, and ``fused_tfidf`` (the fusion blended with the TF-IDF model, a hybrid
remedy for text the embedder handles poorly). All are fit on the training split, tuned on the
validation split (carved out of training when none is given), refit on train + validation, and scored
on the test split. The embedded texts go through the production cleaning; embeddings are cached on
disk keyed by (embedder signature, text hash), so re-runs only pay for the models.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.services.dataset import Split
from indexing.cache import EmbeddingCache, cache_key_model, encode_cached
from indexing.clean import clean_text
from indexing.embed import Encoder
from indexing.store import VacancyPoint, VectorStore, connect
from models.classifier import FusedClassifier, Neighbour
from models.compress import VARIANTS
from models.fusion import calibrate
from models.knn import knn_vote
from models.metrics import (
    confusion_matrix,
    coverage_at,
    expected_calibration_error,
    log_loss,
    macro_f1,
    plot_confusion,
    summary,
)
from models.training import (
    CROSSFIT_FOLDS,
    TrainReport,
    neighbour_arrays,
    refit_head,
    stratified_split,
    train_classifier,
)

log = logging.getLogger(__name__)
Say = Callable[[str], None]
TFIDF_CS: tuple[float, ...] = (3.0, 30.0)
LATENCY_QUERIES = 100
THROUGHPUT_TEXTS = 256


@dataclass
class BenchConfig:
    name: str
    abstain_threshold: float = 0.25
    seed: int = 20240601
    val_fraction: float = 0.1
    latency_queries: int = LATENCY_QUERIES
    timing: bool = True


@dataclass
class _Fitted:
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    classifier: FusedClassifier | None = None
    corpus: np.ndarray | None = None
    corpus_labels: list[str] = field(default_factory=list)


# ---- TF-IDF baseline --------------------------------------------------------------------------
def _tfidf_features(train_texts: Sequence[str]) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    word = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, max_features=100_000, dtype=np.float32)
    char = TfidfVectorizer(
        sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 5), min_df=2, max_features=100_000, dtype=np.float32
    )
    return FeatureUnion([("word", word), ("char", char)]).fit(train_texts)


class TfidfLR:
    """The classic baseline: word 1–2-grams + char 2–5-grams, TF-IDF, multinomial logistic regression."""

    def __init__(self, texts: Sequence[str], y: np.ndarray, n_classes: int) -> None:
        self.features = _tfidf_features(texts)
        self.x = self.features.transform(texts)
        self.y = y
        self.n_classes = n_classes
        self.model: Any = None

    def fit(self, c: float) -> TfidfLR:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=c, max_iter=1000, tol=1e-3).fit(self.x, self.y)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probs = np.zeros((len(texts), self.n_classes))
        probs[:, self.model.classes_] = self.model.predict_proba(self.features.transform(texts))
        return probs


# ---- the run ----------------------------------------------------------------------------------
def _indices(labels: Sequence[str], index: dict[str, int]) -> np.ndarray:
    return np.array([index.get(lab, -1) for lab in labels], dtype=np.int64)


def _neighbours(labels: Sequence[str], nb_labels: np.ndarray, nb_scores: np.ndarray) -> list[list[Neighbour]]:
    return [
        [Neighbour(labels[int(a)], float(b)) for a, b in zip(row_l, row_s, strict=True)]
        for row_l, row_s in zip(nb_labels, nb_scores, strict=True)
    ]


def _classifier(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    labels: list[str],
    cfg: BenchConfig,
    *,
    crossfit: int = CROSSFIT_FOLDS,
) -> tuple[FusedClassifier, TrainReport]:
    """Head, kNN and fusion fitted on the training split and scored on the validation split (with
    ``crossfit=0`` also early-stopped and tuned on it), not refit: the caller refits on both."""
    return train_classifier(
        x_tr,
        y_tr,
        labels,
        x_val=x_va,
        y_val=y_va,
        seed=cfg.seed,
        abstain_threshold=cfg.abstain_threshold,
        refit=False,
        crossfit=crossfit,
    )


def _fit_all(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    texts_tr: Sequence[str],
    texts_va: Sequence[str],
    x_te: np.ndarray,
    texts_te: Sequence[str],
    labels: list[str],
    cfg: BenchConfig,
    say: Say,
) -> _Fitted:
    n = len(labels)
    out = _Fitted()
    # TF-IDF + LR: C tuned on validation, refit on train + validation.
    t0 = time.perf_counter()
    best_c, best_score, p_tfidf_va = TFIDF_CS[0], -1.0, None
    baseline = TfidfLR(texts_tr, y_tr, n)  # features fitted once, C tuned on validation
    for c in TFIDF_CS:
        probs = baseline.fit(c).predict_proba(texts_va)
        score = float(np.mean(probs.argmax(1) == y_va)) + macro_f1(y_va, probs.argmax(1), n)
        if score > best_score:
            best_c, best_score, p_tfidf_va = c, score, probs
    assert p_tfidf_va is not None
    tfidf = TfidfLR(list(texts_tr) + list(texts_va), np.concatenate([y_tr, y_va]), n).fit(best_c)
    out.probs["tfidf_lr"] = tfidf.predict_proba(texts_te)
    out.params["tfidf_lr"] = {"C": best_c, "fit_seconds": round(time.perf_counter() - t0, 2)}
    say(f"  tfidf_lr fitted (C={best_c}) in {time.perf_counter() - t0:.1f}s")

    # Head + kNN + fusion: epochs and fusion cross-validated on the training split, scored on validation.
    t0 = time.perf_counter()
    clf_tr, report = _classifier(x_tr, y_tr, x_va, y_va, labels, cfg)
    params = clf_tr.params
    nb_l, nb_s = neighbour_arrays(x_va, x_tr, y_tr)
    p_fused_va = clf_tr.predict_proba(x_va, _neighbours(labels, nb_l, nb_s))
    # Hybrid: blend the fusion with TF-IDF, β tuned on validation.
    beta = max(
        (b / 10 for b in range(11)),
        key=lambda b: (
            float(np.mean((b * p_fused_va + (1 - b) * p_tfidf_va).argmax(1) == y_va))
            + macro_f1(y_va, (b * p_fused_va + (1 - b) * p_tfidf_va).argmax(1), n),
            b,
        ),
    )
    x_all = np.concatenate([x_tr, x_va])
    y_all = np.concatenate([y_tr, y_va])
    clf = refit_head(clf_tr, x_all, y_all, report.best_epoch)
    out.params["fusion"] = {**params.to_dict(), "best_epoch": report.best_epoch, "hybrid_beta": beta}
    out.params["fit_seconds"] = round(time.perf_counter() - t0, 2)
    say(f"  head/kNN/fusion fitted in {time.perf_counter() - t0:.1f}s: {params}")

    nb_l, nb_s = neighbour_arrays(x_te, x_all, y_all)
    neighbours = _neighbours(labels, nb_l, nb_s)
    out.probs["head"] = clf.head_proba(x_te)
    out.probs["knn"] = knn_vote(nb_l, nb_s, n, k=params.k, temperature=params.knn_temperature)
    for variant in VARIANTS:
        key = "fused" if variant == "fp32" else f"fused_{variant}"
        compressed = clf.with_variant(variant)
        out.probs[key] = compressed.predict_proba(x_te, neighbours)
        xt = torch.as_tensor(x_te, dtype=torch.float32)
        with torch.no_grad():
            compressed.module(xt[:256])  # warm-up
            t0 = time.perf_counter()
            for _ in range(5):
                compressed.module(xt)
            per_item_us = (time.perf_counter() - t0) / (5 * len(x_te)) * 1e6
        out.extra[key] = {
            "head_bytes": clf.variant_bytes()[variant],
            "head_latency_us_per_item": round(per_item_us, 3),
        }
    out.probs["fused_tfidf"] = calibrate(beta * out.probs["fused"] + (1 - beta) * out.probs["tfidf_lr"], 1.0)
    out.classifier, out.corpus = clf, x_all
    return out


def _score(probs: np.ndarray, y: np.ndarray, labels: list[str], threshold: float | None = None) -> dict[str, Any]:
    known = y >= 0  # test labels never seen in training count as errors
    pred = probs.argmax(1)
    scores = summary(probs[known], y[known], labels)
    scores["accuracy"] = float(np.mean(np.where(known, pred == y, False)))
    scores["n_unknown_label"] = int((~known).sum())
    if threshold is not None:
        scores["abstain"] = coverage_at(probs[known], y[known], threshold)
    scores["log_loss"] = log_loss(probs[known], y[known]) if known.any() else None
    scores["ece"] = expected_calibration_error(probs[known], y[known])
    return scores


def _timing(
    encoder: Encoder,
    clf: FusedClassifier,
    corpus: np.ndarray,
    corpus_labels: Sequence[str],
    texts: Sequence[str],
    cfg: BenchConfig,
) -> dict[str, Any]:
    """Throughput of the embedder and end-to-end latency of one classification through the
    production path: clean → embed → Qdrant (local mode) → fuse."""
    sample = list(texts[:THROUGHPUT_TEXTS])
    encoder.encode(sample[:8])  # warm-up
    t0 = time.perf_counter()
    encoder.encode(sample)
    embed_rate = len(sample) / (time.perf_counter() - t0)
    store = VectorStore(connect(None, ":memory:"), alias="bench")
    store.swap_alias(store.create_version(corpus.shape[1]))
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for start in range(0, len(corpus), 1024):
        store.upsert(
            VacancyPoint(f"c{i}", corpus[i], corpus_labels[i], "bench", now)
            for i in range(start, min(start + 1024, len(corpus)))
        )
    upsert_rate = len(corpus) / (time.perf_counter() - t0)
    k = max(clf.params.k, 5)
    latencies = []
    for text in list(texts)[: cfg.latency_queries]:
        t0 = time.perf_counter()
        vector = encoder.encode([clean_text(text)])
        hits = store.search(vector[0], k)
        clf.predict_proba(vector, [[Neighbour(h.label, h.score) for h in hits]])
        latencies.append((time.perf_counter() - t0) * 1000)
    store.client.close()
    return {
        "embed_texts_per_s": round(embed_rate, 1),
        "classify_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "classify_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "index_upsert_points_per_s": round(upsert_rate, 1),
        "index_points": len(corpus),
        "knn_backend": "qdrant-local",
        "threads": torch.get_num_threads(),
    }


def _with_tuning_split(train: Split, val: Split | None, cfg: BenchConfig) -> tuple[Split, Split]:
    """(train, val); without a val split, a stratified ``cfg.val_fraction`` of train is carved out for
    tuning. The test split stays untouched."""
    if val is not None:
        return train, val
    labels_tr = sorted(set(train.labels))
    y = _indices(train.labels, {lab: i for i, lab in enumerate(labels_tr)})
    tr_idx, va_idx = stratified_split(y, cfg.val_fraction, cfg.seed)
    return train.take(tr_idx), train.take(va_idx)


def run_bench(
    train: Split,
    val: Split | None,
    test: Split,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    cfg: BenchConfig,
    say: Say = log.info,
) -> dict[str, Any]:
    train, val = _with_tuning_split(train, val, cfg)
    labels = sorted(set(train.labels) | set(val.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    say(f"[{cfg.name}] train {len(train)}, val {len(val)}, test {len(test)}, {len(labels)} classes")

    t0 = time.perf_counter()
    x_tr = encode_cached(encoder, train.texts, cache, show_progress=True)
    x_va = encode_cached(encoder, val.texts, cache, show_progress=True)
    x_te = encode_cached(encoder, test.texts, cache, show_progress=True)
    say(f"  embeddings ready in {time.perf_counter() - t0:.1f}s (cached after the first run)")
    y_tr, y_va, y_te = (_indices(s.labels, index) for s in (train, val, test))

    fitted = _fit_all(x_tr, y_tr, x_va, y_va, train.texts, val.texts, x_te, test.texts, labels, cfg, say)
    methods: dict[str, Any] = {}
    for name, probs in fitted.probs.items():
        methods[name] = _score(probs, y_te, labels, cfg.abstain_threshold if name.startswith("fused") else None)
        methods[name].update(fitted.extra.get(name, {}))

    result: dict[str, Any] = {
        "dataset": cfg.name,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "n_classes": len(labels),
        "labels": labels,
        "embedder": cache_key_model(encoder),
        "methods": methods,
        "params": fitted.params,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": _cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    if train.fine is not None and val.fine is not None and test.fine is not None:
        result["fine"] = _fine_level(train, val, test, x_tr, x_va, x_te, cfg)
    if cfg.timing:
        assert fitted.classifier is not None and fitted.corpus is not None
        all_labels = [*train.labels, *val.labels]
        result["timing"] = _timing(encoder, fitted.classifier, fitted.corpus, all_labels, test.texts, cfg)
    result["confusion_fused"] = confusion_matrix(
        y_te[y_te >= 0], fitted.probs["fused"][y_te >= 0].argmax(1), len(labels)
    ).tolist()
    return result


def _fine_level(
    train: Split,
    val: Split,
    test: Split,
    x_tr: np.ndarray,
    x_va: np.ndarray,
    x_te: np.ndarray,
    cfg: BenchConfig,
) -> dict[str, Any]:
    """Train on the fine labels (e.g. ISCO sub-major groups) and map predictions up to the coarse level."""
    assert train.fine is not None and val.fine is not None and test.fine is not None
    fine_labels = sorted(set(train.fine) | set(val.fine))
    index = {lab: i for i, lab in enumerate(fine_labels)}
    y_tr, y_va, y_te = (_indices(s.fine or [], index) for s in (train, val, test))
    clf, report = _classifier(x_tr, y_tr, x_va, y_va, fine_labels, cfg)
    x_all, y_all = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    clf = refit_head(clf, x_all, y_all, report.best_epoch)
    nb_l, nb_s = neighbour_arrays(x_te, x_all, y_all)
    pred = clf.predict_proba(x_te, _neighbours(fine_labels, nb_l, nb_s)).argmax(1)
    to_coarse: dict[str, str] = {}
    for fine, coarse in zip(train.fine + val.fine, train.labels + val.labels, strict=True):
        to_coarse.setdefault(fine, coarse)
    coarse_pred = [to_coarse[fine_labels[p]] for p in pred]
    known = y_te >= 0
    return {
        "n_fine_classes": len(fine_labels),
        "fused_fine_accuracy": float(np.mean(np.where(known, pred == y_te, False))),
        "fused_fine_macro_f1": macro_f1(y_te[known], pred[known], len(fine_labels)),
        "fused_coarse_from_fine_accuracy": float(
            np.mean([p == t for p, t in zip(coarse_pred, test.labels, strict=True)])
        ),
    }


def run_cv(
    pool: Split,
    folds: int,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    cfg: BenchConfig,
    say: Say = log.info,
    extra_rows: Callable[[Split, Split, BenchConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """k-fold cross-validation for small datasets: every row is scored once, by a model that never saw it.
    ``extra_rows(train, test, cfg)`` adds methods per fold (``bench --finetune``: the fine-tuned rows, with the
    encoder fine-tuned on each fold's training part); its ``finetune`` record is kept per fold."""
    labels = sorted(set(pool.labels))
    y = _indices(pool.labels, {lab: i for i, lab in enumerate(labels)})
    rng = np.random.default_rng(cfg.seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        fold_of[members] = np.arange(len(members)) % folds
    per_method: dict[str, list[tuple[float, float]]] = {}
    finetune_runs: list[dict[str, Any]] = []
    for fold in range(folds):
        sub = BenchConfig(**{**cfg.__dict__, "name": f"{cfg.name}/fold{fold}", "timing": False})
        train, test = pool.take(np.flatnonzero(fold_of != fold)), pool.take(np.flatnonzero(fold_of == fold))
        methods = run_bench(train, None, test, encoder, cache, sub, say)["methods"]
        if extra_rows is not None:
            extra = extra_rows(train, test, sub)
            methods = {**methods, **extra["methods"]}
            if "finetune" in extra:
                finetune_runs.append(extra["finetune"])
        for name, scores in methods.items():
            per_method.setdefault(name, []).append((scores["accuracy"], scores["macro_f1"]))
    return {
        "folds": folds,
        "n": len(pool),
        **({"finetune": finetune_runs} if finetune_runs else {}),
        "methods": {
            name: {
                "accuracy_mean": float(np.mean([a for a, _ in vals])),
                "accuracy_std": float(np.std([a for a, _ in vals])),
                "macro_f1_mean": float(np.mean([f for _, f in vals])),
                "macro_f1_std": float(np.std([f for _, f in vals])),
            }
            for name, vals in per_method.items()
        },
    }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---- reports ----------------------------------------------------------------------------------
METHOD_ORDER = (
    "tfidf_lr",
    "head",
    "knn",
    "fused",
    "fused_int8",
    "fused_pruned",
    "fused_int8_pruned",
    "fused_tfidf",
)


def markdown_report(result: dict[str, Any], image: str | None = None, heading: str = "##") -> str:
    m = result["methods"]
    lines = [
        f"{heading} {result['dataset']}",
        "",
        f"train {result['n_train']} · val {result['n_val']} · test {result['n_test']} · "
        f"{result['n_classes']} classes · embedder `{result['embedder']}`",
        "",
        "| method | accuracy | macro-F1 | ECE | head bytes | head µs/item |",
        "|---|---|---|---|---|---|",
    ]
    for name in METHOD_ORDER:
        if name not in m:
            continue
        s = m[name]
        lines.append(
            f"| {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['ece']:.3f} | "
            f"{s.get('head_bytes', '')} | {s.get('head_latency_us_per_item', '')} |"
        )
    fused = m["fused"]
    if "abstain" in fused:
        a = fused["abstain"]
        lines += [
            "",
            f"Abstain threshold {a['threshold']}: coverage {a['coverage']:.3f}, "
            f"accuracy on answered {a['accuracy']:.4f}.",
        ]
    if "fine" in result:
        f = result["fine"]
        lines += [
            "",
            f"Fine labels ({f['n_fine_classes']} classes): fused fine accuracy {f['fused_fine_accuracy']:.4f}, "
            f"macro-F1 {f['fused_fine_macro_f1']:.4f}; coarse accuracy from fine predictions "
            f"{f['fused_coarse_from_fine_accuracy']:.4f} (vs {fused['accuracy']:.4f} trained on coarse labels).",
        ]
    if "timing" in result:
        t = result["timing"]
        lines += [
            "",
            f"Timing ({t['threads']} threads): embedding {t['embed_texts_per_s']} texts/s; one classification "
            f"(clean → embed → Qdrant local, {t['index_points']} points → fuse) p50 {t['classify_p50_ms']} ms, "
            f"p99 {t['classify_p99_ms']} ms; index upsert {t['index_upsert_points_per_s']} points/s.",
        ]
    if "cv" in result:
        cv = result["cv"]
        lines += [
            "",
            f"{cv['folds']}-fold cross-validation over {cv['n']} rows (train + val pooled):",
            "",
            "| method | accuracy | macro-F1 |",
            "|---|---|---|",
        ]
        for name in METHOD_ORDER:
            if name in cv["methods"]:
                s = cv["methods"][name]
                lines.append(
                    f"| {name} | {s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | "
                    f"{s['macro_f1_mean']:.4f} ± {s['macro_f1_std']:.4f} |"
                )
    if image:
        lines += ["", f"![confusion matrix of fused on {result['dataset']}]({image})"]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cm = np.array(result["confusion_fused"])
    plot_confusion(cm, result["labels"], out / "confusion_fused.png", title=f"fused — {result['dataset']}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(markdown_report(result, "confusion_fused.png", heading="#"))


# ---- fine-tuned encoder rows (`jobclass bench --finetune`) ------------------------------------
FT_METHODS = (
    "fused_holdout",
    "ft_head",
    "ft_knn",
    "ft_fused",
    "ft_fused_int8",
    "ft_fused_pruned",
    "ft_fused_int8_pruned",
)


def _holdout_rows(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    x_te: np.ndarray,
    labels: list[str],
    cfg: BenchConfig,
) -> tuple[dict[str, np.ndarray], FusedClassifier]:
    """Test probabilities of head, kNN and fusion (and its compressed variants): the head early-stopped and
    the fusion tuned on the validation split (no cross-fitting over the training split), then the head
    refit on train + validation, and the kNN voting with both."""
    clf_tr, report = _classifier(x_tr, y_tr, x_va, y_va, labels, cfg, crossfit=0)
    x_all, y_all = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    clf = refit_head(clf_tr, x_all, y_all, report.best_epoch)
    nb_l, nb_s = neighbour_arrays(x_te, x_all, y_all)
    neighbours = _neighbours(labels, nb_l, nb_s)
    probs = {
        "head": clf.head_proba(x_te),
        "knn": knn_vote(nb_l, nb_s, len(labels), k=clf.params.k, temperature=clf.params.knn_temperature),
    }
    for variant in VARIANTS:
        probs["fused" if variant == "fp32" else f"fused_{variant}"] = clf.with_variant(variant).predict_proba(
            x_te, neighbours
        )
    return probs, clf


def finetune_targets(train: Split, val: Split, fine_labels: bool) -> tuple[list[str], list[str], dict[str, str] | None]:
    """The labels the encoder is fine-tuned on (training, validation) and, for fine labels, the fine → coarse
    map that model selection scores through."""
    if not fine_labels:
        return train.labels, val.labels, None
    if train.fine is None or val.fine is None:
        raise ValueError("fine-tuning on fine labels needs a label_fine column")
    return train.fine, val.fine, dict(zip(train.fine + val.fine, train.labels + val.labels, strict=True))


def run_finetune_rows(
    train: Split,
    val: Split | None,
    test: Split,
    encoder: Encoder,
    cfg: BenchConfig,
    ft_cfg: Any = None,
    say: Say = log.info,
    workdir: Path | None = None,
    *,
    fine_labels: bool = False,
    cache: EmbeddingCache | None = None,
) -> dict[str, Any]:
    """Fine-tune the bench's encoder on the training split (early stopping on the validation split,
    carved out of training exactly as ``run_bench`` does when none is given), then fit head, kNN and
    fusion on the fine-tuned embeddings as ``run_bench`` does for the frozen ones. ``fine_labels``
    fine-tunes on ``label_fine`` (model selection on coarse accuracy, fine predictions mapped up); head,
    kNN and fusion still learn the coarse labels. Also scores ``fused_holdout``: the frozen encoder under
    the ft rows' protocol, their like-for-like baseline. Returns
    ``{"methods": {ft_*, fused_holdout: scores}, "finetune": {wall time, texts/s, ...}}`` to merge into
    metrics.json. Fine-tuned embeddings are not cached (the model exists only for this run)."""
    import tempfile

    from indexing.embed import SentenceEmbedder
    from indexing.finetune import FinetuneConfig, finetune

    train, val = _with_tuning_split(train, val, cfg)
    labels = sorted(set(train.labels) | set(val.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    ft_cfg = ft_cfg or FinetuneConfig(seed=cfg.seed)
    ft_cfg.chunking = getattr(encoder, "chunking", "sentences") == "sentences"
    with tempfile.TemporaryDirectory(prefix="jobclass-ft-", dir=workdir) as tmp:
        say(f"[{cfg.name}] fine-tuning {encoder.name} on {len(train)} texts")
        tr_labels, va_labels, coarse = finetune_targets(train, val, fine_labels)
        ft = finetune(
            encoder.name, train.texts, tr_labels, val.texts, va_labels, Path(tmp), ft_cfg, coarse=coarse, say=say
        )
        tuned = SentenceEmbedder(
            tmp,
            prefix=getattr(encoder, "prefix", ""),
            dtype=getattr(encoder, "dtype", "bfloat16"),
            batch_size=getattr(encoder, "batch_size", 32),
            chunking=getattr(encoder, "chunking", "sentences"),
        )
        t0 = time.perf_counter()
        x_tr, x_va, x_te = (tuned.encode(s.texts) for s in (train, val, test))
        embed_seconds = time.perf_counter() - t0
    y_tr, y_va, y_te = (_indices(s.labels, index) for s in (train, val, test))
    # The encoder has now been trained on x_tr's texts: out-of-fold predictions over them would flatter both
    # the head and the kNN (their classes were pulled together), so the head stops early and the fusion is
    # tuned on the validation split, which the encoder never took a gradient from — as a new vacancy.
    probs, clf = _holdout_rows(x_tr, y_tr, x_va, y_va, x_te, labels, cfg)
    probs = {f"ft_{name}": p for name, p in probs.items()}
    # The like-for-like baseline: the frozen encoder under that same protocol (the `fused` row cross-fits over
    # the training split instead, which the fine-tuned encoder cannot do honestly).
    f_tr, f_va, f_te = (encode_cached(encoder, s.texts, cache) for s in (train, val, test))
    probs["fused_holdout"] = _holdout_rows(f_tr, y_tr, f_va, y_va, f_te, labels, cfg)[0]["fused"]
    methods = {
        name: _score(p, y_te, labels, cfg.abstain_threshold if "fused" in name else None) for name, p in probs.items()
    }
    return {
        "methods": methods,
        "finetune": {
            "base_model": encoder.name,
            "wall_seconds": ft.wall_seconds,
            "train_seconds": ft.train_seconds,
            "texts_per_s": ft.texts_per_s,
            "n_train_texts": ft.n_train_texts,
            "n_examples": ft.n_examples,
            "steps": ft.steps,
            "best_step": ft.best_step,
            "knn_val": ft.metrics,
            "history": ft.history,
            "embed_seconds": round(embed_seconds, 2),
            "params": {**ft_cfg.__dict__, "fine_labels": fine_labels},
            "fusion": clf.params.to_dict(),
            "load_average": _load_average(),
        },
    }


def _load_average() -> list[float] | None:
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def finetune_markdown(result: dict[str, Any]) -> str:
    """The fine-tuned rows next to the frozen ones they compete with (appended to report.md)."""
    m, f = result["methods"], result["finetune"]
    objective = f.get("params", {}).get("objective", "triplets")
    examples = "triplets" if objective == "triplets" else "labelled texts"
    if f.get("params", {}).get("fine_labels"):
        objective += ", fine labels"
    lines = [
        "",
        "## Fine-tuned encoder",
        "",
        f"Fine-tuning of `{f['base_model']}` ({objective} objective): {f['n_examples']} {examples} from "
        f"{f['n_train_texts']} texts, {f['steps']} steps (best {f['best_step']}), {f['wall_seconds']:.0f} s wall "
        f"({f['texts_per_s']:.1f} texts/s through forward + backward; load average at the end "
        f"{f['load_average']}).",
        "",
        "| method | accuracy | macro-F1 | ECE |",
        "|---|---|---|---|",
    ]
    for name in ("tfidf_lr", "head", "knn", "fused", *FT_METHODS):
        if name in m:
            s = m[name]
            lines.append(f"| {name} | {s['accuracy']:.4f} | {s['macro_f1']:.4f} | {s['ece']:.3f} |")
    if {"ft_fused", "fused", "tfidf_lr"} <= m.keys():
        gain = 100 * (m["ft_fused"]["accuracy"] - m["fused"]["accuracy"])
        over_tfidf = 100 * (m["ft_fused"]["accuracy"] - m["tfidf_lr"]["accuracy"])
        lines += [
            "",
            f"ft_fused − fused: {gain:+.2f} points (target ≥ +2); ft_fused − tfidf_lr: {over_tfidf:+.2f} points "
            "(target ≥ +3 on English data).",
        ]
    if {"ft_fused", "fused_holdout"} <= m.keys():
        like = 100 * (m["ft_fused"]["accuracy"] - m["fused_holdout"]["accuracy"])
        lines += [
            f"ft_fused − fused_holdout: {like:+.2f} points (fused_holdout: the frozen encoder with the head "
            "early-stopped and the fusion tuned on the validation split, as the ft rows are; `fused` cross-fits "
            "over the training split, which a fine-tuned encoder cannot do without flattering itself).",
        ]
    return "\n".join(lines) + "\n"


COMPRESSED = ("fused_int8", "fused_pruned", "fused_int8_pruned")


def target_checks(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for one dataset, in accuracy points (and macro-F1 points where named):
    fused minus head, knn and tfidf_lr, and the largest loss of a compressed variant against fused.
    With a cross-validation section, the same numbers over its folds' means as well."""

    def deltas(acc: dict[str, float], f1: dict[str, float]) -> dict[str, float]:
        return {
            "fused_minus_head": 100 * (acc["fused"] - acc["head"]),
            "fused_minus_knn": 100 * (acc["fused"] - acc["knn"]),
            "fused_minus_head_f1": 100 * (f1["fused"] - f1["head"]),
            "fused_minus_knn_f1": 100 * (f1["fused"] - f1["knn"]),
            "fused_minus_tfidf": 100 * (acc["fused"] - acc["tfidf_lr"]),
            "hybrid_minus_tfidf": 100 * (acc["fused_tfidf"] - acc["tfidf_lr"]),
            "compression_loss": max(0.0, *(100 * (acc["fused"] - acc[c]) for c in COMPRESSED)),
        }

    m = result["methods"]
    out: dict[str, Any] = {
        "val": deltas({k: v["accuracy"] for k, v in m.items()}, {k: v["macro_f1"] for k, v in m.items()})
    }
    cv = result.get("cv")
    if cv:
        cm = cv["methods"]
        out["cv"] = deltas(
            {k: v["accuracy_mean"] for k, v in cm.items()}, {k: v["macro_f1_mean"] for k, v in cm.items()}
        )
    return out


def targets_markdown(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """One row per dataset (and per CV section): ✓ where the target holds, the margin in points."""

    def cell(value: float, ok: bool) -> str:
        return f"{'✓' if ok else '✗'} {value:+.2f}"

    lines = [
        "| dataset | fused − head (acc / F1) | fused − knn (acc / F1) | fused − tfidf_lr | hybrid − tfidf_lr "
        "| worst compression loss |",
        "|---|---|---|---|---|---|",
    ]
    for name, checks in rows:
        for scope, d in checks.items():
            lines.append(
                f"| {name}{' (5-fold CV)' if scope == 'cv' else ''} "
                f"| {cell(d['fused_minus_head'], d['fused_minus_head'] >= 0)} / "
                f"{cell(d['fused_minus_head_f1'], d['fused_minus_head_f1'] >= 0)} "
                f"| {cell(d['fused_minus_knn'], d['fused_minus_knn'] >= 0)} / "
                f"{cell(d['fused_minus_knn_f1'], d['fused_minus_knn_f1'] >= 0)} "
                f"| {cell(d['fused_minus_tfidf'], d['fused_minus_tfidf'] >= 0)} "
                f"| {cell(d['hybrid_minus_tfidf'], d['hybrid_minus_tfidf'] >= 0)} "
                f"| {cell(-d['compression_loss'], d['compression_loss'] <= 0.5)} |"
            )
    return "\n".join(lines)
