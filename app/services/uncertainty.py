"""Prediction sets, the abstain rule and the automation operating point of a model version, computed on the
id-hashed hold-out (``app.services.dataset.holdout_of``) and stored with the version (``metadata.json``,
key ``uncertainty``). See ``models.conformal`` for the method.

Train, retrain and upgrade-encoder compute it for every new version from the served classifier's hold-out
probabilities (neighbours drawn from the training part, as every comparison is scored); activating or
rolling back to a version serves that version's own block; ``jobclass calibrate`` recomputes it for the
active version (e.g. with another ``--target-accuracy``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.errors import InvalidInput, Unavailable
from app.runtime import LoadedModel, Runtime
from app.services.dataset import holdout_of, read_labelled
from models.conformal import (
    NEVER,
    UncertaintyRule,
    automated,
    automation_curve,
    automation_metrics,
    automation_thresholds,
    calibrate_conformal,
    global_threshold,
    set_metrics,
)

log = logging.getLogger(__name__)
RESAMPLES = 20  # random halvings of the hold-out for the out-of-sample coverage estimate
CURVE_TARGETS = (0.8, 0.85, 0.9, 0.95, 0.97, 0.99)


def _finite(value: float) -> float | None:
    return None if value >= NEVER else float(value)


def operating_point(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], target: float) -> dict[str, Any]:
    """Per-class automation thresholds for ``target`` accuracy on (probs, y) and, for comparison, one global
    threshold at the same target: share automated and accuracy of the automated part of each."""
    thresholds = automation_thresholds(probs, y, target)
    single = global_threshold(probs, y, target)
    per, glob = automation_metrics(probs, y, thresholds), automation_metrics(probs, y, np.full(len(labels), single))
    return {
        "target_accuracy": target,
        "class_thresholds": {lab: float(t) for lab, t in zip(labels, thresholds, strict=True)},
        "default_threshold": float(single),
        "share_automated": per["share_automated"],
        "accuracy_automated": per["accuracy_automated"],
        "global_threshold": _finite(single),
        "global_share_automated": glob["share_automated"],
        "global_accuracy_automated": glob["accuracy_automated"],
        "per_class": per_class_automation(probs, y, labels, thresholds),
    }


def per_class_automation(
    probs: np.ndarray, y: np.ndarray, labels: Sequence[str], thresholds: np.ndarray
) -> list[dict[str, Any]]:
    """For each predicted class: its hold-out answers, the share automated and their accuracy."""
    pred = np.asarray(probs).argmax(axis=1)
    auto = automated(probs, thresholds)
    right = pred == np.asarray(y)
    rows = []
    for c, label in enumerate(labels):
        mine = pred == c
        if not mine.any():
            continue
        done = mine & auto
        rows.append(
            {
                "label": label,
                "n": int(mine.sum()),
                "threshold": _finite(float(thresholds[c])),
                "share_automated": float(done.sum() / mine.sum()),
                "accuracy_automated": float(right[done].mean()) if done.any() else None,
                "accuracy": float(right[mine].mean()),
            }
        )
    return rows


def resampled_coverage(
    probs: np.ndarray,
    y: np.ndarray,
    coverage: float,
    min_class_rows: int,
    seed: int = 0,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float | None]:
    """Coverage and set size out of sample: calibrate on a random half of the hold-out (with the ``extra``
    rows), measure on the other half, ``RESAMPLES`` times (the calibration set itself would flatter)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    cov, size = [], []
    rows = max(1, min_class_rows // 2)  # a half of the hold-out: half the rows for a class's own threshold
    for _ in range(RESAMPLES if n >= 4 else 0):
        order = rng.permutation(n)
        a, b = order[: n // 2], order[n // 2 :]
        cal = calibrate_conformal(probs[a], y[a], coverage, min_class_rows=rows, extra=extra)
        m = set_metrics(probs[b], y[b], cal.thresholds)
        cov.append(m["empirical_coverage"])
        size.append(m["mean_set_size"])
    return {
        # None, not NaN, when the hold-out is too small to halve: the block is stored as JSON (Postgres refuses NaN)
        "empirical_coverage": float(np.mean(cov)) if cov else None,
        "empirical_coverage_std": float(np.std(cov)) if cov else None,
        "mean_set_size": float(np.mean(size)) if size else None,
        "resamples": len(cov),
    }


def compute_uncertainty(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    coverage: float,
    target_accuracy: float | None = None,
    min_class_rows: int = 30,
    floor: float = 0.0,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The ``uncertainty`` block of a model version from its hold-out probabilities and true classes;
    ``extra``: the training rows' out-of-fold ``(p_true, y)``, pooled with the hold-out for the conformal
    thresholds (``models.conformal``)."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    cal = calibrate_conformal(probs, y, coverage, min_class_rows=min_class_rows, extra=extra)
    if cal.global_threshold <= 0.0:
        log.warning(
            "%d calibration rows are too few for coverage %g: every label is in every prediction set and "
            "every answer abstains under the conformal rule (ingest more labelled data, or lower JOBCLASS_COVERAGE)",
            cal.n,
            coverage,
        )
    resampled = resampled_coverage(probs, y, coverage, min_class_rows, extra=extra)
    block: dict[str, Any] = {
        "conformal": {
            **cal.to_dict(labels),
            "n_holdout": len(y),
            "n_out_of_fold": 0 if extra is None else len(extra[1]),
            "holdout_too_small": bool(cal.global_threshold <= 0.0),
        },
        "holdout": {
            **set_metrics(probs, y, cal.thresholds),
            **{f"resampled_{k}": v for k, v in resampled.items()},
        },
        "operating_point": (
            operating_point(probs, y, labels, target_accuracy) if target_accuracy is not None else None
        ),
        "curve": automation_curve(probs, y),
        "curve_per_class_thresholds": [
            {"target": t, **automation_metrics(probs, y, automation_thresholds(probs, y, t))} for t in CURVE_TARGETS
        ],
    }
    rule = UncertaintyRule.from_metadata({"uncertainty": block}, labels)
    decisions = rule.decide(probs, floor)
    answered = np.array([not d.abstained for d in decisions], dtype=bool)
    right = probs.argmax(axis=1) == y
    block["rule"] = {
        "kind": "operating_point" if target_accuracy is not None else "conformal",
        "floor": floor,
        "share_automated": float(answered.mean()) if len(answered) else 0.0,
        "accuracy_automated": float(right[answered].mean()) if answered.any() else None,
    }
    return block


def summary(block: dict[str, Any] | None) -> dict[str, Any] | None:
    """The operating point a listing shows (``GET /v1/models``): target, share and accuracy automated,
    coverage target, empirical coverage and mean set size on the hold-out."""
    if not block or not block.get("conformal"):
        return None
    op = block.get("operating_point") or {}
    rule, hold = block.get("rule", {}), block.get("holdout", {})
    return {
        "rule": rule.get("kind", "conformal"),
        "target_accuracy": op.get("target_accuracy"),
        "share_automated": rule.get("share_automated"),
        "accuracy_automated": rule.get("accuracy_automated"),
        "global_share_automated": op.get("global_share_automated"),
        "global_accuracy_automated": op.get("global_accuracy_automated"),
        "coverage_target": block["conformal"]["coverage"],
        "empirical_coverage": hold.get("resampled_empirical_coverage"),
        "mean_set_size": hold.get("mean_set_size"),
        "n_holdout": block["conformal"].get("n_holdout", block["conformal"].get("n")),
        "n_calibration": block["conformal"].get("n"),
        "mondrian_classes": len(block["conformal"].get("mondrian_classes", [])),
    }


def uncertainty_for(
    runtime: Runtime,
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    target: float | None,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """``compute_uncertainty`` with the runtime's settings (coverage, minimum class rows, floor)."""
    s = runtime.settings
    return compute_uncertainty(
        probs,
        y,
        labels,
        coverage=s.coverage,
        target_accuracy=target,
        min_class_rows=s.conformal_min_class_rows,
        floor=s.abstain_threshold,
        extra=extra,
    )


def calibrate(runtime: Runtime, session: Session, target_accuracy: float | None) -> dict[str, Any]:
    """Recompute the active version's block on its hold-out (with ``target_accuracy``, or none: the conformal
    rule), store it in the version's metadata and serve it at once. Returns the new block."""
    from app.services.promotion import holdout_probabilities
    from app.services.training import text_inputs
    from indexing.cache import encode_cached

    loaded = runtime.model if runtime.has_model else runtime.load_active_model()
    if loaded is None:
        raise Unavailable("no trained model is active: run `jobclass train`")
    classifier = loaded.classifier
    data = read_labelled(session, classifier.labels)
    split = holdout_of(data, runtime.settings)
    if len(split.val) == 0 or len(split.train) == 0:
        raise InvalidInput("too few labelled vacancies for a hold-out: ingest more data")
    x = encode_cached(runtime.encoder, data.texts, runtime.cache)
    inputs = text_inputs(runtime, data.texts)
    probs = holdout_probabilities(classifier, x, data.y, split, inputs)
    extra = runtime.registry.calibration(loaded.version)  # the out-of-fold rows training pooled, if any
    block = uncertainty_for(runtime, probs, data.y[split.val], classifier.labels, target_accuracy, extra)
    meta = runtime.registry.update_metadata(loaded.version, uncertainty=block)
    with runtime.model_lock:
        current = runtime.model if runtime.has_model else None
        if current is not None and current.version == loaded.version:
            runtime.set_model(current.classifier, current.version, meta)
    log.info("calibrated %s: %s", loaded.version, summary(block))
    return {"model_version": loaded.version, **block}


def rule_of(loaded: LoadedModel) -> UncertaintyRule:
    return UncertaintyRule.from_metadata(loaded.metadata, loaded.classifier.labels)


# ---- the automation curve (jobclass report, the bench) ------------------------------------------------
AUTOMATION_TARGETS = (0.8, 0.85, 0.9, 0.95, 0.97, 0.99)


def automation_report(
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    choose_on: tuple[np.ndarray, np.ndarray] | None = None,
    targets: Sequence[float] = AUTOMATION_TARGETS,
) -> dict[str, Any]:
    """Share automated vs accuracy of the automated part on (probs, y): the curve of one global threshold
    (overall and per predicted class), and, per accuracy target, per-class and global thresholds chosen on
    ``choose_on`` (another split's probabilities and labels; default: these rows) and measured here."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    cp, cy = choose_on if choose_on is not None else (probs, y)
    pred = probs.argmax(axis=1)
    per_class_curve = []
    for c, label in enumerate(labels):
        mine = pred == c
        if mine.sum() >= 5:
            per_class_curve.append(
                {"label": label, "n": int(mine.sum()), "curve": automation_curve(probs[mine], y[mine])}
            )
    at = []
    for t in targets:
        per = automation_thresholds(cp, cy, t)
        single = np.full(len(labels), global_threshold(cp, cy, t))
        at.append(
            {
                "target": t,
                "per_class": automation_metrics(probs, y, per),
                "global": automation_metrics(probs, y, single),
                "per_class_by_label": per_class_automation(probs, y, labels, per),
            }
        )
    return {
        "n": len(y),
        "chosen_on": "another split" if choose_on is not None else "these rows",
        "curve": automation_curve(probs, y),
        "per_class_curve": per_class_curve,
        "targets": at,
    }


def automation_png(auto: dict[str, Any], title: str) -> bytes:
    """The curve: accuracy of the automated part against the share automated (one global threshold; thin
    lines per predicted class), with the per-class and global operating points at each target."""
    from app.services import render

    fig, ax = render.new_figure(7.5, 5.0)
    for row in auto["per_class_curve"]:
        ax.plot([p["share"] for p in row["curve"]], [p["accuracy"] for p in row["curve"]], color="#bbb", lw=0.6)
    ax.plot(
        [p["share"] for p in auto["curve"]],
        [p["accuracy"] for p in auto["curve"]],
        color="#1f5fa8",
        lw=2,
        label="one global threshold (overall)",
    )
    for key, marker, colour, name in (
        ("per_class", "o", "#c0392b", "per-class thresholds"),
        ("global", "s", "#1f5fa8", "global threshold"),
    ):
        pts = [
            (t[key]["share_automated"], t[key]["accuracy_automated"])
            for t in auto["targets"]
            if t[key]["accuracy_automated"] is not None
        ]
        if pts:
            ax.scatter(
                [a for a, _ in pts],
                [b for _, b in pts],
                marker=marker,
                color=colour,
                zorder=3,
                label=f"{name} at each target",
            )
    for t in auto["targets"]:
        ax.axhline(t["target"], color="#eee", lw=0.5, zorder=0)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("share automated")
    ax.set_ylabel("accuracy of the automated part")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    return render.figure_png(fig)


def automation_rows(auto: dict[str, Any]) -> list[list[Any]]:
    """Rows of the targets table: target, per-class share / accuracy, global share / accuracy."""
    return [
        [
            t["target"],
            t["per_class"]["share_automated"],
            t["per_class"]["accuracy_automated"],
            t["global"]["share_automated"],
            t["global"]["accuracy_automated"],
        ]
        for t in auto["targets"]
    ]
