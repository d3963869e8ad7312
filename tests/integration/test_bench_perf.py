"""`jobclass bench-perf` end to end on a tiny slice: every section runs and the report renders.

Speeds are not asserted (they live in docs/performance.md); what is asserted is that the numbers are
the ones the report claims to be: the overhead is the median of the paired rounds, recall is against
exact search, the breakdown names the service's own steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.bench.markdown import perf_markdown as markdown
from app.bench.markdown import write_perf_outputs as write_outputs
from app.bench.perf import PerfConfig, run_perf


@pytest.mark.slow
def test_perf_bench_runs_every_section_on_a_tiny_slice(tmp_path: Path) -> None:
    cfg = PerfConfig(
        sizes=(400,),
        n_queries=8,
        local_max=400,
        local_queries_large=4,
        hnsw_max=400,
        n_short=2,
        n_long=1,
        service_batch=6,
        clients=2,
        requests_per_client=2,
        service_rounds=3,
        train_per_label=2,
        signal_rounds=4,
        sections=("embedding", "service", "microbatch", "knn", "signals"),
    )
    result = run_perf(cfg, echo=lambda _: None)

    svc = result["service"]
    assert svc["n_texts"] == 6 and len(svc["overhead_pct_rounds"]) == 3
    assert svc["overhead_pct"] == pytest.approx(float(np.median(svc["overhead_pct_rounds"])))
    assert set(svc["breakdown"]) == {"clean_s", "knn_search_s", "fusion_s", "store_predictions_s"}
    assert all(v >= 0 for v in svc["breakdown"].values())

    mb = result["microbatch"]
    for name in ("ads_60w", "titles_6w"):
        runs = mb["sets"][name]
        assert runs["with"]["model_calls"] >= 1 and runs["with"]["n"] == mb["requests"] == 4
        assert runs["speedup"] > 0

    sig = result["signals"]
    assert sig["rounds"] == 4 and sig["served"]["n"] == sig["two_signal"]["n"] == 4
    assert sig["p50_ratio"] == pytest.approx(sig["served"]["p50_ms"] / sig["two_signal"]["p50_ms"])

    knn = result["knn"]["sizes"]["400"]
    assert knn["numpy_exact"]["recall_at_10"] == 1.0
    for row in knn.values():
        if isinstance(row, dict) and row.get("recall_at_10") is not None:
            assert 0.0 <= row["recall_at_10"] <= 1.0

    report = markdown(result)
    assert "## Service overhead" in report and "| knn_search |" in report and "## Micro-batching" in report
    assert "## Cost of the lexical signal and hybrid retrieval" in report
    write_outputs(result, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["service"]["rounds"] == 3
    assert (tmp_path / "report.md").read_text() == report
