"""Champion against challenger: who is the champion, how both are scored, and the promote/keep decision.

Train, retrain, upgrade-encoder, rollback and the model report all score a model the same way: in the
served head variant, on the id-hashed hold-out (``app.services.dataset.holdout_of``), with neighbours
drawn from the training part. A fair comparison depends on that being one function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.errors import IncompatibleModelError
from app.runtime import LoadedModel, Runtime
from app.services.dataset import HoldOut
from models.classifier import FusedClassifier
from models.compress import Variant
from models.metrics import summary
from models.training import TextInputs, predict_with_corpus

Scores = dict[str, float]  # accuracy and macro-F1 on the shared hold-out


def champion(runtime: Runtime) -> tuple[LoadedModel | None, str]:
    """The active model as served, or None and why."""
    if runtime.has_model:
        return runtime.model, ""
    try:
        loaded = runtime.load_active_model()
    except IncompatibleModelError as exc:  # trained on another embedder: the challenger is the migration path
        return None, f"the active model cannot serve these embeddings ({exc})"
    return (loaded, "") if loaded is not None else (None, "no model was active")


def scores(summary: dict[str, Any]) -> Scores:
    """The two numbers a promotion compares, from a ``models.metrics.summary``."""
    return {"accuracy": float(summary["accuracy"]), "macro_f1": float(summary["macro_f1"])}


def as_served(classifier: FusedClassifier, variant: Variant) -> FusedClassifier:
    """``classifier`` in the head variant the service serves."""
    return classifier if classifier.variant == variant else classifier.with_variant(variant)


def score_on_holdout(
    classifier: FusedClassifier, x: np.ndarray, y: np.ndarray, split: HoldOut, inputs: TextInputs | None = None
) -> Scores:
    """Scores on the hold-out rows of (x, y), neighbours drawn from the training rows (by the hybrid
    query when ``inputs`` carry the rows' texts and BM25 vectors)."""
    return scores_of(holdout_probabilities(classifier, x, y, split, inputs), y[split.val], classifier.labels)


def scores_of(probs: np.ndarray, y_val: np.ndarray, labels: Sequence[str]) -> Scores:
    """``score_on_holdout``'s numbers from hold-out probabilities already computed."""
    return scores(summary(probs, y_val, labels))


def holdout_probabilities(
    classifier: FusedClassifier, x: np.ndarray, y: np.ndarray, split: HoldOut, inputs: TextInputs | None = None
) -> np.ndarray:
    """The fused probabilities of the hold-out rows of (x, y), neighbours drawn from the training rows: what
    ``score_on_holdout`` scores and what the prediction sets are calibrated on (``app.services.uncertainty``)."""
    tr, va = split.train, split.val
    if inputs is None:
        return predict_with_corpus(classifier, x[va], x[tr], y[tr])
    return predict_with_corpus(classifier, x[va], x[tr], y[tr], inputs.take(va), inputs.take(tr))


def decide_promotion(
    champion: LoadedModel | None,
    why_none: str,
    labels: Sequence[str],
    challenger_scores: Scores,
    score_champion: Callable[[FusedClassifier], Scores],
    margin: float,
    *,
    n_val: int,
    challenger_name: str = "challenger",
) -> dict[str, Any]:
    """Promote when there is no comparable champion, or when the challenger's validation accuracy is at
    least the champion's minus ``margin`` (both scored by the caller on the same hold-out)."""
    champion_scores: Scores | None = None
    if champion is None:
        promoted, reason = True, why_none
    elif list(champion.classifier.labels) != list(labels):
        promoted, reason = True, f"the champion {champion.version} has another label set (taxonomy changed)"
    else:
        champion_scores = score_champion(champion.classifier)
        promoted = challenger_scores["accuracy"] >= champion_scores["accuracy"] - margin
        reason = (
            f"{challenger_name} accuracy {challenger_scores['accuracy']:.4f} "
            f"{'≥' if promoted else '<'} champion {champion_scores['accuracy']:.4f} − margin {margin:g}"
        )
    return {
        "champion": champion.version if champion else None,
        "promoted": promoted,
        "reason": reason,
        "margin": margin,
        "n_val": n_val,
        "challenger": challenger_scores,
        "champion_scores": champion_scores,
    }
