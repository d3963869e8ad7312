"""Fine-tuned encoder rows (``jobclass bench --finetune``): ``ft_head``, ``ft_knn``, ``ft_fused``… and their
like-for-like frozen baseline ``fused_holdout``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.bench.accuracy import (
    BenchConfig,
    Say,
    fit_classifier,
    indices,
    neighbours,
    score,
    variant_probs,
    with_tuning_split,
)
from app.services.dataset import Split
from indexing.cache import EmbeddingCache, encode_cached
from indexing.embed import Encoder
from models.classifier import FusedClassifier
from models.knn import knn_vote
from models.training import neighbour_arrays, refit_head

log = logging.getLogger(__name__)


def holdout_rows(
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
    clf_tr, report = fit_classifier(x_tr, y_tr, x_va, y_va, labels, cfg, crossfit=0)
    x_all, y_all = np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])
    clf = refit_head(clf_tr, x_all, y_all, report.best_epoch)
    nb_l, nb_s = neighbour_arrays(x_te, x_all, y_all)
    probs = {
        "head": clf.head_proba(x_te),
        "knn": knn_vote(nb_l, nb_s, len(labels), k=clf.params.k, temperature=clf.params.knn_temperature),
        **variant_probs(clf, x_te, neighbours(labels, nb_l, nb_s)),
    }
    return probs, clf


def finetune_targets(train: Split, val: Split, fine_labels: bool) -> tuple[list[str], list[str], dict[str, str] | None]:
    """The labels the encoder is fine-tuned on (training, validation) and, for fine labels, the fine → coarse
    map that model selection scores through."""
    if not fine_labels:
        return train.labels, val.labels, None
    if train.fine is None or val.fine is None:
        raise ValueError("fine-tuning on fine labels needs a label_fine column")
    return train.fine, val.fine, dict(zip(train.fine + val.fine, train.labels + val.labels, strict=True))


def _finetune_and_embed(
    train: Split,
    val: Split,
    test: Split,
    encoder: Encoder,
    ft_cfg: Any,
    fine_labels: bool,
    say: Say,
    workdir: Path | None,
) -> tuple[Any, tuple[np.ndarray, np.ndarray, np.ndarray], float]:
    """Fine-tune ``encoder`` on train (early stopping on val) in a temporary folder; the fine-tuning result,
    the three splits embedded with the tuned encoder, and the seconds that embedding took."""
    import tempfile

    from indexing.embed import SentenceEmbedder
    from indexing.finetune import finetune

    with tempfile.TemporaryDirectory(prefix="jobclass-ft-", dir=workdir) as tmp:
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
        return ft, (x_tr, x_va, x_te), time.perf_counter() - t0


def _finetune_record(
    ft: Any, encoder: Encoder, ft_cfg: Any, clf: FusedClassifier, embed_seconds: float, fine_labels: bool
) -> dict[str, Any]:
    return {
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
        "load_average": load_average(),
    }


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
    from indexing.finetune import FinetuneConfig

    train, val = with_tuning_split(train, val, cfg)
    labels = sorted(set(train.labels) | set(val.labels))
    index = {lab: i for i, lab in enumerate(labels)}
    ft_cfg = ft_cfg or FinetuneConfig(seed=cfg.seed)
    ft_cfg.chunking = getattr(encoder, "chunking", "sentences") == "sentences"
    say(f"[{cfg.name}] fine-tuning {encoder.name} on {len(train)} texts")
    ft, (x_tr, x_va, x_te), embed_seconds = _finetune_and_embed(
        train, val, test, encoder, ft_cfg, fine_labels, say, workdir
    )
    y_tr, y_va, y_te = (indices(s.labels, index) for s in (train, val, test))
    # The encoder has now been trained on x_tr's texts: out-of-fold predictions over them would flatter both
    # the head and the kNN (their classes were pulled together), so the head stops early and the fusion is
    # tuned on the validation split, which the encoder never took a gradient from — as a new vacancy.
    probs, clf = holdout_rows(x_tr, y_tr, x_va, y_va, x_te, labels, cfg)
    probs = {f"ft_{name}": p for name, p in probs.items()}
    # The like-for-like baseline: the frozen encoder under that same protocol (the `fused` row cross-fits over
    # the training split instead, which the fine-tuned encoder cannot do honestly).
    f_tr, f_va, f_te = (encode_cached(encoder, s.texts, cache) for s in (train, val, test))
    probs["fused_holdout"] = holdout_rows(f_tr, y_tr, f_va, y_va, f_te, labels, cfg)[0]["fused"]
    methods = {
        name: score(p, y_te, labels, cfg.abstain_threshold if "fused" in name else None) for name, p in probs.items()
    }
    return {"methods": methods, "finetune": _finetune_record(ft, encoder, ft_cfg, clf, embed_seconds, fine_labels)}


def load_average() -> list[float] | None:
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
