"""``bench --extract`` on a tiny data set with the fake encoder and a fake extractor."""

from __future__ import annotations

from pathlib import Path

from app.bench.accuracy import BenchConfig
from app.bench.extract import VARIANTS, prepare, run_extract_bench, write
from app.bench.markdown import extract_markdown as markdown
from tests.factories import write_csv
from tests.fakes import FakeEncoder, topic_texts
from tests.integration.test_extraction_wiring import FakeExtractor


def test_variants_prepare_raw_cleaned_and_extracted_text() -> None:
    raw = ["<p>Carpenter, contact Mette Lund on +45 22 33 44 55</p>", "<b>nothing known</b>"]
    assert prepare("raw", raw, None, 4000)[0] == raw
    cleaned, seconds = prepare("cleaned", raw, None, 4000)
    assert cleaned == ["Carpenter, contact Mette Lund on [PHONE]", "nothing known"] and "clean" in seconds
    extracted, seconds = prepare("extracted", raw, FakeExtractor(), 4000)
    assert extracted == ["title: Carpenter", "nothing known"]  # fallback to the cleaned text
    assert seconds["n_fallback"] == 1 and "extract" in seconds


def test_extract_bench_scores_every_variant(tmp_path: Path) -> None:
    rows = [(i, f"<div>{text}</div>\nContact Mette Lund on 22334455", label) for i, text, label in topic_texts(16)]
    data = write_csv(tmp_path / "data.csv", rows)
    result = run_extract_bench(data, FakeEncoder(), FakeExtractor(), BenchConfig(name="tiny"), lambda _: None)
    assert list(result["variants"]) == list(VARIANTS)
    assert result["n_train"] + result["n_val"] + result["n_test"] == len(rows)
    for v in result["variants"].values():
        assert 0.0 <= v["accuracy"]["fused"] <= 1.0 and v["texts_per_second"] > 0
    assert result["variants"]["extracted"]["extract_texts_per_second"] > 0
    assert result["variants"]["raw"]["extract_texts_per_second"] is None
    assert "22334455" in result["variants"]["raw"]["example"]
    assert "22334455" not in result["variants"]["cleaned"]["example"]
    write(result, tmp_path / "out")
    assert (tmp_path / "out" / "extract.json").is_file()
    assert "| extracted |" in markdown(result)
