"""`jobclass bench`: the method table, report files and the cross-validation option."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.bench.accuracy import BenchConfig, fine_hierarchy, run_bench, run_cv, target_checks
from app.bench.markdown import targets_markdown, write_outputs
from app.cli import cli
from app.services.dataset import Split
from app.settings import DATA_DIR
from indexing.cache import EmbeddingCache
from tests.fakes import FakeEncoder, topic_texts

METHODS = {"tfidf_lr", "head", "knn", "lexical", "fused", "fused_int8", "fused_pruned", "fused_int8_pruned"}
HIER = {"head_hier", "fused_hier"}  # with label_fine


def split(rows: list[tuple[str, str, str]], fine: bool = False) -> Split:
    return Split(
        ids=[r[0] for r in rows],
        texts=[r[1] for r in rows],
        labels=[r[2] for r in rows],
        fine=[f"{r[2][:3]}-{int(r[0][-2:]) % 2}" for r in rows] if fine else None,
    )


def test_bench_scores_every_method_and_writes_the_report(tmp_path: Path) -> None:
    rows = topic_texts(30, seed=1)
    train, test = split(rows[::2] + rows[1::4], fine=True), split(rows[3::4], fine=True)
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    encoder = FakeEncoder()
    result = run_bench(train, None, test, encoder, cache, BenchConfig(name="topics", latency_queries=10))
    assert set(result["methods"]) == METHODS | HIER
    for name, scores in result["methods"].items():
        assert 0.0 <= scores["accuracy"] <= 1.0 and "macro_f1" in scores and "per_class_f1" in scores, name
    m = result["methods"]
    assert m["fused"]["accuracy"] >= 0.9
    assert m["fused_int8"]["head_bytes"] < m["fused"]["head_bytes"]
    assert abs(m["fused_int8"]["accuracy"] - m["fused"]["accuracy"]) <= 0.05
    assert "abstain" in m["fused"] and 0.0 <= m["fused"]["abstain"]["coverage"] <= 1.0
    fine = result["fine"]
    assert fine["n_fine_classes"] == 6 and fine["n_unknown_fine"] == 0
    assert m["fused_hier"]["accuracy"] >= 0.9 and "abstain" in m["fused_hier"]
    # level 0 of the most probable fine label is its parent's accuracy; level 1 the fine accuracy
    assert fine["level_accuracy"]["0"] == pytest.approx(fine["fused_coarse_from_fine_accuracy"])
    assert fine["level_accuracy"]["1"] == pytest.approx(fine["fused_fine_accuracy"])
    assert fine["level_accuracy"]["1"] <= fine["lca_score"] <= fine["level_accuracy"]["0"]
    d = fine["flat_comparison"]
    assert d["fused_hier_minus_flat"] == pytest.approx(100 * (m["fused_hier"]["accuracy"] - m["fused"]["accuracy"]))
    a = fine["answers"]
    assert a["share_fine"] + a["share_coarse"] + a["share_abstained"] == pytest.approx(1.0)
    assert a["threshold"] == 0.25 and 0.0 <= a["accuracy_answered"] <= 1.0
    timing = result["timing"]
    assert timing["embed_texts_per_s"] > 0 and timing["classify_p99_ms"] >= timing["classify_p50_ms"] > 0
    assert result["n_train"] + result["n_val"] == len(train)

    write_outputs(result, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["methods"]["fused"]["accuracy"] == pytest.approx(result["methods"]["fused"]["accuracy"])
    assert saved["methods"]["fused"]["per_class_f1"] == pytest.approx(result["methods"]["fused"]["per_class_f1"])
    u = result["uncertainty"]  # prediction sets and automation: chosen on validation, measured on test
    # calibrated on the validation rows pooled with every training row's out-of-fold probability
    assert u["coverage_target"] == 0.9 and u["n_holdout"] == result["n_val"]
    assert u["n_calibration"] == result["n_val"] + result["n_train"]
    assert 0.0 <= u["test"]["empirical_coverage"] <= 1.0 and u["test"]["mean_set_size"] > 0.0
    assert u["test"]["n"] == len(test) and 0.0 <= u["test"]["empty_share"] <= 1.0
    assert "out-of-fold training rows" in (tmp_path / "out" / "report.md").read_text()
    targets = {t["target"]: t for t in u["automation"]["targets"]}
    assert {"per_class", "global"} <= set(targets[0.95]) and 0.0 <= targets[0.95]["per_class"]["share_automated"] <= 1
    assert u["automation"]["curve"][-1]["share"] == pytest.approx(1.0)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| fused_int8_pruned |" in report and "confusion_fused.png" in report
    assert "| fused_hier |" in report and "fused_hier − fused" in report and "LCA score" in report
    assert "empirical coverage" in report and "| 0.95 |" in report and "automation.png" in report
    assert (tmp_path / "out" / "confusion_fused.png").stat().st_size > 1000
    assert (tmp_path / "out" / "automation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    calls = len(encoder.calls)
    run_bench(train, None, test, encoder, cache, BenchConfig(name="again", timing=False))
    assert len(encoder.calls) == calls  # the second run reads every embedding from the cache


def test_fine_labels_must_form_a_hierarchy() -> None:
    tree = fine_hierarchy(["11", "12", "21"], ["A", "A", "B"], ["A", "B"])
    assert tree.path("12") == ("A", "12") and tree.leaves == ("11", "12", "21")
    with pytest.raises(ValueError, match="'11' sits under two labels"):
        fine_hierarchy(["11", "11"], ["A", "B"], ["A", "B"])
    with pytest.raises(ValueError, match="also labels: 'A'"):
        fine_hierarchy(["A"], ["B"], ["A", "B"])


def test_cross_validation_scores_every_row_once(tmp_path: Path) -> None:
    pool = split(topic_texts(10, seed=2))
    cv = run_cv(pool, 3, FakeEncoder(), None, BenchConfig(name="cv", timing=False))
    assert cv["folds"] == 3 and cv["n"] == 30
    assert set(cv["methods"]) == METHODS
    assert 0.0 <= cv["methods"]["fused"]["accuracy_std"] <= cv["methods"]["fused"]["accuracy_mean"] <= 1.0


@pytest.mark.slow
def test_bench_command_with_the_real_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path / "state"))
    from app.settings import get_settings

    get_settings.cache_clear()
    with (DATA_DIR / "vacancies.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    subset = [r for r in rows if r["label"] in {"Bygge og anlæg", "It og teleteknik", "Ledelse"}]
    for name, part in (("train", subset[::2]), ("test", subset[1::2])):
        with (tmp_path / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "text", "label"])
            writer.writeheader()
            writer.writerows(part)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--train",
            str(tmp_path / "train.csv"),
            "--test",
            str(tmp_path / "test.csv"),
            "--out",
            str(out),
            "--no-timing",
        ],
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == len(subset[1::2]) and metrics["methods"]["fused"]["accuracy"] >= 0.9
    assert metrics["embedder"].startswith("sentence-transformers/all-MiniLM-L6-v2")
    assert "timing" not in metrics  # --no-timing is honoured


@pytest.mark.slow
def test_bench_finetune_adds_the_fine_tuned_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench --finetune` on a tiny slice with the real MiniLM: every ft_* row, the fine-tuning record, the report."""
    monkeypatch.setenv("JOBCLASS_STATE_DIR", str(tmp_path / "state"))
    from app.bench.markdown import FT_METHODS
    from app.settings import get_settings

    get_settings.cache_clear()
    with (DATA_DIR / "vacancies.csv").open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] in {"Bygge og anlæg", "It og teleteknik", "Ledelse"}]
    for name, part in (("train", rows[:48:2]), ("test", rows[1:48:2])):
        with (tmp_path / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["id", "text", "label"])
            writer.writeheader()
            writer.writerows(part)
    out = tmp_path / "out"
    args = ["bench", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"), "--out", str(out)]
    args += ["--no-timing", "--finetune", "--ft-objective", "softmax", "--ft-epochs", "1", "--ft-batch-size", "8"]
    result = CliRunner().invoke(cli, args)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(FT_METHODS) <= set(metrics["methods"])
    assert metrics["methods"]["ft_fused"]["accuracy"] >= 0.8  # three well-separated categories
    assert metrics["methods"]["fused_holdout"]["accuracy"] >= 0.8  # the frozen encoder under the ft protocol
    ft = metrics["finetune"]
    assert ft["params"]["objective"] == "softmax" and ft["steps"] >= 1 and ft["texts_per_s"] > 0
    report = (out / "report.md").read_text()
    assert "## Fine-tuned encoder" in report and "softmax objective" in report and "| ft_fused |" in report
    assert "ft_fused − fused:" in report and "ft_fused − fused_holdout:" in report

    fine = CliRunner().invoke(cli, [*args, "--ft-fine-labels"])
    assert fine.exit_code == 1 and "label_fine" in fine.output  # clear error, no traceback

    # Cross-validation fine-tunes once per fold, on that fold's training part, and averages the ft rows.
    cv_out = tmp_path / "cv"
    cv_args = ["bench", "--train", str(tmp_path / "train.csv"), "--folds", "2", "--out", str(cv_out), "--finetune"]
    cv_args += ["--ft-objective", "softmax", "--ft-epochs", "1", "--ft-batch-size", "8"]
    result = CliRunner().invoke(cli, cv_args)
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    cv = json.loads((cv_out / "cv.json").read_text())
    assert set(FT_METHODS) <= set(cv["methods"]) and cv["methods"]["ft_fused"]["accuracy_mean"] >= 0.7
    assert [run["n_train_texts"] for run in cv["finetune"]] == [10, 10]  # 12 per fold, 2 carved out for tuning


def test_target_checks_against_hand_computed_margins() -> None:
    def row(acc: float, f1: float) -> dict[str, float]:
        return {"accuracy": acc, "macro_f1": f1}

    result = {
        "methods": {
            "tfidf_lr": row(0.70, 0.60),
            "head": row(0.66, 0.62),
            "knn": row(0.69, 0.58),
            "fused": row(0.71, 0.61),
            "fused_int8": row(0.71, 0.61),
            "fused_pruned": row(0.70, 0.60),
            "fused_int8_pruned": row(0.704, 0.60),
            "lexical": row(0.68, 0.63),
        }
    }
    d = target_checks(result)["val"]
    assert d["fused_minus_head"] == pytest.approx(5.0) and d["fused_minus_knn"] == pytest.approx(2.0)
    assert d["fused_minus_head_f1"] == pytest.approx(-1.0) and d["fused_minus_knn_f1"] == pytest.approx(3.0)
    assert d["fused_minus_tfidf"] == pytest.approx(1.0) and d["fused_minus_lexical"] == pytest.approx(3.0)
    assert d["fused_minus_lexical_f1"] == pytest.approx(-2.0)
    assert d["compression_loss"] == pytest.approx(1.0)  # the pruned head: 0.71 -> 0.70
    table = targets_markdown([("toy", target_checks(result))])
    assert "| toy | ✓ +5.00 / ✗ -1.00 | ✓ +2.00 / ✓ +3.00 | ✓ +3.00 / ✗ -2.00 | ✓ +1.00 | ✗ -1.00 |" in table
