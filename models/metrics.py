"""Classification metrics: accuracy, macro-F1, per-class scores, confusion matrix, calibration, and the
hierarchy-aware ones (accuracy per level, the lowest-common-ancestor score)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.hierarchy import Hierarchy


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true = np.asarray(y_true)
    return float(np.mean(y_true == np.asarray(y_pred))) if len(y_true) else 0.0


def per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    cm = confusion_matrix(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true`` (absent classes would only add zeros)."""
    scores = per_class(y_true, y_pred, n_classes)
    present = scores["support"] > 0
    return float(scores["f1"][present].mean()) if present.any() else 0.0


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """ECE: mean |confidence − accuracy| over equal-width confidence bins, weighted by bin size."""
    probs = np.asarray(probs)
    if len(probs) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(ece)


def log_loss(probs: np.ndarray, y_true: np.ndarray) -> float:
    picked = np.asarray(probs)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def coverage_at(probs: np.ndarray, y_true: np.ndarray, threshold: float) -> dict[str, float]:
    """Share of items answered (confidence ≥ threshold) and the accuracy on those."""
    confidence = probs.max(axis=1)
    answered = confidence >= threshold
    acc = float(np.mean(probs[answered].argmax(axis=1) == np.asarray(y_true)[answered])) if answered.any() else 0.0
    return {
        "threshold": threshold,
        "coverage": float(answered.mean()) if len(probs) else 0.0,
        "accuracy": acc,
    }


def summary(probs: np.ndarray, y_true: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    y_pred = np.asarray(probs).argmax(axis=1)
    scores = per_class(y_true, y_pred, len(labels))
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(labels)),
        "ece": expected_calibration_error(probs, y_true),
        "per_class_f1": {
            label: float(f1) for label, f1, n in zip(labels, scores["f1"], scores["support"], strict=True) if n > 0
        },
    }


def level_accuracy(
    hierarchy: Hierarchy, y_true: Sequence[str], y_pred: Sequence[str | None]
) -> dict[int, dict[str, float]]:
    """Per level (0 = the roots): the share of rows whose prediction has the true label's node at that level,
    over the rows whose true label reaches it. A prediction shallower than the level (an answer at a parent,
    or none) is wrong there."""
    out: dict[int, dict[str, float]] = {}
    for level in range(hierarchy.n_levels):
        hits = n = 0
        for true, pred in zip(y_true, y_pred, strict=True):
            node = hierarchy.ancestor_at(true, level)
            if node is None:
                continue
            n += 1
            hits += pred is not None and hierarchy.ancestor_at(pred, level) == node
        if n:
            out[level] = {"accuracy": hits / n, "n": float(n)}
    return out


def lca_score(hierarchy: Hierarchy, y_true: Sequence[str], y_pred: Sequence[str | None]) -> float:
    """Mean over rows of |path(LCA(pred, true))| / |path(true)| (paths counted in nodes from the root): 1 for
    the exact label, partial credit for an answer in the right branch (a correct parent included), 0 for a
    different root or no answer."""
    scores = []
    for true, pred in zip(y_true, y_pred, strict=True):
        common = hierarchy.lca(true, pred) if pred is not None else None
        scores.append(0.0 if common is None else len(hierarchy.path(common)) / len(hierarchy.path(true)))
    return float(np.mean(scores)) if scores else 0.0


def confusion_figure(cm: np.ndarray, labels: Sequence[str], title: str = "") -> Any:
    """A matplotlib figure of the confusion matrix: rows normalised for colour, counts written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    size = max(6.0, 0.45 * n + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    row_sums = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(cm / row_sums, cmap="Blues", vmin=0, vmax=1)
    short = [lab if len(lab) <= 28 else lab[:26] + "…" for lab in labels]
    ax.set_xticks(range(n), short, rotation=90, fontsize=7)
    ax.set_yticks(range(n), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                dark = cm[i, j] / row_sums[i, 0] > 0.5
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6, color="white" if dark else "black")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path | str, title: str = "") -> None:
    import matplotlib.pyplot as plt

    fig = confusion_figure(cm, labels, title)
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
