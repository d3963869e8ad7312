"""Uncertainty on top of calibrated probabilities: split-conformal prediction sets, the abstain rule, and
per-class confidence thresholds for an automation target. Pure numpy.

**Prediction sets (split conformal, class-conditional where a class has the rows).** On calibration rows the
model never trained on, the nonconformity of a row is ``s = 1 − p(true label)`` (the "least ambiguous
set-valued classifier" score, Sadinle et al. 2019: of the usual scores it gives the smallest sets on
average; APS gives better conditional coverage at the price of larger sets, and the class-conditional
split below already buys conditional coverage where it matters). With ``n`` calibration scores and coverage
``1 − α`` the threshold is the ``k``-th smallest score, ``k = ceil((n + 1)(1 − α))`` (the finite-sample
correction: ``q̂`` is the empirical quantile at level ``ceil((n + 1)(1 − α)) / n``); when ``k > n`` there is
no finite threshold and the set is every label. The set of an answer is every label ``y`` whose
``1 − p(y) ≤ q̂_y``, i.e. ``p(y) ≥ t_y = 1 − q̂_y``, listed by probability. Mondrian: a class with at least
``min_class_rows`` hold-out rows gets its own ``q̂_c`` from its calibration rows alone (coverage ≥ 1 − α
holds for that class); the others share the global ``q̂`` over all rows (marginal coverage). The gate counts
hold-out rows, not pooled ones, on purpose: a per-class threshold guarantees each class its coverage, so the
marginal coverage of many small Mondrian classes sits above the target (on banking77, 77 classes of ≈117
pooled rows each: 92.5 % against 91.0 % with the one global threshold, target 90 %); a class needs to be
large (≈300 rows at a 10 % hold-out) before its own threshold is worth that.

The calibration rows are the hold-out and, when the fusion was cross-fitted, every training row's
out-of-fold probability (``extra`` of :func:`calibrate_conformal`): models that never saw the row scored it,
as a new vacancy is scored. Sixty-six hold-out rows (a 614-posting set) leave the realised coverage of one
calibration a few points either side of the target; the pooled rows narrow that to about one.

**A set may be empty**: no label reaches its threshold. It is served as it is (the answer abstains, its top
label being below its class threshold) — filling it with the top label would lift the coverage to about the
model's accuracy wherever that exceeds the target (banking77: 93 % accuracy against a 90 % target), and the
guarantee would no longer say what the sets cover.

**The abstain rule** (``UncertaintyRule.decide``), in order:

1. confidence below ``floor`` (the global ``JOBCLASS_ABSTAIN_THRESHOLD``, kept as a floor): abstain;
2. with an operating point (per-class thresholds chosen for a target accuracy, see below): abstain when
   the confidence is below the predicted class's automation threshold, otherwise answer;
3. without one: abstain when the prediction set has more than one label, or the confidence is below the
   predicted class's conformal threshold (the top label is not in the set on its own merit).

**Automation thresholds** (``automation_thresholds``): per predicted class, a two-parameter logistic
calibration of "this answer is right" on the logit of the confidence, ``P(right) = σ(a_c + b_c·logit(p))``,
fitted on the hold-out with an L2 pull towards the global fit worth ``SHRINK_ROWS`` rows (a class with few
answers stays near the global curve). Every answer gets its class's estimate; the lowest cut ``λ`` on the
estimate whose automated answers reach the target accuracy on the hold-out is chosen, and each class's
threshold is the confidence where its curve crosses ``λ``. Where a class's confidence means less than
elsewhere (over-confident classes), its threshold rises; where it means more, it falls. If that automates
less of the hold-out than one global threshold at the same target (``global_threshold``), the global
threshold is used for every class: on the hold-out the per-class rule never automates less. (A direct
greedy search over per-class prefixes automated 30 % vs 16 % on a synthetic hold-out but fell from 80 % to
77 % accuracy on fresh rows: it picks noise. The smoothed fit holds its accuracy out of sample, see
tests/unit/test_conformal.py.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_CLASS_ROWS = 30
EPS = 1e-9  # probabilities compared against thresholds with this slack (1 − (1 − p) is not always p)
NEVER = 1.0 + 1e-6  # the automation threshold of a class that automates nothing
SHRINK_ROWS = 20.0  # automation thresholds: a class's calibration is pulled towards the global one by this many rows
MIN_SLOPE = 1e-3
CURVE_SHARES: tuple[float, ...] = tuple(i / 20 for i in range(1, 21))  # 5 %, 10 %, … 100 % automated


# ---- conformal ----------------------------------------------------------------------------------
def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal threshold on nonconformity scores: the ``ceil((n + 1)·coverage)``-th smallest
    score, ``inf`` when that rank exceeds ``n`` (too few rows for the coverage: the set is every label)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), not {coverage}")
    n = len(scores)
    if n == 0:
        return math.inf
    k = math.ceil((n + 1) * coverage - 1e-12)
    if k > n:
        return math.inf
    return float(np.sort(np.asarray(scores, dtype=np.float64))[k - 1])


@dataclass(frozen=True)
class ConformalCalibration:
    """Per-class probability thresholds ``t_c`` (a label is in the set when ``p ≥ t_c``)."""

    coverage: float
    n: int
    global_threshold: float
    thresholds: np.ndarray  # one per class
    mondrian: np.ndarray  # bool per class: its own threshold (else the global one)
    min_class_rows: int = MIN_CLASS_ROWS

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        return {
            "method": "split conformal, score 1 - p(true), class-conditional (Mondrian) where a class has rows",
            "coverage": self.coverage,
            "n": self.n,
            "min_class_rows": self.min_class_rows,
            "global_threshold": self.global_threshold,
            "class_thresholds": {lab: float(t) for lab, t in zip(labels, self.thresholds, strict=True)},
            "mondrian_classes": [lab for lab, m in zip(labels, self.mondrian, strict=True) if m],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], labels: Sequence[str]) -> ConformalCalibration:
        g = float(d["global_threshold"])
        per = d.get("class_thresholds", {})
        mondrian = set(d.get("mondrian_classes", []))
        return cls(
            coverage=float(d["coverage"]),
            n=int(d.get("n", 0)),
            global_threshold=g,
            thresholds=np.array([float(per.get(lab, g)) for lab in labels], dtype=np.float64),
            mondrian=np.array([lab in mondrian for lab in labels], dtype=bool),
            min_class_rows=int(d.get("min_class_rows", MIN_CLASS_ROWS)),
        )


def calibrate_conformal(
    probs: np.ndarray,
    y: np.ndarray,
    coverage: float,
    *,
    min_class_rows: int = MIN_CLASS_ROWS,
    mondrian: bool = True,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> ConformalCalibration:
    """Thresholds from calibration probabilities ``probs`` (rows × classes) and true classes ``y``;
    ``extra``: more calibration rows as ``(p_true, y)`` (each row's probability of its true class and the
    class: e.g. out-of-fold rows, whose other probabilities the thresholds do not need). A class gets its
    own threshold when it has ``min_class_rows`` rows in ``probs`` (the hold-out); that threshold is then
    computed from all its rows, ``extra`` included."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    n_classes = probs.shape[1]
    scores = 1.0 - probs[np.arange(len(y)), y]
    held = np.bincount(y, minlength=n_classes)  # the gate for a class's own threshold: its hold-out rows
    if extra is not None:
        p_true, y_extra = np.asarray(extra[0], dtype=np.float64), np.asarray(extra[1], dtype=np.int64)
        if p_true.shape != y_extra.shape:
            raise ValueError("extra calibration rows: p_true and y must have the same length")
        scores, y = np.concatenate([scores, 1.0 - p_true]), np.concatenate([y, y_extra])
    q = conformal_quantile(scores, coverage)
    g = max(0.0, 1.0 - q)
    thresholds = np.full(n_classes, g, dtype=np.float64)
    own = np.zeros(n_classes, dtype=bool)
    if mondrian:
        for c in range(n_classes):
            rows = scores[y == c]
            if held[c] >= min_class_rows:
                thresholds[c] = max(0.0, 1.0 - conformal_quantile(rows, coverage))
                own[c] = True
    return ConformalCalibration(coverage, len(y), g, thresholds, own, min_class_rows)


def true_class_probs(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's probability of its true class (what a calibration row contributes)."""
    probs, y = np.asarray(probs), np.asarray(y, dtype=np.int64)
    return np.asarray(probs[np.arange(len(y)), y], dtype=np.float32)


def in_set(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean (rows × classes): the label is in the row's set on its own merit (``p ≥ t``)."""
    return np.asarray(probs) >= np.asarray(thresholds)[None, :] - EPS


def prediction_sets(probs: np.ndarray, thresholds: np.ndarray) -> list[list[int]]:
    """Each row's set, most probable first; empty when no label reaches its threshold."""
    probs = np.asarray(probs)
    member = in_set(probs, thresholds)
    out = []
    for i in range(len(probs)):
        idx = np.flatnonzero(member[i])
        out.append([int(j) for j in idx[np.argsort(-probs[i, idx], kind="stable")]])
    return out


def set_metrics(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Empirical coverage (true label in the set), mean set size, the share of singleton sets and of empty
    ones."""
    probs, y = np.asarray(probs), np.asarray(y)
    if len(probs) == 0:
        return {"empirical_coverage": 0.0, "mean_set_size": 0.0, "singleton_share": 0.0, "empty_share": 0.0, "n": 0}
    member = in_set(probs, thresholds)
    sizes = member.sum(axis=1)
    return {
        "empirical_coverage": float(member[np.arange(len(y)), y].mean()),
        "mean_set_size": float(sizes.mean()),
        "singleton_share": float((sizes == 1).mean()),
        "empty_share": float((sizes == 0).mean()),
        "n": len(probs),
    }


# ---- automation thresholds -------------------------------------------------------------------------
def global_threshold(probs: np.ndarray, y: np.ndarray, target: float) -> float:
    """The lowest single confidence threshold whose automated answers (confidence ≥ it) reach ``target``
    accuracy on (probs, y); ``NEVER`` when no threshold does."""
    return _lowest_cut(*_answers(probs, y), target)


def _lowest_cut(score: np.ndarray, correct: np.ndarray, target: float) -> float:
    """The lowest cut on ``score`` whose rows at or above it are right at a rate ≥ ``target`` (``NEVER``: none)."""
    order = np.argsort(-score, kind="stable")
    score, correct = score[order], correct[order]
    ok = _cut_points(score)
    acc = np.cumsum(correct) / np.arange(1, len(score) + 1)
    good = np.flatnonzero(ok & (acc >= target - 1e-12))
    return float(score[good[-1]]) if len(good) else NEVER


def automation_thresholds(
    probs: np.ndarray, y: np.ndarray, target: float, *, shrink: float = SHRINK_ROWS
) -> np.ndarray:
    """Per-class confidence thresholds (by predicted class) for automated answers of ``target`` accuracy on
    (probs, y); see the module docstring. ``NEVER`` for a class that automates nothing."""
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    conf, correct = _answers(probs, y)
    pred = probs.argmax(axis=1)
    z = _logit(conf)
    a0, b0 = _fit_logistic(z, correct.astype(np.float64), np.array([0.0, 1.0]), 0.0)
    coef = np.tile([a0, b0], (n_classes, 1))
    for c in np.unique(pred):
        rows = pred == c
        coef[c] = _fit_logistic(z[rows], correct[rows].astype(np.float64), np.array([a0, b0]), shrink)
    coef[:, 1] = np.maximum(coef[:, 1], MIN_SLOPE)
    estimate = _sigmoid(coef[pred, 0] + coef[pred, 1] * z)  # P(correct) of each answer, per class
    lam = _lowest_cut(estimate, correct, target)
    if lam >= NEVER:
        return np.full(n_classes, NEVER)
    thresholds = _sigmoid((_logit(np.array([lam]))[0] - coef[:, 0]) / coef[:, 1])
    chosen = estimate >= lam
    for c in np.unique(pred):  # at least the chosen hold-out answers, whatever the rounding of the inversion
        rows = pred == c
        picked = conf[rows & chosen]
        # not the least confident chosen answer itself: with a dozen answers per class that overfits upwards
        thresholds[c] = (
            min(thresholds[c], picked.min()) if len(picked) else max(thresholds[c], conf[rows].max() + 2 * EPS)
        )
    single = global_threshold(probs, y, target)
    share = lambda thr: float(automated(probs, thr).mean())  # noqa: E731
    if single < NEVER and share(np.full(n_classes, single)) > share(thresholds):
        return np.full(n_classes, single)  # the per-class rule never automates less than one threshold
    return thresholds


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _fit_logistic(z: np.ndarray, t: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    """(a, b) of ``P(correct) = σ(a + b·z)`` by Newton's method, with an L2 pull of ``strength`` (in rows)
    towards ``prior``: a class with few hold-out answers stays near the global fit."""
    w = prior.astype(np.float64).copy()
    x = np.stack([np.ones_like(z), z], axis=1)
    for _ in range(50):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - t) + strength * (w - prior)
        hess = (x * (p * (1 - p))[:, None]).T @ x + (strength + 1e-6) * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def automated(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean per row: automated (confidence ≥ the predicted class's threshold)."""
    probs = np.asarray(probs)
    pred = probs.argmax(axis=1)
    return probs.max(axis=1) >= np.asarray(thresholds)[pred] - EPS


def automation_metrics(probs: np.ndarray, y: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    """Share of rows automated under per-class ``thresholds`` and the accuracy of the automated part."""
    auto = automated(probs, thresholds)
    pred = np.asarray(probs).argmax(axis=1)
    right = pred == np.asarray(y)
    return {
        "share_automated": float(auto.mean()) if len(auto) else 0.0,
        "accuracy_automated": float(right[auto].mean()) if auto.any() else None,  # type: ignore[dict-item]
        "n": len(auto),
    }


def automation_curve(
    probs: np.ndarray, y: np.ndarray, shares: Sequence[float] = CURVE_SHARES
) -> list[dict[str, float]]:
    """Share automated vs accuracy of the automated part under one global threshold: for each share, the
    most confident ``share`` of the rows and their accuracy (and the threshold it takes)."""
    conf, correct = _answers(probs, y)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    out = []
    for share in shares:
        k = max(1, min(len(conf), round(share * len(conf)))) if len(conf) else 0
        if k == 0:
            continue
        out.append(
            {"share": float(k / len(conf)), "accuracy": float(correct[:k].mean()), "threshold": float(conf[k - 1])}
        )
    return out


def _answers(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    return probs.max(axis=1), probs.argmax(axis=1) == np.asarray(y)


def _cut_points(sorted_conf: np.ndarray) -> np.ndarray:
    """Positions (in a descending sequence) after which a threshold can cut: the next value is lower."""
    ok = np.ones(len(sorted_conf), dtype=bool)
    if len(sorted_conf) > 1:
        ok[:-1] = sorted_conf[1:] < sorted_conf[:-1] - 1e-15
    return ok


# ---- the rule served with a model -------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    prediction_set: list[int]
    abstained: bool
    reason: str | None  # why it abstained (see UncertaintyRule.decide); None: it answered
    margin: float  # top-1 minus top-2 probability


@dataclass(frozen=True)
class UncertaintyRule:
    """What a model version serves with: its conformal thresholds and its automation thresholds (when an
    operating point was chosen); the floor comes with each call (a setting). ``conformal`` None: a model
    trained before prediction sets existed; its set is the top label and only the floor applies."""

    conformal: ConformalCalibration | None
    automation: np.ndarray | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any] | None, labels: Sequence[str]) -> UncertaintyRule:
        """From a model version's ``metadata["uncertainty"]`` (see ``app.services.uncertainty``)."""
        block = (meta or {}).get("uncertainty") or {}
        conformal = ConformalCalibration.from_dict(block["conformal"], labels) if block.get("conformal") else None
        op = block.get("operating_point") or {}
        automation = None
        if op.get("class_thresholds"):
            per = op["class_thresholds"]
            default = float(op.get("default_threshold", NEVER))
            automation = np.array([float(per.get(lab, default)) for lab in labels], dtype=np.float64)
        return cls(conformal, automation)

    def decide(self, probs: np.ndarray, floor: float = 0.0) -> list[Decision]:
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) == 0:
            return []
        top = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        part = np.sort(probs, axis=1)
        margins = part[:, -1] - (part[:, -2] if probs.shape[1] > 1 else 0.0)
        if self.conformal is not None:
            sets = prediction_sets(probs, self.conformal.thresholds)
            top_ok = conf >= self.conformal.thresholds[top] - EPS
        else:
            sets, top_ok = [[int(t)] for t in top], np.ones(len(top), dtype=bool)
        out = []
        for i in range(len(probs)):
            reason: str | None = None
            if conf[i] < floor:
                reason = "below_floor"
            elif self.automation is not None:
                if conf[i] < self.automation[top[i]] - EPS:
                    reason = "below_automation_threshold"
            elif len(sets[i]) > 1:
                reason = "set_size"
            elif not top_ok[i]:
                reason = "below_class_threshold"
            out.append(Decision(sets[i], reason is not None, reason, float(margins[i])))
        return out
