"""Fuse the head's probabilities, the kNN vote and the lexical model; tune the blend on held-out data.

``p = α·cal(p_head, T_head) + β·cal(p_lex, T_lex) + (1−α−β)·p_knn``, then temperature-calibrated:
``p ∝ p^(1/T)``. Each probabilistic signal is first calibrated on its own (``cal(p, T) ∝ p^(1/T)``, T
fitted for log loss on the tuning rows): a TF-IDF logistic regression is far less confident than the
embedding head at the same accuracy, so without it a blend weight would say little about how much a
signal counts. Below the
abstain threshold the answer is "uncertain". A signal that has nothing to say for a row (no neighbours:
the index is down; no known n-gram: the lexical model) is left out of that row and the other weights
are renormalised, so one empty signal never drags an answer towards the uniform distribution.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.knn import knn_vote
from models.metrics import accuracy, log_loss, macro_f1

ALPHAS: tuple[float, ...] = tuple(round(a * 0.1, 1) for a in range(11))
BETAS: tuple[float, ...] = ALPHAS  # the lexical weight; α + β ≤ 1
KS: tuple[int, ...] = (3, 5, 10, 20, 30)
KNN_TEMPERATURES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.3)
CALIBRATION_TEMPERATURES: tuple[float, ...] = (0.25, 0.35, 0.5, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0, 3.0)
# A TF-IDF logistic regression over many classes can be very under-confident: its grid reaches lower.
SIGNAL_TEMPERATURES: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, *CALIBRATION_TEMPERATURES)


@dataclass(frozen=True)
class FusionParams:
    alpha: float = 0.5  # head weight
    k: int = 10
    knn_temperature: float = 0.05
    temperature: float = 1.0
    abstain_threshold: float = 0.0
    beta: float = 0.0  # lexical weight (0 for models saved before the lexical signal existed)
    vote: str = "cosine"  # the neighbours' vote weight: "cosine" similarity, or "rank" (the hybrid RRF score)
    head_temperature: float = 1.0  # each signal's own calibration before the blend (1.0 for older models)
    lexical_temperature: float = 1.0

    @property
    def knn_weight(self) -> float:
        return max(0.0, 1.0 - self.alpha - self.beta)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def blend(
    p_head: np.ndarray,
    p_knn: np.ndarray | None,
    alpha: float,
    p_lex: np.ndarray | None = None,
    beta: float = 0.0,
    *,
    knn_ok: np.ndarray | None = None,
    lex_ok: np.ndarray | None = None,
) -> np.ndarray:
    """``α·p_head + β·p_lex + (1−α−β)·p_knn`` row by row, leaving out a missing signal (``None``, or
    False in its mask) and renormalising the remaining weights; a row whose weights all vanish falls
    back to the head."""
    n = p_head.shape[0]
    w_head = np.full(n, alpha, dtype=np.float64)
    w_lex = np.zeros(n) if p_lex is None else np.where(_mask(lex_ok, n), beta, 0.0)
    w_knn = np.zeros(n) if p_knn is None else np.where(_mask(knn_ok, n), max(0.0, 1.0 - alpha - beta), 0.0)
    total = w_head + w_lex + w_knn
    none = total <= 0
    w_head, total = np.where(none, 1.0, w_head), np.where(none, 1.0, total)
    out = (w_head / total)[:, None] * p_head
    if p_lex is not None:
        out = out + (w_lex / total)[:, None] * p_lex
    if p_knn is not None:
        out = out + (w_knn / total)[:, None] * p_knn
    return out


def _mask(mask: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def fuse(
    p_head: np.ndarray,
    p_knn: np.ndarray | None,
    params: FusionParams,
    p_lex: np.ndarray | None = None,
    *,
    knn_ok: np.ndarray | None = None,
    lex_ok: np.ndarray | None = None,
) -> np.ndarray:
    p_head = calibrate(p_head, params.head_temperature)
    p_lex = None if p_lex is None else calibrate(p_lex, params.lexical_temperature)
    p = blend(p_head, p_knn, params.alpha, p_lex, params.beta, knn_ok=knn_ok, lex_ok=lex_ok)
    return calibrate(p, params.temperature)


def fit_temperature(
    probs: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray | None = None,
    grid: Sequence[float] = CALIBRATION_TEMPERATURES,
) -> float:
    """The temperature of ``grid`` with the lowest log loss on ``rows`` (all rows by default)."""
    if rows is not None:
        probs, y = probs[rows], y[rows]
    if len(y) == 0:
        return 1.0
    return min(grid, key=lambda temp: log_loss(calibrate(probs, temp), y))


@dataclass(frozen=True)
class TuningResult:
    params: FusionParams
    accuracy: float
    macro_f1: float
    head_accuracy: float
    knn_accuracy: float
    lexical_accuracy: float | None = None
    # the fused probabilities of the tuning rows under ``params`` (out-of-fold when tuned on cross-fitted
    # predictions: what prediction sets can be calibrated on beside the hold-out)
    probs: np.ndarray | None = field(default=None, repr=False, compare=False)


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
    p_lex: np.ndarray | None = None,
    lex_ok: np.ndarray | None = None,
    betas: Sequence[float] = BETAS,
    extra_votes: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> TuningResult:
    """Grid-search α, β (with ``p_lex``), k and the vote temperature for accuracy + macro-F1 (ties:
    lower log loss), then fit the calibration temperature for log loss. The grid's corners are each
    signal alone (``α = 1``: the head; ``β = 1``: the lexical model; ``α = β = 0``: the vote), so on this
    data the result is never worse than any of them. ``neighbour_labels``/``neighbour_scores`` are the
    cosine-weighted vote's arrays; ``extra_votes`` adds other weightings of the same candidates (e.g.
    ``{"rank": (labels, rrf_scores)}`` from a hybrid query), and the best one is kept as ``vote``."""
    head_temperature = fit_temperature(p_head, y, grid=SIGNAL_TEMPERATURES)
    lexical_temperature = 1.0 if p_lex is None else fit_temperature(p_lex, y, lex_ok, SIGNAL_TEMPERATURES)
    p_head_raw, p_lex_raw = p_head, p_lex
    p_head = calibrate(p_head, head_temperature)
    p_lex = None if p_lex is None else calibrate(p_lex, lexical_temperature)
    best_key: tuple[float, float] | None = None
    best = FusionParams()
    knn_cache: dict[tuple[str, int, float], np.ndarray] = {}
    votes = {"cosine": (neighbour_labels, neighbour_scores), **(extra_votes or {})}
    for vote, (nb_labels, nb_scores) in votes.items():
        max_k = nb_labels.shape[1]
        for k, t in itertools.product(ks, knn_temperatures):
            if k > max_k and k != ks[0]:
                continue
            knn_cache[(vote, k, t)] = knn_vote(nb_labels, nb_scores, n_classes, k=k, temperature=t)
    weights = [(a, 0.0) for a in alphas] if p_lex is None else _simplex(alphas, betas)
    for (vote, k, t), p_knn in knn_cache.items():
        for alpha, beta in weights:
            p = blend(p_head, p_knn, alpha, p_lex, beta, lex_ok=lex_ok)
            pred = p.argmax(axis=1)
            key = (accuracy(y, pred) + macro_f1(y, pred, n_classes), -log_loss(p, y))
            if best_key is None or key > best_key:
                best_key, best = key, FusionParams(alpha=alpha, k=k, knn_temperature=t, beta=beta, vote=vote)
    best_knn = knn_cache[(best.vote, best.k, best.knn_temperature)]
    p_best = blend(p_head, best_knn, best.alpha, p_lex, best.beta, lex_ok=lex_ok)
    temperature = fit_temperature(p_best, y)
    params = FusionParams(
        alpha=best.alpha,
        k=best.k,
        knn_temperature=best.knn_temperature,
        temperature=temperature,
        abstain_threshold=abstain_threshold,
        beta=best.beta,
        vote=best.vote,
        head_temperature=head_temperature,
        lexical_temperature=lexical_temperature,
    )
    p_head, p_lex = p_head_raw, p_lex_raw
    p_fused = fuse(p_head, best_knn, params, p_lex, lex_ok=lex_ok)
    pred = p_fused.argmax(axis=1)
    return TuningResult(
        params=params,
        accuracy=accuracy(y, pred),
        macro_f1=macro_f1(y, pred, n_classes),
        head_accuracy=accuracy(y, p_head.argmax(axis=1)),
        knn_accuracy=accuracy(y, best_knn.argmax(axis=1)),
        lexical_accuracy=None if p_lex is None else accuracy(y, p_lex.argmax(axis=1)),
        probs=p_fused,
    )


def _simplex(alphas: Sequence[float], betas: Sequence[float]) -> list[tuple[float, float]]:
    """Every (α, β) of the two grids with α + β ≤ 1: the vote takes the rest."""
    return [(a, b) for a in alphas for b in betas if a + b <= 1.0 + 1e-9]
