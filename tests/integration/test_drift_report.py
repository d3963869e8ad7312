"""`jobclass drift` and `jobclass report` use cases, on SQLite and Postgres, with the fake encoder.

Drift: a window of predictions drawn like the training data must score a small shift and a low
out-of-distribution rate; a window of one class plus off-domain text must score a larger shift, a
lower centroid similarity and a high OOD rate. Report: the active model scored on its hold-out gives
the validation numbers recorded when it was trained, and the confusion matrix adds up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from app.db import Prediction
from app.errors import InvalidInput, Unavailable
from app.runtime import Runtime
from app.services.classification import ClassifyItem, classify
from app.services.drift import (
    Window,
    compute_drift,
    label_shift,
    parse_when,
    psi_alert_limit,
    window,
    write_drift_report,
)
from app.services.report import model_report, write_model_report
from tests.factories import seed
from tests.fakes import TOPICS, topic_texts

IT = "It og teleteknik"
JANUARY = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
FEBRUARY = Window(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
OFF_DOMAIN_WORDS = [
    "quarterly",
    "invoice",
    "reconciliation",
    "pharmaceutical",
    "shipping",
    "tariff",
    "ledger",
    "audit",
    "compliance",
    "customs",
    "freight",
    "vat",
    "brokerage",
    "actuarial",
    "underwriting",
    "derivatives",
]


def off_domain_texts(n: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(OFF_DOMAIN_WORDS, size=8, replace=False)) for _ in range(n)]


def predict_at(runtime: Runtime, texts: list[str], when: datetime) -> None:
    """Classify (and store) the texts, then date the stored predictions ``when``."""
    with runtime.sessions() as session:
        results = classify(runtime, session, [ClassifyItem(t) for t in texts])
        ids = [r.prediction_id for r in results]
        assert all(ids)
        session.execute(update(Prediction).where(Prediction.id.in_(ids)).values(created_at=when))
        session.commit()


# ---- pure parts ---------------------------------------------------------------------------------
def test_label_shift_measures() -> None:
    same = label_shift(np.array([100, 200, 300, 0]), np.array([10, 20, 30, 0]))
    assert same["total_variation"] == pytest.approx(0.0, abs=1e-12)
    assert same["js_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert 0 <= same["psi"] < 0.01  # only the ½ pseudocount separates them
    disjoint = label_shift(np.array([5, 0]), np.array([0, 5]))
    assert disjoint["total_variation"] == pytest.approx(1.0)
    assert disjoint["js_divergence"] == pytest.approx(1.0)  # base 2: the maximum
    small = label_shift(np.array([500, 500]), np.array([55, 45]))
    large = label_shift(np.array([500, 500]), np.array([90, 10]))
    assert 0 < small["psi"] < 0.1 < 0.2 < large["psi"]
    assert small["total_variation"] == pytest.approx(0.05)
    # a handful of predictions that miss most classes is not a huge shift by itself
    few = label_shift(np.full(22, 30), np.array([3, 2, 2, 1, 1, 1, 1, 1, 1] + [0] * 13))
    assert few["psi"] < 2.0


def test_psi_alert_limit_grows_for_small_windows() -> None:
    assert psi_alert_limit(10_000, 22) == pytest.approx(0.2)
    assert psi_alert_limit(40, 3) == pytest.approx(0.2)
    assert psi_alert_limit(13, 22) > 2.0  # 13 predictions over 22 classes: chance alone scores ≈ 21/13
    rng = np.random.default_rng(0)
    reference = np.full(22, 50)
    chance = [label_shift(reference, rng.multinomial(60, np.full(22, 1 / 22)))["psi"] for _ in range(200)]
    assert np.mean(np.array(chance) > psi_alert_limit(60, 22)) < 0.05  # rarely alerts without a shift
    assert np.mean(np.array(chance) > 0.2) > 0.5  # where the plain 0.2 rule mostly would


def test_dates_parse_or_fail_in_one_line() -> None:
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("2026-11-01T12:30") == datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    assert parse_when("2026-11-01T13:30+01:00") == datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    win = window("2026-11-01", "2026-11-03")
    assert win.until == datetime(2026, 11, 4, tzinfo=UTC)  # a date-only end includes that day
    for bad in ("yesterday", "2026-13-01", "01/11/2026", ""):
        with pytest.raises(InvalidInput, match="is not a date"):
            parse_when(bad)
    with pytest.raises(InvalidInput, match="must be after"):
        window("2026-11-05", "2026-11-01")


# ---- drift on a database ------------------------------------------------------------------------
def test_drift_tells_a_shifted_window_from_an_unshifted_one(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    # January: fresh texts drawn like the training data (every class, same mix)
    predict_at(runtime, [t for _, t, _ in topic_texts(10, seed=1)], datetime(2026, 1, 15, tzinfo=UTC))
    # February: mostly IT ads, and a quarter of off-domain text
    it_words = TOPICS[IT]
    rng = np.random.default_rng(3)
    it_ads = [" ".join(rng.choice(it_words, size=6)) + " in aarhus" for _ in range(30)]
    predict_at(runtime, it_ads + off_domain_texts(10), datetime(2026, 2, 10, tzinfo=UTC))

    with runtime.sessions() as session:
        calm = compute_drift(runtime, session, JANUARY)
        shifted = compute_drift(runtime, session, FEBRUARY)

    assert calm["n_recent"] == 30 and shifted["n_recent"] == 40
    assert calm["n_reference"] == 36
    # label distribution: the same mix scores near zero, one dominant class far above
    assert calm["label_shift"]["psi"] < 0.1
    assert shifted["label_shift"]["psi"] > 0.2 > calm["label_shift"]["psi"]
    assert shifted["label_shift"]["total_variation"] > calm["label_shift"]["total_variation"] + 0.2
    assert shifted["label_shift"]["js_divergence"] > calm["label_shift"]["js_divergence"]
    # the recent centroid moves away from the training centroid
    assert shifted["centroid"]["cosine"] < calm["centroid"]["cosine"]
    assert calm["centroid"]["cosine"] > 0.85
    # OOD: the training-like window sits near the 5% design rate, off-domain text is flagged
    assert calm["ood"]["rate"] <= 0.2
    assert shifted["ood"]["rate"] >= 0.25
    assert calm["ood"]["threshold"] == pytest.approx(shifted["ood"]["threshold"])  # same reference
    assert not calm["alerts"]
    assert any("PSI" in a for a in shifted["alerts"]) and any("out-of-distribution" in a for a in shifted["alerts"])
    # per class: the classes the off-domain text was forced into carry the OOD, the IT ads do not
    by_label = {c["label"]: c for c in shifted["classes"]}
    assert by_label[IT]["recent_count"] >= 30
    assert sum(c["recent_count"] for c in shifted["classes"]) == 40
    assert max(c["ood_rate"] or 0.0 for c in shifted["classes"]) >= 0.5
    for c in calm["classes"]:
        assert c["centroid_cosine"] is not None and c["centroid_cosine"] > 0.8
    assert calm["model_versions"] == {runtime.model.version: 30}
    # per language: the English test texts, with their share of the window and of the labelled data
    languages = {row["language"]: row for row in shifted["languages"]}
    assert sum(row["n_recent"] for row in shifted["languages"]) == 40
    assert all(0.0 <= row["share_reference"] <= 1.0 for row in shifted["languages"])
    assert max(languages.values(), key=lambda row: row["n_recent"])["abstain_rate"] is not None


def test_drift_needs_predictions_in_the_window(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    predict_at(runtime, ["python developer for backend software"], datetime(2026, 1, 15, tzinfo=UTC))
    with runtime.sessions() as session, pytest.raises(InvalidInput, match="no predictions in 2026-02-01"):
        compute_drift(runtime, session, FEBRUARY)


def test_drift_report_files(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    predict_at(
        runtime, [t for _, t, _ in topic_texts(4, seed=2)] + off_domain_texts(4), datetime(2026, 1, 5, tzinfo=UTC)
    )
    with runtime.sessions() as session:
        result = compute_drift(runtime, session, JANUARY)
    out = tmp_path / "drift"
    written = write_drift_report(result, out)
    assert {p.name for p in written} >= {"drift.json", "drift.html", "drift_labels.png", "drift_similarity.png"}
    summary = json.loads((out / "drift.json").read_text())
    assert summary["n_recent"] == 16 and "_arrays" not in summary
    assert summary["ood"]["count"] == round(summary["ood"]["rate"] * 16)
    page = (out / "drift.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert (out / "drift_similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- model report -------------------------------------------------------------------------------
def test_report_scores_the_active_model_on_its_hold_out(runtime: Runtime, tmp_path: Path) -> None:
    seed(runtime, tmp_path)
    with runtime.sessions() as session:
        result = model_report(runtime, session)
    recorded = runtime.model.metadata["metrics"]
    assert result["model_version"] == runtime.model.version
    assert result["n_val"] == recorded["n_val"] and result["n_train"] == recorded["n_train"]
    assert result["accuracy"] == pytest.approx(recorded["validation"]["fused"]["accuracy"])
    assert result["macro_f1"] == pytest.approx(recorded["validation"]["fused"]["macro_f1"])
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (22, 22) and cm.sum() == result["n_val"]
    assert np.trace(cm) / cm.sum() == pytest.approx(result["accuracy"])
    supports = {c["label"]: c["support"] for c in result["classes"]}
    assert sum(supports.values()) == result["n_val"]
    assert set(TOPICS) >= {label for label, n in supports.items() if n}  # only the seeded classes

    # the automation curve: the most confident share of the hold-out and its accuracy, falling as it grows
    auto = result["automation"]
    curve = auto["curve"]
    assert auto["n"] == result["n_val"] and curve[-1]["share"] == pytest.approx(1.0)
    assert curve[-1]["accuracy"] == pytest.approx(result["accuracy"])
    assert [t["target"] for t in auto["targets"]] == [0.8, 0.85, 0.9, 0.95, 0.97, 0.99]
    for t in auto["targets"]:
        for rule in ("per_class", "global"):  # chosen and measured on the same hold-out: the target holds
            acc = t[rule]["accuracy_automated"]
            assert acc is None or acc >= t["target"]
        assert t["per_class"]["share_automated"] >= t["global"]["share_automated"]
    sets = result["prediction_sets"]
    assert sets["coverage_target"] == runtime.settings.coverage and sets["empirical_coverage"] >= 0.5
    assert result["operating_point"]["n_holdout"] == result["n_val"]

    written = write_model_report(result, tmp_path / "report")
    assert [p.name for p in written] == [
        "report.json",
        "report.html",
        "confusion.png",
        "per_class.png",
        "automation.png",
    ]
    assert json.loads((tmp_path / "report" / "report.json").read_text())["confusion_matrix"] == cm.tolist()
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "share automated" in page
    assert (tmp_path / "report" / "automation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_a_model(runtime: Runtime) -> None:
    with runtime.sessions() as session, pytest.raises(Unavailable, match="jobclass train"):
        model_report(runtime, session)


# ---- the commands -------------------------------------------------------------------------------
def test_drift_and_report_commands(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`jobclass drift` and `jobclass report` end to end on a seeded runtime (fake encoder)."""
    from typer.testing import CliRunner

    import app.cli
    import app.cli.common

    seed(runtime, tmp_path)
    predict_at(runtime, [t for _, t, _ in topic_texts(4, seed=5)], datetime(2026, 1, 20, tzinfo=UTC))
    monkeypatch.setattr(runtime, "close", lambda: None)  # the fixture closes it
    monkeypatch.setattr(app.cli.common, "offline_runtime", lambda: runtime)
    runner = CliRunner()

    out = tmp_path / "drift"
    result = runner.invoke(app.cli.cli, ["drift", "--since", "2026-01-01", "--until", "2026-01-31", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 predictions vs 36 labelled vacancies" in result.output
    assert json.loads((out / "drift.json").read_text())["window"]["until"] == "2026-02-01T00:00:00+00:00"
    assert "alert:" not in result.output

    # off-domain text alerts; --fail-on-alert turns that into exit status 3 (the report is written first)
    predict_at(runtime, off_domain_texts(12), datetime(2026, 3, 3, tzinfo=UTC))
    alerting = ["drift", "--since", "2026-03-01", "--out", str(tmp_path / "march")]
    assert runner.invoke(app.cli.cli, alerting).exit_code == 0
    result = runner.invoke(app.cli.cli, [*alerting, "--fail-on-alert"])
    assert result.exit_code == 3, result.output
    assert "alert: out-of-distribution rate" in result.output
    assert (tmp_path / "march" / "drift.html").is_file()

    result = runner.invoke(app.cli.cli, ["report", "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert f"model {runtime.model.version} on " in result.output
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000
