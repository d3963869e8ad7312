"""`jobclass bench`: every method trained on the same data, scored side by side, in one run.

Methods: ``tfidf_lr`` (the classic baseline), ``head``, ``knn`` (the vote over the hybrid query's
neighbours), ``lexical`` (the served lexical model alone), ``fused`` (exactly what the service serves:
the three signals trained, cross-fitted and tuned by ``models.training.train_classifier`` with the
service's lexical settings, neighbours from the hybrid query), and the fusion with each compressed head.
With a ``label_fine`` column (the level below ``label``) also ``head_hier`` and ``fused_hier``: the same
served classifier trained on the fine labels with ``label`` as their parent, its probabilities rolled up
to the coarse level (``models.hierarchy``), scored against the flat rows; the ``fine`` section adds the
accuracy per level, the lowest-common-ancestor score and the service's answers that fall back to the parent.
All are fit on the training split and tuned on the
validation split (carved out of training when none is given: 10 %, the service's JOBCLASS_VALIDATION_FRACTION);
the TF-IDF baseline is then refit on train + validation (its best), the served rows are not (the service keeps
its hold-out unseen by every version, and its index, so the vote, holds it); all are scored on the test split.
The embedded texts go through the production cleaning; embeddings are cached on disk keyed by (embedder
signature, text hash), so re-runs only pay for the models.

The fitting and scoring steps here (``fit_all``, ``fit_classifier``, ``score``, ``indices``…) are shared
with ``app.bench.extract`` and ``app.bench.finetune_rows``.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from app.bench.baselines import TfidfLR, tune_tfidf_c
from app.services.dataset import Split
from app.settings import Settings
from indexing.cache import EmbeddingCache, cache_key_model, encode_cached
from indexing.clean import clean_text
from indexing.embed import Encoder
from indexing.sparse import LexicalEncoder, to_csr
from indexing.store import VacancyPoint, VectorStore, connect
from models.classifier import FusedClassifier, Neighbour
from models.compress import VARIANTS
from models.conformal import calibrate_conformal, set_metrics
from models.hierarchy import Hierarchy
from models.metrics import (
    confusion_matrix,
    coverage_at,
    expected_calibration_error,
    lca_score,
    level_accuracy,
    log_loss,
    macro_f1,
    summary,
)
from models.training import (
    CROSSFIT_FOLDS,
    TextInputs,
    TrainReport,
    corpus_neighbours,
    stratified_split,
    train_classifier,
)

log = logging.getLogger(__name__)
Say = Callable[[str], None]
LATENCY_QUERIES = 100
THROUGHPUT_TEXTS = 256
COMPRESSED = ("fused_int8", "fused_pruned", "fused_int8_pruned")


@dataclass
class BenchConfig:
    name: str
    abstain_threshold: float = 0.25
    seed: int = 20240601
    val_fraction: float = 0.1
    latency_queries: int = LATENCY_QUERIES
    timing: bool = True
    lexical_language: str = "danish"  # the service's JOBCLASS_LEXICAL_LANGUAGE default
    hierarchy_threshold: float | None = None  # JOBCLASS_HIERARCHY_THRESHOLD; None: the abstain threshold
    coverage: float = 0.9  # the service's JOBCLASS_COVERAGE default
    min_class_rows: int = 30  # JOBCLASS_CONFORMAL_MIN_CLASS_ROWS

    @property
    def answer_threshold(self) -> float:
        return self.abstain_threshold if self.hierarchy_threshold is None else self.hierarchy_threshold


@dataclass
class Fitted:
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    classifier: FusedClassifier | None = None
    corpus: np.ndarray | None = None
    corpus_labels: list[str] = field(default_factory=list)
    inputs: list[TextInputs] = field(default_factory=list)  # train, val, test texts with their BM25 vectors
    val_probs: np.ndarray | None = None  # the served fusion on the validation split
    oof: tuple[np.ndarray, np.ndarray] | None = None  # training rows' out-of-fold (p_true, y): calibration rows


def load_bench_encoder(settings: Settings) -> tuple[Encoder, EmbeddingCache]:
    """The configured encoder (``app.encoders.load_encoder``) and the on-disk embedding cache."""
    from app.encoders import load_encoder

    return load_encoder(settings), EmbeddingCache(settings.cache_path)


# ---- shared fitting and scoring steps ---------------------------------------------------------
def indices(labels: Sequence[str], index: dict[str, int]) -> np.ndarray:
    """Class indices of ``labels`` (-1 for a label outside ``index``)."""
    return np.array([index.get(lab, -1) for lab in labels], dtype=np.int64)


def neighbours(labels: Sequence[str], nb_labels: np.ndarray, nb_scores: np.ndarray) -> list[list[Neighbour]]:
    return [
        [Neighbour(labels[int(a)], float(b)) for a, b in zip(row_l, row_s, strict=True)]
        for row_l, row_s in zip(nb_labels, nb_scores, strict=True)
    ]


def fit_classifier(
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


def variant_key(variant: str) -> str:
    """The method name of the fusion with one head variant: ``fused`` (fp32), ``fused_int8``…"""
    return "fused" if variant == "fp32" else f"fused_{variant}"


def variant_probs(clf: FusedClassifier, x_te: np.ndarray, nbs: list[list[Neighbour]]) -> dict[str, np.ndarray]:
    """Test probabilities of the fusion with each head variant."""
    return {variant_key(v): clf.with_variant(v).predict_proba(x_te, nbs) for v in VARIANTS}


def head_latency_us(module: Any, x_te: np.ndarray) -> float:
    """Microseconds per item of a head's forward pass over the test embeddings."""
    xt = torch.as_tensor(x_te, dtype=torch.float32)
    with torch.no_grad():
        module(xt[:256])  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            module(xt)
        return (time.perf_counter() - t0) / (5 * len(x_te)) * 1e6


@dataclass
class Arrays:
    """Embeddings, class indices and texts of one split."""

    x: np.ndarray
    y: np.ndarray
    texts: Sequence[str]


def _fit_tfidf(tr: Arrays, va: Arrays, te: Arrays, n: int, out: Fitted, say: Say) -> None:
    """TF-IDF + LR, the baseline: C tuned on validation, refit on train + validation."""
    t0 = time.perf_counter()
    best_c, _ = tune_tfidf_c(tr.texts, tr.y, va.texts, va.y, n)
    tfidf = TfidfLR(list(tr.texts) + list(va.texts), np.concatenate([tr.y, va.y]), n).fit(best_c)
    out.probs["tfidf_lr"] = tfidf.predict_proba(te.texts)
    out.params["tfidf_lr"] = {"C": best_c, "fit_seconds": round(time.perf_counter() - t0, 2)}
    say(f"  tfidf_lr fitted (C={best_c}) in {time.perf_counter() - t0:.1f}s")


def text_inputs(cfg: BenchConfig, *splits: Sequence[str]) -> list[TextInputs]:
    """Each split's texts with BM25 document and query vectors over one term space, as the service
    builds them (``app.services.training.text_inputs``) for the lexical model and the hybrid vote."""
    encoder = LexicalEncoder(language=cfg.lexical_language)
    groups = []
    for texts in splits:
        groups += [encoder.documents(texts), encoder.queries(texts)]
    matrices = to_csr(*groups)
    return [TextInputs(list(t), matrices[2 * i], matrices[2 * i + 1]) for i, t in enumerate(splits)]


def _fit_served(
    tr: Arrays, va: Arrays, inputs: list[TextInputs], labels: list[str], cfg: BenchConfig, out: Fitted, say: Say
) -> FusedClassifier:
    """The served classifier: head, lexical model and hybrid vote cross-fitted and tuned on the training
    split, scored on validation, **not** refit on it (``train_classifier`` as ``jobclass train`` runs it: the
    hold-out stays unseen by every version; the index, and so the vote, holds it)."""
    t0 = time.perf_counter()
    clf, report = train_classifier(
        tr.x,
        tr.y,
        labels,
        x_val=va.x,
        y_val=va.y,
        seed=cfg.seed,
        abstain_threshold=cfg.abstain_threshold,
        refit=False,
        crossfit=CROSSFIT_FOLDS,
        inputs=inputs[0],
        inputs_val=inputs[1],
    )
    out.params["fusion"] = {**clf.params.to_dict(), "best_epoch": report.best_epoch}
    out.params["lexical_features"] = clf.lexical.n_features if clf.lexical is not None else 0
    out.params["fit_seconds"] = round(time.perf_counter() - t0, 2)
    out.val_probs = report.val_probs
    out.oof = report.calibration
    say(f"  head/lexical/kNN/fusion fitted in {time.perf_counter() - t0:.1f}s: {clf.params}")
    return clf


def _test_probs(
    clf: FusedClassifier, x_all: np.ndarray, y_all: np.ndarray, inputs: list[TextInputs], x_te: np.ndarray, out: Fitted
) -> None:
    """Head, vote, lexical model and every fusion variant (with its size and speed) on the test split,
    neighbours from the hybrid query over train + validation."""
    corpus = TextInputs.concat(inputs[0], inputs[1])
    test = inputs[2]
    nbs = corpus_neighbours(clf.labels, x_te, x_all, y_all, test, corpus)
    out.probs["head"] = clf.head_proba(x_te)
    out.probs["knn"] = clf.knn_proba(nbs)
    p_lex, _ = clf.lexical_proba(test.texts)
    if p_lex is not None:
        out.probs["lexical"] = p_lex
    for variant in VARIANTS:
        key, compressed = variant_key(variant), clf.with_variant(variant)
        out.probs[key] = compressed.predict_proba(x_te, nbs, test.texts)
        out.extra[key] = {
            "head_bytes": clf.variant_bytes()[variant],
            "head_latency_us_per_item": round(head_latency_us(compressed.module, x_te), 3),
        }


def fit_all(
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
) -> Fitted:
    """Every method fitted on train (tuned on validation; the TF-IDF baseline refit on both, the served
    fusion not, as the service trains it); their test probabilities."""
    tr, va, te = Arrays(x_tr, y_tr, texts_tr), Arrays(x_va, y_va, texts_va), Arrays(x_te, np.empty(0), texts_te)
    out = Fitted()
    _fit_tfidf(tr, va, te, len(labels), out, say)
    inputs = text_inputs(cfg, texts_tr, texts_va, texts_te)
    clf = _fit_served(tr, va, inputs, labels, cfg, out, say)
    x_all = np.concatenate([x_tr, x_va])
    _test_probs(clf, x_all, np.concatenate([y_tr, y_va]), inputs, x_te, out)
    out.classifier, out.corpus, out.inputs = clf, x_all, inputs
    return out


def score(probs: np.ndarray, y: np.ndarray, labels: list[str], threshold: float | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1, calibration (and coverage at ``threshold``); labels unseen in training count as
    errors."""
    known = y >= 0
    pred = probs.argmax(1)
    scores = summary(probs[known], y[known], labels)
    scores["accuracy"] = float(np.mean(np.where(known, pred == y, False)))
    scores["n_unknown_label"] = int((~known).sum())
    if threshold is not None:
        scores["abstain"] = coverage_at(probs[known], y[known], threshold)
    scores["log_loss"] = log_loss(probs[known], y[known]) if known.any() else None
    scores["ece"] = expected_calibration_error(probs[known], y[known])
    return scores


# ---- timing -----------------------------------------------------------------------------------
def _embed_rate(encoder: Encoder, texts: Sequence[str]) -> float:
    sample = list(texts[:THROUGHPUT_TEXTS])
    encoder.encode(sample[:8])  # warm-up
    t0 = time.perf_counter()
    encoder.encode(sample)
    return len(sample) / (time.perf_counter() - t0)


def _index_corpus(store: VectorStore, corpus: np.ndarray, corpus_labels: Sequence[str]) -> float:
    """Upsert the corpus into a fresh collection behind the alias; points per second."""
    store.swap_alias(store.create_version(corpus.shape[1]))
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for start in range(0, len(corpus), 1024):
        store.upsert(
            VacancyPoint(f"c{i}", corpus[i], corpus_labels[i], "bench", now)
            for i in range(start, min(start + 1024, len(corpus)))
        )
    return len(corpus) / (time.perf_counter() - t0)


def _classify_latencies_ms(
    encoder: Encoder, clf: FusedClassifier, store: VectorStore, texts: Sequence[str], n: int
) -> list[float]:
    k = max(clf.params.k, 5)
    latencies = []
    for text in list(texts)[:n]:
        t0 = time.perf_counter()
        vector = encoder.encode([clean_text(text)])
        hits = store.search(vector[0], k)
        clf.predict_proba(vector, [[Neighbour(h.label, h.score) for h in hits]])
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def timing(
    encoder: Encoder,
    clf: FusedClassifier,
    corpus: np.ndarray,
    corpus_labels: Sequence[str],
    texts: Sequence[str],
    cfg: BenchConfig,
) -> dict[str, Any]:
    """Throughput of the embedder and end-to-end latency of one classification through the
    production path: clean → embed → Qdrant (local mode) → fuse."""
    embed_rate = _embed_rate(encoder, texts)
    store = VectorStore(connect(None, ":memory:"), alias="bench")
    upsert_rate = _index_corpus(store, corpus, corpus_labels)
    latencies = _classify_latencies_ms(encoder, clf, store, texts, cfg.latency_queries)
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


# ---- the run ----------------------------------------------------------------------------------
def with_tuning_split(train: Split, val: Split | None, cfg: BenchConfig) -> tuple[Split, Split]:
    """(train, val); without a val split, a stratified ``cfg.val_fraction`` of train is carved out for
    tuning. The test split stays untouched."""
    if val is not None:
        return train, val
    labels_tr = sorted(set(train.labels))
    y = indices(train.labels, {lab: i for i, lab in enumerate(labels_tr)})
    tr_idx, va_idx = stratified_split(y, cfg.val_fraction, cfg.seed)
    return train.take(tr_idx), train.take(va_idx)


def _result_header(
    train: Split, val: Split, test: Split, labels: list[str], encoder: Encoder, cfg: BenchConfig
) -> dict[str, Any]:
    return {
        "dataset": cfg.name,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "n_classes": len(labels),
        "labels": labels,
        "embedder": cache_key_model(encoder),
    }


def run_bench(
    train: Split,
    val: Split | None,
    test: Split,
    encoder: Encoder,
    cache: EmbeddingCache | None,
    cfg: BenchConfig,
    say: Say = log.info,
) -> dict[str, Any]:
    train, val = with_tuning_split(train, val, cfg)
    labels = sorted(set(train.labels) | set(val.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    say(f"[{cfg.name}] train {len(train)}, val {len(val)}, test {len(test)}, {len(labels)} classes")
    t0 = time.perf_counter()
    x_tr, x_va, x_te = (encode_cached(encoder, s.texts, cache, show_progress=True) for s in (train, val, test))
    say(f"  embeddings ready in {time.perf_counter() - t0:.1f}s (cached after the first run)")
    y_tr, y_va, y_te = (indices(s.labels, index) for s in (train, val, test))

    fitted = fit_all(x_tr, y_tr, x_va, y_va, train.texts, val.texts, x_te, test.texts, labels, cfg, say)
    methods: dict[str, Any] = {}
    for name, probs in fitted.probs.items():
        methods[name] = score(probs, y_te, labels, cfg.abstain_threshold if name.startswith("fused") else None)
        methods[name].update(fitted.extra.get(name, {}))
    fine: dict[str, Any] | None = None
    if train.fine is not None and val.fine is not None and test.fine is not None:
        arrays = (x_tr, x_va, x_te)
        hier_probs, fine = hierarchical_level(train, val, test, arrays, fitted.inputs, labels, cfg, say)
        for name, probs in hier_probs.items():
            methods[name] = score(probs, y_te, labels, cfg.abstain_threshold if name.startswith("fused") else None)
        fine["flat_comparison"] = hier_minus_flat(methods)
    result: dict[str, Any] = {
        **_result_header(train, val, test, labels, encoder, cfg),
        "methods": methods,
        "params": fitted.params,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    if fine is not None:
        result["fine"] = fine
    if fitted.val_probs is not None:
        result["uncertainty"] = bench_uncertainty(
            fitted.val_probs, y_va, fitted.probs["fused"], y_te, labels, cfg, extra=fitted.oof
        )
    if cfg.timing:
        assert fitted.classifier is not None and fitted.corpus is not None
        all_labels = [*train.labels, *val.labels]
        result["timing"] = timing(encoder, fitted.classifier, fitted.corpus, all_labels, test.texts, cfg)
    result["confusion_fused"] = confusion_matrix(
        y_te[y_te >= 0], fitted.probs["fused"][y_te >= 0].argmax(1), len(labels)
    ).tolist()
    return result


def bench_uncertainty(
    val_probs: np.ndarray,
    y_va: np.ndarray,
    test_probs: np.ndarray,
    y_te: np.ndarray,
    labels: list[str],
    cfg: BenchConfig,
    *,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Prediction sets and automation of the served fusion: conformal thresholds chosen on the validation
    split (as the service calibrates on its hold-out)
    pooled with the training rows' out-of-fold ``extra`` rows, automation thresholds on the validation split,
    both measured on the test split (rows with a label unseen in training left out)."""
    from app.services.uncertainty import automation_report

    known = y_te >= 0
    cal = calibrate_conformal(val_probs, y_va, cfg.coverage, min_class_rows=cfg.min_class_rows, extra=extra)
    auto = automation_report(test_probs[known], y_te[known], labels, choose_on=(val_probs, y_va))
    return {
        "coverage_target": cfg.coverage,
        "n_calibration": cal.n,
        "n_holdout": len(y_va),
        "mondrian_classes": int(cal.mondrian.sum()),
        "test": set_metrics(test_probs[known], y_te[known], cal.thresholds),
        "validation": set_metrics(val_probs, y_va, cal.thresholds),
        "automation": auto,
    }


def fine_hierarchy(fine: Sequence[str], coarse: Sequence[str], coarse_labels: Sequence[str]) -> Hierarchy:
    """The two-level tree of the rows' (fine, coarse) pairs: each fine label's parent is its coarse label.
    A fine label under two coarse ones, or named like a coarse one, is a ``ValueError`` naming it."""
    parent: dict[str, str] = {}
    for f, c in zip(fine, coarse, strict=True):
        if parent.setdefault(f, c) != c:
            raise ValueError(f"label_fine {f!r} sits under two labels ({parent[f]!r} and {c!r}): not a hierarchy")
    clash = sorted(set(parent) & set(coarse_labels))
    if clash:
        raise ValueError(f"label_fine values that are also labels: {', '.join(map(repr, clash[:5]))}")
    return Hierarchy([*coarse_labels, *sorted(parent)], parent)


def hierarchical_level(
    train: Split,
    val: Split,
    test: Split,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    inputs: list[TextInputs],
    coarse_labels: list[str],
    cfg: BenchConfig,
    say: Say = log.info,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The served classifier trained on the fine labels (as ``_fit_served``: cross-fitted and tuned on
    train, not refit), its test probabilities rolled up to the coarse labels (``head_hier``,
    ``fused_hier``, columns in ``coarse_labels`` order), and the hierarchy-aware scores of its answers."""
    assert train.fine is not None and val.fine is not None and test.fine is not None
    x_tr, x_va, x_te = arrays
    tree = fine_hierarchy(train.fine + val.fine, train.labels + val.labels, coarse_labels)
    fine_labels = sorted(set(train.fine) | set(val.fine))
    index = {lab: i for i, lab in enumerate(fine_labels)}
    y_tr, y_va, y_te = (indices(s.fine or [], index) for s in (train, val, test))
    t0 = time.perf_counter()
    clf, report = train_classifier(
        x_tr,
        y_tr,
        fine_labels,
        x_val=x_va,
        y_val=y_va,
        seed=cfg.seed,
        abstain_threshold=cfg.abstain_threshold,
        refit=False,
        crossfit=CROSSFIT_FOLDS,
        inputs=inputs[0],
        inputs_val=inputs[1],
    )
    say(f"  fine level ({len(fine_labels)} classes) fitted in {time.perf_counter() - t0:.1f}s: {clf.params}")
    x_all, y_all = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    nbs = corpus_neighbours(fine_labels, x_te, x_all, y_all, inputs[2], TextInputs.concat(inputs[0], inputs[1]))
    p_fine = {"head": clf.head_proba(x_te), "fused": clf.predict_proba(x_te, nbs, inputs[2].texts)}
    columns = [tree.index[c] for c in coarse_labels]
    rolled = {f"{name}_hier": tree.rollup(p, fine_labels)[:, columns] for name, p in p_fine.items()}

    fused = p_fine["fused"]
    pred = fused.argmax(1)
    known = y_te >= 0  # a fine test label never seen in training counts as wrong, and is left out of the tree scores
    true = [f for f, k in zip(test.fine, known, strict=True) if k]
    leaf = [fine_labels[int(p)] for p, k in zip(pred, known, strict=True) if k]
    answers = [a for a, k in zip(tree.answers(fused, fine_labels, cfg.answer_threshold), known, strict=True) if k]
    answered = [a.label for a in answers]
    on_path = [a.label is not None and a.label in tree.path(t) for a, t in zip(answers, true, strict=True)]
    n = max(len(answers), 1)
    return rolled, {
        "n_fine_classes": len(fine_labels),
        "n_unknown_fine": int((~known).sum()),
        "fine_epochs": report.best_epoch,
        "fused_fine_accuracy": float(np.mean(np.where(known, pred == y_te, False))),
        "fused_fine_macro_f1": macro_f1(y_te[known], pred[known], len(fine_labels)),
        # the most probable fine label, mapped to its parent (fused_hier: the coarse label with the most mass)
        "fused_coarse_from_fine_accuracy": float(
            np.mean([tree.path(fine_labels[int(p)])[0] == c for p, c in zip(pred, test.labels, strict=True)])
        ),
        "level_accuracy": {str(k): v["accuracy"] for k, v in level_accuracy(tree, true, leaf).items()},
        "lca_score": lca_score(tree, true, leaf),
        "answers": {  # the service's rule (JOBCLASS_HIERARCHY_THRESHOLD): descend while the mass reaches it
            "threshold": cfg.answer_threshold,
            "share_fine": sum(a.level == 1 for a in answers) / n,
            "share_coarse": sum(a.level == 0 for a in answers) / n,
            "share_abstained": sum(a.label is None for a in answers) / n,
            "accuracy_answered": sum(on_path) / max(1, sum(a is not None for a in answered)),
            "lca_score": lca_score(tree, true, answered),
        },
    }


def hier_minus_flat(methods: dict[str, Any]) -> dict[str, float]:
    """Points (accuracy, macro-F1) by which the rolled-up rows beat (or lose to) flat coarse training."""
    out: dict[str, float] = {}
    for flat_name in ("head", "fused"):
        name, flat = f"{flat_name}_hier", methods[flat_name]
        out[f"{name}_minus_flat"] = 100 * (methods[name]["accuracy"] - flat["accuracy"])
        out[f"{name}_minus_flat_f1"] = 100 * (methods[name]["macro_f1"] - flat["macro_f1"])
    return out


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
    fold_of = stratified_folds(pool.labels, folds, cfg.seed)
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
        "methods": {name: _mean_std(vals) for name, vals in per_method.items()},
    }


def stratified_folds(labels: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """The fold (0 … folds − 1) of each row: every class dealt round-robin over the folds, shuffled."""
    y = indices(labels, {lab: i for i, lab in enumerate(sorted(set(labels)))})
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        fold_of[members] = np.arange(len(members)) % folds
    return fold_of


def _mean_std(vals: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Mean and spread over the folds of (accuracy, macro-F1)."""
    return {
        "accuracy_mean": float(np.mean([a for a, _ in vals])),
        "accuracy_std": float(np.std([a for a, _ in vals])),
        "macro_f1_mean": float(np.mean([f for _, f in vals])),
        "macro_f1_std": float(np.std([f for _, f in vals])),
    }


def cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
            "fused_minus_lexical": 100 * (acc.get("fused", 0.0) - acc.get("lexical", 0.0)),
            "fused_minus_lexical_f1": 100 * (f1.get("fused", 0.0) - f1.get("lexical", 0.0)),
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
