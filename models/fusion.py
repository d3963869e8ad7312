"""Fuse the head's probabilities with the kNN vote; tune the blend on validation data.

``p = α·p_head + (1−α)·p_knn``, then temperature-calibrated: ``p ∝ p^(1/T)``. Below the abstain
threshold the answer is "uncertain".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from models.knn import knn_vote
from models.metrics import accuracy, log_loss, macro_f1

ALPHAS: tuple[float, ...] = tuple(round(a * 0.1, 1) for a in range(11))
KS: tuple[int, ...] = (3, 5, 10, 20, 30)
KNN_TEMPERATURES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.3)
CALIBRATION_TEMPERATURES: tuple[float, ...] = (0.25, 0.35, 0.5, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0, 3.0)


@dataclass(frozen=True)
class FusionParams:
    alpha: float = 0.5
    k: int = 10
    knn_temperature: float = 0.05
    temperature: float = 1.0
    abstain_threshold: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def fuse(p_head: np.ndarray, p_knn: np.ndarray, params: FusionParams) -> np.ndarray:
    return calibrate(params.alpha * p_head + (1.0 - params.alpha) * p_knn, params.temperature)


@dataclass(frozen=True)
class TuningResult:
    params: FusionParams
    accuracy: float
    macro_f1: float
    head_accuracy: float
    knn_accuracy: float


def tune(
    p_head: np.ndarray,
    neighbour_labels: np.ndarray,
    neighbour_scores: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    alphas: Sequence[float] = ALPHAS,
    ks: Sequence[int] = KS,
    knn_temperatures: Sequence[float] = KNN_TEMPERATURES,
    abstain_threshold: float = 0.0,
) -> TuningResult:
    """Grid-search α, k and the vote temperature for accuracy + macro-F1 (ties: lower log loss),
    then fit the calibration temperature for log loss. ``α = 1`` is the head alone and ``α = 0`` the
    vote alone, so on this data the result is never worse than either."""
    best_key: tuple[float, float] | None = None
    best = FusionParams()
    knn_cache: dict[tuple[int, float], np.ndarray] = {}
    max_k = neighbour_labels.shape[1]
    for k, t in itertools.product(ks, knn_temperatures):
        if k > max_k and k != ks[0]:
            continue
        knn_cache[(k, t)] = knn_vote(neighbour_labels, neighbour_scores, n_classes, k=k, temperature=t)
    for (k, t), p_knn in knn_cache.items():
        for alpha in alphas:
            p = alpha * p_head + (1 - alpha) * p_knn
            pred = p.argmax(axis=1)
            key = (accuracy(y, pred) + macro_f1(y, pred, n_classes), -log_loss(p, y))
            if best_key is None or key > best_key:
                best_key, best = key, FusionParams(alpha=alpha, k=k, knn_temperature=t)
    p_best = fuse(p_head, knn_cache[(best.k, best.knn_temperature)], best)
    temperature = min(CALIBRATION_TEMPERATURES, key=lambda temp: log_loss(calibrate(p_best, temp), y))
    params = FusionParams(
        alpha=best.alpha,
        k=best.k,
        knn_temperature=best.knn_temperature,
        temperature=temperature,
        abstain_threshold=abstain_threshold,
    )
    pred = fuse(p_head, knn_cache[(best.k, best.knn_temperature)], params).argmax(axis=1)
    return TuningResult(
        params=params,
        accuracy=accuracy(y, pred),
        macro_f1=macro_f1(y, pred, n_classes),
        head_accuracy=accuracy(y, p_head.argmax(axis=1)),
        knn_accuracy=accuracy(y, knn_cache[(best.k, best.knn_temperature)].argmax(axis=1)),
    )
