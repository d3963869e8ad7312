"""Drift: compare the predictions of a time window with the training data (the labelled vacancies).

Three views, each with a number that can be alerted on:

- **Label distribution shift** — the share of each predicted label in the window against its share
  among labelled vacancies: total variation distance (½·Σ|p−q|, 0…1), Jensen–Shannon divergence
  (base 2, 0…1) and the population stability index (PSI = Σ (p−q)·ln(p/q), counts smoothed by ½;
  the usual reading is < 0.1 stable, 0.1–0.2 moderate, > 0.2 a real shift — the alert limit is raised
  for windows too small for that reading, see ``psi_alert_limit``).
- **Embedding centroid distance** — cosine between the mean embedding of the window's texts and the
  mean of the labelled vacancies, overall and per predicted class against that class's labelled
  vacancies (a class whose ads change wording moves away even when its share stays put).
- **Out-of-distribution rate** — a text is out of distribution when its nearest labelled vacancy is
  less similar than the ``ood_quantile`` (default 5%) quantile of the labelled vacancies'
  leave-one-out nearest-neighbour similarity. By construction about 5% of in-distribution text falls
  below it; a window well above that holds text unlike anything the model was trained on.

Prediction rows store the cleaned text (not the vector), so the window is re-embedded with the
runtime encoder through the embedding cache; the labelled vacancies usually come from the cache.
Nothing here writes to the database or the index.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import Prediction
from app.errors import InvalidInput
from app.runtime import Runtime
from app.services import render
from app.services.dataset import read_labelled
from indexing.cache import encode_cached
from indexing.language import detect_language

DEFAULT_OOD_QUANTILE = 0.05
PSI_ALERT = 0.2  # a "real" shift by the usual PSI rule of thumb
PSI_PSEUDOCOUNT = 0.5  # added to each class's count for PSI (Jeffreys-style smoothing)
BLOCK = 1024  # rows per similarity block: memory stays O(BLOCK × n) however large the data


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime | None  # exclusive; None = up to now

    def describe(self) -> str:
        end = self.until.isoformat() if self.until else "now"
        return f"{self.since.isoformat()} … {end}"


def parse_when(value: str, *, name: str = "since", end_of_day: bool = False) -> datetime:
    """An ISO date (``2026-11-01``: midnight UTC, or the next midnight with ``end_of_day``) or an ISO
    datetime (``2026-11-01T12:00``, ``…Z`` or ``…+01:00``; no offset means UTC) as an aware UTC time."""
    text = value.strip()
    try:
        if len(text) <= 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--{name} {value!r} is not a date: use YYYY-MM-DD or an ISO datetime such as 2026-11-01T12:00Z",
            field=name,
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window(since: str, until: str | None = None) -> Window:
    """The window [since, until) from command-line strings; a date-only ``until`` includes that day."""
    start = parse_when(since, name="since")
    end = parse_when(until, name="until", end_of_day=True) if until else None
    if end is not None and end <= start:
        raise InvalidInput(f"--until ({until}) must be after --since ({since})", field="until")
    return Window(start, end)


# ---- statistics (pure) --------------------------------------------------------------------------
def label_shift(reference: np.ndarray, recent: np.ndarray) -> dict[str, float]:
    """Distances between two count vectors over the same classes. Total variation and Jensen–Shannon
    use the raw shares; PSI adds ``PSI_PSEUDOCOUNT`` to every class seen on either side (an empty class
    would make ln(p/q) infinite, and a fixed tiny floor would let a handful of predictions that miss
    most classes score a huge PSI)."""
    counts_p = np.asarray(recent, dtype=np.float64)
    counts_q = np.asarray(reference, dtype=np.float64)
    p, q = counts_p / counts_p.sum(), counts_q / counts_q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    seen = (counts_p + counts_q) > 0
    ps = counts_p[seen] + PSI_PSEUDOCOUNT
    qs = counts_q[seen] + PSI_PSEUDOCOUNT
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return {
        "total_variation": float(0.5 * np.abs(p - q).sum()),
        "js_divergence": 0.5 * kl(p, m) + 0.5 * kl(q, m),
        "psi": float(np.sum((ps - qs) * np.log(ps / qs))),
    }


def psi_alert_limit(n_recent: int, n_classes: int) -> float:
    """PSI above which a shift is reported: the usual 0.2, raised for small windows. Without any shift,
    n·PSI behaves like a chi-square statistic with k−1 degrees of freedom (mean k−1, variance 2(k−1)),
    so a window of n predictions over k classes scores about (k−1)/n by chance; the limit is that
    mean plus three standard deviations when it exceeds 0.2."""
    dof = max(n_classes - 1, 1)
    return max(PSI_ALERT, (dof + 3 * math.sqrt(2 * dof)) / max(n_recent, 1))


def centroid_cosine(a: np.ndarray, b: np.ndarray) -> float:
    ca, cb = np.asarray(a, dtype=np.float64).mean(axis=0), np.asarray(b, dtype=np.float64).mean(axis=0)
    denom = float(np.linalg.norm(ca) * np.linalg.norm(cb))
    return float(ca @ cb / denom) if denom > 0 else 0.0


def nearest_similarity(queries: np.ndarray, corpus: np.ndarray, *, self_index: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of each (L2-normalised) query to its nearest corpus row, in blocks. With
    ``self_index`` (the corpus row each query is) that row is skipped: leave-one-out."""
    out = np.empty(len(queries), dtype=np.float64)
    corpus_t = np.ascontiguousarray(corpus.T, dtype=np.float32)
    for start in range(0, len(queries), BLOCK):
        sims = np.asarray(queries[start : start + BLOCK], dtype=np.float32) @ corpus_t
        if self_index is not None:
            rows = np.arange(sims.shape[0])
            sims[rows, self_index[start : start + BLOCK]] = -np.inf
        out[start : start + BLOCK] = sims.max(axis=1)
    return out


def ood_threshold(reference: np.ndarray, quantile: float, *, sample: int, seed: int) -> tuple[float, np.ndarray]:
    """The ``quantile`` of leave-one-out nearest-neighbour similarity among the reference vectors
    (computed on up to ``sample`` of them, against all), and those similarities."""
    n = len(reference)
    if n < 2:
        raise InvalidInput("drift needs at least two labelled vacancies to derive the out-of-distribution threshold")
    picked = np.arange(n)
    if n > sample:
        picked = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    loo = nearest_similarity(reference[picked], reference, self_index=picked)
    return float(np.quantile(loo, quantile)), loo


# ---- the use case -------------------------------------------------------------------------------
def compute_drift(
    runtime: Runtime,
    session: Session,
    win: Window,
    *,
    ood_quantile: float = DEFAULT_OOD_QUANTILE,
    reference_sample: int = 5000,
) -> dict[str, Any]:
    """The drift summary of the predictions in ``win`` against every labelled vacancy (JSON-ready).
    ``_arrays`` (similarities for the plots) is included under a private key and not written."""
    if not 0.0 < ood_quantile < 0.5:
        raise InvalidInput("the out-of-distribution quantile must be in (0, 0.5)", field="ood_quantile")
    rows, versions = _window_predictions(session, win)
    reference = read_labelled(session, runtime.taxonomy.labels)
    if not len(reference):
        raise InvalidInput("no labelled vacancies to compare with: run `jobclass ingest` first")
    index = {label: i for i, label in enumerate(reference.labels)}
    recent = [r for r in rows if r.label in index]  # a label dropped from the taxonomy cannot be compared
    if not recent:
        raise InvalidInput(f"the {len(rows)} predictions in {win.describe()} carry no label of the current taxonomy")
    y_new = np.array([index[r.label] for r in recent], dtype=np.int64)
    x_ref = encode_cached(runtime.encoder, reference.texts, runtime.cache)
    x_new = encode_cached(runtime.encoder, [r.text for r in recent], runtime.cache)
    threshold, loo = ood_threshold(x_ref, ood_quantile, sample=reference_sample, seed=runtime.settings.seed)
    nearest = nearest_similarity(x_new, x_ref)
    ood = nearest < threshold
    confidence = np.array([r.confidence for r in recent], dtype=np.float64)
    ref_counts = np.bincount(reference.y, minlength=len(reference.labels))
    new_counts = np.bincount(y_new, minlength=len(reference.labels))
    shift = label_shift(ref_counts, new_counts)
    ood_limit, alerts = _alerts(shift, ref_counts, float(ood.mean()), ood_quantile, len(recent))
    cosine = centroid_cosine(x_new, x_ref)
    return {
        "window": {"since": win.since.isoformat(), "until": win.until.isoformat() if win.until else None},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "embedder": runtime.settings.embedding_model,
        "n_recent": len(recent),
        "n_skipped": len(rows) - len(recent),
        "n_reference": len(reference),
        "model_versions": dict(versions.most_common()),
        "abstain_rate": float(np.mean([r.abstained for r in recent])),
        "mean_confidence": float(confidence.mean()),
        "label_shift": shift,
        "centroid": {"cosine": cosine, "distance": 1.0 - cosine},
        "ood": {
            "quantile": ood_quantile,
            "threshold": threshold,
            "rate": float(ood.mean()),
            "count": int(ood.sum()),
            "alert_above": ood_limit,
            "reference_sample": len(loo),
        },
        "classes": _per_class(runtime, reference.y, y_new, x_ref, x_new, ood, confidence),
        "languages": _per_language(reference.texts, recent, ood, confidence),
        "alerts": alerts,
        "_arrays": {"reference_nn": loo, "recent_nn": nearest},
    }


def _window_predictions(session: Session, win: Window) -> tuple[list[Any], Counter[str]]:
    """The predictions made in ``win`` (text, label, confidence, abstained) and how many each model version made."""
    in_window = [
        Prediction.created_at >= win.since,
        *([Prediction.created_at < win.until] if win.until is not None else []),
    ]
    query = select(
        Prediction.text, Prediction.label, Prediction.confidence, Prediction.abstained, Prediction.language
    ).where(*in_window)
    rows = list(session.execute(query.order_by(Prediction.created_at, Prediction.id)).all())
    if not rows:
        raise InvalidInput(f"no predictions in {win.describe()}: nothing to compare", field="since")
    versions = Counter(session.scalars(select(Prediction.model_version).where(*in_window)))
    return rows, versions


def _per_language(
    reference_texts: list[str], recent: list[Any], ood: np.ndarray, confidence: np.ndarray
) -> list[dict[str, Any]]:
    """Per detected language: its share of the window and of the labelled data, and the window's abstain
    rate, out-of-distribution rate and mean confidence in it (a new language shows up here first)."""
    ref = Counter(detect_language(t) for t in reference_texts)
    langs = np.array([r.language or detect_language(r.text) for r in recent])
    out = []
    for lang in sorted(set(ref) | set(langs.tolist()), key=lambda x: -int((langs == x).sum())):
        mask = langs == lang
        n = int(mask.sum())
        out.append(
            {
                "language": lang,
                "n_recent": n,
                "share_recent": n / len(recent),
                "share_reference": ref.get(lang, 0) / max(1, len(reference_texts)),
                "abstain_rate": float(np.mean([recent[i].abstained for i in np.flatnonzero(mask)])) if n else None,
                "ood_rate": float(ood[mask].mean()) if n else None,
                "mean_confidence": float(confidence[mask].mean()) if n else None,
            }
        )
    return out


def _per_class(
    runtime: Runtime,
    y_ref: np.ndarray,
    y_new: np.ndarray,
    x_ref: np.ndarray,
    x_new: np.ndarray,
    ood: np.ndarray,
    confidence: np.ndarray,
) -> list[dict[str, Any]]:
    """Per label seen in either set: counts and shares, centroid cosine, OOD rate and mean confidence."""
    taxonomy = runtime.taxonomy
    ref_counts = np.bincount(y_ref, minlength=len(taxonomy.labels))
    new_counts = np.bincount(y_new, minlength=len(taxonomy.labels))
    classes = []
    for c, label in enumerate(taxonomy.labels):
        if not (ref_counts[c] or new_counts[c]):
            continue
        mine, theirs = y_new == c, y_ref == c
        classes.append(
            {
                "label": label,
                "display_name": taxonomy.display_name(label),
                "reference_count": int(ref_counts[c]),
                "reference_share": float(ref_counts[c] / ref_counts.sum()),
                "recent_count": int(new_counts[c]),
                "recent_share": float(new_counts[c] / new_counts.sum()),
                "centroid_cosine": centroid_cosine(x_new[mine], x_ref[theirs]) if mine.any() and theirs.any() else None,
                "ood_rate": float(ood[mine].mean()) if mine.any() else None,
                "mean_confidence": float(confidence[mine].mean()) if mine.any() else None,
            }
        )
    return classes


def _alerts(
    shift: dict[str, Any], ref_counts: np.ndarray, ood_rate: float, ood_quantile: float, n_recent: int
) -> tuple[float, list[str]]:
    """The OOD-rate limit and the alerts (label shift above its PSI limit, OOD rate above its limit);
    sets ``shift["psi_alert_above"]``."""
    # alert when the OOD rate is above twice its expected value and three standard errors above it
    ood_limit = max(2 * ood_quantile, ood_quantile + 3 * math.sqrt(ood_quantile * (1 - ood_quantile) / n_recent))
    psi_limit = psi_alert_limit(n_recent, int(np.count_nonzero(ref_counts)))
    shift["psi_alert_above"] = psi_limit
    alerts = []
    if shift["psi"] > psi_limit:
        alerts.append(f"label distribution shifted: PSI {shift['psi']:.3f} > {psi_limit:.3g}")
    if ood_rate > ood_limit:
        alerts.append(
            f"out-of-distribution rate {ood_rate:.1%} is above {ood_limit:.1%} "
            f"(expected about {ood_quantile:.0%} for text like the training data)"
        )
    return ood_limit, alerts


# ---- outputs --------------------------------------------------------------------------------------
def write_drift_report(result: dict[str, Any], out: Path) -> list[Path]:
    """``drift.json`` (the summary) and ``drift.html`` (tables and plots inlined), plus the plots as
    PNG files next to them. Returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    arrays = result.get("_arrays", {})
    summary = {k: v for k, v in result.items() if not k.startswith("_")}
    plots = {
        "drift_labels.png": _plot_shares(summary["classes"]),
        "drift_similarity.png": _plot_similarity(arrays, summary["ood"]["threshold"]),
        "drift_classes.png": _plot_classes(summary["classes"]),
    }
    written = []
    for name, png in plots.items():
        (out / name).write_bytes(png)
        written.append(out / name)
    (out / "drift.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "drift.html").write_text(_html(summary, plots), encoding="utf-8")
    return [out / "drift.json", out / "drift.html", *written]


def _short(label: str) -> str:
    return label if len(label) <= 32 else label[:30] + "…"


def _plot_shares(classes: list[dict[str, Any]]) -> bytes:
    names = [_short(c["display_name"]) for c in classes]
    pos = np.arange(len(classes))
    fig, ax = render.new_figure(9, max(3.0, 0.32 * len(classes) + 1.2))
    ax.barh(pos - 0.2, [c["reference_share"] for c in classes], height=0.4, label="labelled vacancies")
    ax.barh(pos + 0.2, [c["recent_share"] for c in classes], height=0.4, label="predictions in the window")
    ax.set_yticks(pos, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=8)
    ax.set_title("Label distribution")
    return render.figure_png(fig)


def _plot_similarity(arrays: dict[str, np.ndarray], threshold: float) -> bytes:
    fig, ax = render.new_figure(9, 3.6)
    ref, new = arrays.get("reference_nn"), arrays.get("recent_nn")
    values = [a for a in (ref, new) if a is not None and len(a)]
    low = min([threshold, *(float(np.min(a)) for a in values)])
    bins = np.linspace(max(-1.0, low - 0.05), 1.0, 61)
    if ref is not None:
        ax.hist(ref, bins=bins, density=True, alpha=0.55, label="labelled (leave-one-out)")
    if new is not None:
        ax.hist(new, bins=bins, density=True, alpha=0.55, label="predictions in the window")
    ax.axvline(threshold, color="black", linestyle="--", label=f"OOD threshold {threshold:.3f}")
    ax.set_xlabel("cosine similarity to the nearest labelled vacancy")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return render.figure_png(fig)


def _plot_classes(classes: list[dict[str, Any]]) -> bytes:
    shown = [c for c in classes if c["recent_count"]]
    names = [_short(c["display_name"]) for c in shown]
    pos = np.arange(len(shown))
    fig, ax = render.new_figure(9, max(3.0, 0.32 * len(shown) + 1.2))
    ax.barh(pos - 0.2, [c["ood_rate"] for c in shown], height=0.4, label="OOD rate", color="tab:red")
    ax.barh(
        pos + 0.2,
        [1.0 - (c["centroid_cosine"] if c["centroid_cosine"] is not None else 1.0) for c in shown],
        height=0.4,
        label="centroid distance (1 − cosine)",
        color="tab:purple",
    )
    ax.set_yticks(pos, names, fontsize=8)
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, fontsize=8)
    ax.set_title("Per predicted class")
    return render.figure_png(fig)


def _html(summary: dict[str, Any], plots: dict[str, bytes]) -> str:
    shift, ood, centroid = summary["label_shift"], summary["ood"], summary["centroid"]
    win = summary["window"]
    alerts = (
        "".join(f"<p class='alert'>{html.escape(a)}</p>" for a in summary["alerts"]) or "<p class='ok'>No alert.</p>"
    )
    overview = render.table(
        ["measure", "value"],
        [
            ["window", f"{win['since']} … {win['until'] or 'now'}"],
            ["predictions in the window", summary["n_recent"]],
            ["labelled vacancies (reference)", summary["n_reference"]],
            ["model versions", ", ".join(f"{k} ({v})" for k, v in summary["model_versions"].items())],
            ["abstain rate", summary["abstain_rate"]],
            ["mean confidence", summary["mean_confidence"]],
            ["label shift: total variation", shift["total_variation"]],
            ["label shift: Jensen–Shannon divergence (bits)", shift["js_divergence"]],
            ["label shift: PSI", shift["psi"]],
            ["centroid cosine (distance)", f"{centroid['cosine']:.4f} ({centroid['distance']:.4f})"],
            ["OOD threshold (similarity)", ood["threshold"]],
            ["OOD rate (expected ≈ quantile)", f"{ood['rate']:.1%} ({ood['quantile']:.0%})"],
        ],
        digits=4,
    )
    classes = render.table(
        ["label", "labelled", "share", "predicted", "share", "centroid cosine", "OOD rate", "mean confidence"],
        [
            [
                c["display_name"],
                c["reference_count"],
                c["reference_share"],
                c["recent_count"],
                c["recent_share"],
                c["centroid_cosine"],
                c["ood_rate"],
                c["mean_confidence"],
            ]
            for c in summary["classes"]
        ],
    )
    return render.page(
        "jobclass drift report",
        [
            alerts,
            overview,
            "<h2>Label distribution</h2>",
            render.img(plots["drift_labels.png"], "label shares: labelled vacancies and predictions"),
            "<h2>Nearest-neighbour similarity</h2>",
            render.img(plots["drift_similarity.png"], "histogram of nearest labelled neighbour similarity"),
            "<h2>Per class</h2>",
            render.img(plots["drift_classes.png"], "OOD rate and centroid distance per predicted class"),
            classes,
            f"<p>Embedder {summary['embedder']}; generated {summary['generated_at']}.</p>",
        ],
    )
