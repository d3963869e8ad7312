"""`jobclass bench-bulk`'s report: every section it measured is rendered, a lost or repeated row is a ✗."""

from __future__ import annotations

from typing import Any

from app.bench.bulk import bulk_markdown


def result(**kill: Any) -> dict[str, Any]:
    speed = {"rows": 300, "mean_chars": 27, "raw_encoder_per_s": 226.8, "classify_file_per_s": 122.2, "ratio": 0.539}
    return {
        "embedder": "mini",
        "machine": {"cpu_count": 2, "load_average": [1.0, 2.0, 3.0]},
        "seconds": 355.0,
        "setup_seconds": 314.0,
        "speed": {"titles": speed},
        "ray": {
            "rows": 300,
            "mean_chars": 1461,
            "workers": 2,
            "one_process_per_s": 100.0,
            "ray_per_s": 85.0,
            "ratio": 0.85,
            "ray_init_seconds": 12.5,
        },
        "kill": {
            "rows": 300,
            "part_rows": 100,
            "killed_at_records": 200,
            "first_seconds": 17.0,
            "finished_before_the_kill": False,
            "resumed": True,
            "resume_exit_code": 0,
            "resume_seconds": 14.0,
            "output_rows": 300,
            "distinct_ids": 300,
            "exactly_once_in_order": True,
            "parts_left": False,
            **kill,
        },
    }


def test_every_section_is_in_the_report() -> None:
    text = bulk_markdown(result())
    assert "| titles | 300 | 27 | 226.8 | 122.2 | 0.54 | – | – |" in text  # a run from before --knn store
    assert "| 300 | 1461 | 2 | 100.0 | 85.0 | 0.85 | 12.5 s |" in text
    assert "200 records committed" in text and "exactly once and in order: ✓" in text


def test_the_store_queried_run_has_its_own_columns() -> None:
    speed = {**result()["speed"]["titles"], "knn_store_per_s": 61.1, "knn_store_ratio": 0.2694}
    text = bulk_markdown({**result(), "speed": {"titles": speed}})
    assert "| titles | 300 | 27 | 226.8 | 122.2 | 0.54 | 61.1 | 0.27 |" in text


def test_a_run_without_the_speed_section_has_no_speed_table() -> None:
    text = bulk_markdown({**result(), "speed": {}})
    assert "× raw encoder" not in text and "Ray Data against one process" in text


def test_a_repeated_row_or_a_left_part_is_a_failure() -> None:
    assert "in order: ✗" in bulk_markdown(result(exactly_once_in_order=False, distinct_ids=299))
    assert "in order: ✗" in bulk_markdown(result(parts_left=True))
    assert "did not say it resumed" in bulk_markdown(result(resumed=False))
