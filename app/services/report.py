"""The active model's report: confusion matrix and per-class precision / recall / F1 on its hold-out.

The hold-out is the one training uses (``app.services.dataset.holdout_of`` on the vacancy ids, salted
with the seed): no model version trains on it. The model is scored as it is served (its head variant)
with neighbours drawn from the training part, exactly as ``retrain`` scores champion and challenger,
so on unchanged data the numbers equal the validation metrics recorded when the model was trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.errors import InvalidInput, Unavailable
from app.runtime import LoadedModel, Runtime
from app.services import render
from app.services.dataset import holdout_of, read_labelled
from app.services.training import text_inputs
from app.services.uncertainty import automation_png, automation_report, automation_rows
from app.services.uncertainty import summary as uncertainty_summary
from indexing.cache import encode_cached
from models.conformal import set_metrics
from models.metrics import (
    confusion_figure,
    confusion_matrix,
    coverage_at,
    expected_calibration_error,
    macro_f1,
    per_class,
)
from models.training import predict_with_corpus


def model_report(runtime: Runtime, session: Session) -> dict[str, Any]:
    """Scores of the active model on the validation hold-out (JSON-ready)."""
    loaded = runtime.model if runtime.has_model else runtime.load_active_model()
    if loaded is None:
        raise Unavailable("no trained model is active: run `jobclass train`")
    classifier = loaded.classifier
    labels = classifier.labels
    data = read_labelled(session, labels)
    if not len(data):
        raise InvalidInput("no labelled vacancies with the model's labels: run `jobclass ingest`")
    settings = runtime.settings
    split = holdout_of(data, settings)
    tr, va = split.train, split.val
    if len(va) == 0 or len(tr) == 0:
        raise InvalidInput("too few labelled vacancies for a hold-out: ingest more data")
    x = encode_cached(runtime.encoder, data.texts, runtime.cache)
    inputs = text_inputs(runtime, data.texts)
    probs = predict_with_corpus(classifier, x[va], x[tr], data.y[tr], inputs.take(va), inputs.take(tr))
    y_val, y_pred = data.y[va], probs.argmax(axis=1)
    cm = confusion_matrix(y_val, y_pred, len(labels))
    scores = per_class(y_val, y_pred, len(labels))
    recorded = loaded.metadata.get("metrics", {}).get("validation", {}).get("fused")
    return {
        "model_version": loaded.version,
        "variant": classifier.variant,
        "embedder": loaded.metadata.get("embedder"),
        "n_train": len(tr),
        "n_val": len(va),
        "accuracy": float(np.mean(y_pred == y_val)),
        "macro_f1": macro_f1(y_val, y_pred, len(labels)),
        "ece": expected_calibration_error(probs, y_val),
        "coverage": coverage_at(probs, y_val, settings.abstain_threshold),
        "recorded_at_training": recorded,
        "labels": labels,
        "classes": [
            {
                "label": label,
                "display_name": runtime.taxonomy.display_name(label),
                "precision": float(scores["precision"][c]),
                "recall": float(scores["recall"][c]),
                "f1": float(scores["f1"][c]),
                "support": int(scores["support"][c]),
                "predicted": int(cm[:, c].sum()),
            }
            for c, label in enumerate(labels)
        ],
        "confusion_matrix": cm.tolist(),
        # share automated vs accuracy of the automated part, overall and per class (thresholds chosen and
        # measured on this hold-out), and the version's prediction sets measured on it
        "automation": automation_report(probs, y_val, labels),
        "prediction_sets": _sets_on_holdout(loaded, probs, y_val),
        "operating_point": uncertainty_summary(loaded.metadata.get("uncertainty")),
    }


def _sets_on_holdout(loaded: LoadedModel, probs: np.ndarray, y_val: np.ndarray) -> dict[str, Any] | None:
    conformal = loaded.rule.conformal
    if conformal is None:
        return None
    return {"coverage_target": conformal.coverage, **set_metrics(probs, y_val, conformal.thresholds)}


def write_model_report(result: dict[str, Any], out: Path) -> list[Path]:
    """``report.json``, ``confusion.png``, ``per_class.png``, ``automation.png`` and ``report.html`` (plots
    inlined)."""
    out.mkdir(parents=True, exist_ok=True)
    cm = np.array(result["confusion_matrix"], dtype=np.int64)
    names = [c["display_name"] for c in result["classes"]]
    confusion = _plot_confusion(cm, names, f"{result['model_version']} on {result['n_val']} held-out vacancies")
    bars = _plot_per_class(result["classes"])
    curve = automation_png(result["automation"], f"{result['model_version']}: automation on the hold-out")
    (out / "confusion.png").write_bytes(confusion)
    (out / "per_class.png").write_bytes(bars)
    (out / "automation.png").write_bytes(curve)
    (out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(_html(result, confusion, bars, curve), encoding="utf-8")
    return [
        out / "report.json",
        out / "report.html",
        out / "confusion.png",
        out / "per_class.png",
        out / "automation.png",
    ]


def _plot_confusion(cm: np.ndarray, names: list[str], title: str) -> bytes:
    return render.figure_png(confusion_figure(cm, names, title))


def _plot_per_class(classes: list[dict[str, Any]]) -> bytes:
    shown = [c for c in classes if c["support"] or c["predicted"]]
    pos = np.arange(len(shown))
    fig, ax = render.new_figure(9, max(3.0, 0.36 * len(shown) + 1.2))
    for offset, key in ((-0.27, "precision"), (0.0, "recall"), (0.27, "f1")):
        ax.barh(pos + offset, [c[key] for c in shown], height=0.27, label=key)
    ax.set_yticks(pos, [c["display_name"][:32] for c in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=8)
    ax.set_title("Per-class precision, recall and F1 on the hold-out")
    return render.figure_png(fig)


def _automation_sections(result: dict[str, Any], curve: bytes) -> list[str]:
    auto = result["automation"]
    sets = result.get("prediction_sets")
    intro = (
        f"<p>Prediction sets at coverage {sets['coverage_target']:g}: empirical coverage "
        f"{sets['empirical_coverage']:.3f}, mean set size {sets['mean_set_size']:.2f}, singletons "
        f"{sets['singleton_share']:.1%} (on the hold-out they were calibrated on).</p>"
        if sets
        else "<p>This version has no prediction-set calibration (trained before it existed): `jobclass calibrate`.</p>"
    )
    targets = render.table(
        ["target accuracy", "per-class: share automated", "accuracy", "global: share automated", "accuracy"],
        automation_rows(auto),
        digits=4,
    )
    curve_rows = render.table(
        ["share automated", "accuracy of the automated part", "confidence threshold"],
        [[p["share"], p["accuracy"], p["threshold"]] for p in auto["curve"]],
        digits=4,
    )
    at95 = next((t for t in auto["targets"] if t["target"] == 0.95), None)
    per_class = (
        render.table(
            ["predicted label", "answers", "threshold", "share automated", "accuracy automated", "accuracy"],
            [
                [c["label"], c["n"], c["threshold"], c["share_automated"], c["accuracy_automated"], c["accuracy"]]
                for c in at95["per_class_by_label"]
            ],
            digits=4,
        )
        if at95
        else ""
    )
    return [
        "<h2>Automation: share automated vs accuracy of the automated part</h2>",
        intro,
        render.img(curve, "share automated against accuracy of the automated part"),
        targets,
        "<h3>One global threshold</h3>",
        curve_rows,
        "<h3>Per class at 95 % target accuracy (per-class thresholds)</h3>",
        per_class,
    ]


def _html(result: dict[str, Any], confusion: bytes, bars: bytes, curve: bytes) -> str:
    cov = result["coverage"]
    overview = render.table(
        ["measure", "value"],
        [
            ["model version", result["model_version"]],
            ["head variant", result["variant"]],
            ["embedder", result["embedder"]],
            ["hold-out / training part", f"{result['n_val']} / {result['n_train']}"],
            ["accuracy", result["accuracy"]],
            ["macro-F1", result["macro_f1"]],
            ["ECE", result["ece"]],
            [f"coverage at confidence ≥ {cov['threshold']:g}", cov["coverage"]],
            ["accuracy on answered", cov["accuracy"]],
        ],
        digits=4,
    )
    classes = render.table(
        ["label", "precision", "recall", "F1", "support", "predicted"],
        [
            [c["display_name"], c["precision"], c["recall"], c["f1"], c["support"], c["predicted"]]
            for c in result["classes"]
        ],
    )
    return render.page(
        "jobclass model report",
        [
            overview,
            "<h2>Confusion matrix</h2>",
            render.img(confusion, "confusion matrix, rows true labels, columns predicted labels"),
            "<h2>Per class</h2>",
            render.img(bars, "per-class precision, recall and F1"),
            classes,
            *_automation_sections(result, curve),
        ],
    )
