"""`jobclass bench-bulk`: the bulk path side by side with the raw encoder, Ray beside one process, and a
kill -9 in the middle of a run.

A fresh default installation is built in a temporary state folder (as `make serve` builds it: the shipped
sample trained and indexed), then, in one process and one run so the ratios compare:

- **speed**: for job titles and for long postings (``../shared/datasets``), the raw encoder
  (``encoder.encode`` of the cleaned texts in batches), ``classify_file`` (read → clean → embed →
  hybrid kNN on the in-memory index → fuse → write a CSV) and ``classify_file`` querying the store per
  batch (``--knn store``) over the same texts, alternating, ``rounds`` times each; the medians and their
  ratios;
- **ray** (optional): ``classify_file_on_ray`` on the titles with ``workers`` actors against one process;
  ``ray.init`` is reported apart, actor start-up (model loading, the index copy) counts;
- **kill -9 and resume**: ``jobclass classify-file`` as a subprocess on the titles, SIGKILLed once its
  checkpoint passes half the rows, then run again: every input row must be in the output exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.bench.encoders import DATASETS
from app.runtime import Runtime
from app.services.bootstrap import bootstrap
from app.services.bulk import CHECKPOINT, BulkOptions, KnnSource, classify_file, parts_dir, read_output
from app.services.dataset import load_split
from app.settings import Settings
from indexing.backends import backend_label
from indexing.clean import clean_text
from indexing.embed import effective_dtype, native_bf16

Say = Callable[[str], None]
ENCODE_BATCH = 256


@dataclass
class BulkBenchConfig:
    datasets: Path = DATASETS
    n_titles: int = 2000
    n_ads: int = 300
    rounds: int = 2
    speed: bool = True
    ray: bool = False
    workers: int = 2
    ray_set: str = "titles"  # or "ads": the texts of the Ray comparison
    ray_rows: int = 2000
    kill: bool = True
    kill_rows: int = 1000  # titles in the kill -9 run
    part_rows: int = 100

    def __post_init__(self) -> None:
        if self.ray_set not in ("titles", "ads"):
            raise ValueError(f"ray_set must be titles or ads, not {self.ray_set!r}")


def _texts(path: Path, n: int) -> list[str]:
    """The first ``n`` texts of a labelled CSV, repeated when it has fewer."""
    texts = list(load_split(path).texts)
    if not texts:
        raise ValueError(f"{path} has no texts")
    return [texts[i % len(texts)] for i in range(n)]


def _mean_chars(texts: Sequence[str]) -> int:
    return round(sum(map(len, texts)) / len(texts))


def _write_input(path: Path, texts: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "text"))
        writer.writerows((f"r{i:07d}", t) for i, t in enumerate(texts))
    return path


def _raw_encode(runtime: Runtime, texts: Sequence[str]) -> float:
    """Seconds to clean and embed ``texts`` with the service's encoder, in batches."""
    limit = runtime.settings.clean_max_chars
    start = time.perf_counter()
    for i in range(0, len(texts), ENCODE_BATCH):
        runtime.encoder.encode([clean_text(t, max_chars=limit) for t in texts[i : i + ENCODE_BATCH]])
    return time.perf_counter() - start


def _bulk(runtime: Runtime, source: Path, out: Path, knn: KnnSource = "auto") -> float:
    options = BulkOptions(source, out, "csv", "csv", overwrite=True, restart=True, knn=knn)
    start = time.perf_counter()
    summary = classify_file(runtime, options)
    seconds = time.perf_counter() - start
    if summary.written + summary.errors != summary.records:
        raise RuntimeError(f"classify-file lost rows: {summary}")
    return seconds


def _speed(runtime: Runtime, name: str, texts: Sequence[str], folder: Path, rounds: int, say: Say) -> dict[str, Any]:
    source = _write_input(folder / f"{name}.csv", texts)
    _raw_encode(runtime, texts[:64])  # warm-up: first calls allocate
    raw, bulk, queried = [], [], []
    for r in range(rounds):
        raw.append(_raw_encode(runtime, texts))
        bulk.append(_bulk(runtime, source, folder / f"{name}-out.csv"))
        queried.append(_bulk(runtime, source, folder / f"{name}-store-out.csv", "store"))
        rates = (
            f"raw encoder {len(texts) / raw[-1]:.1f}/s, classify-file {len(texts) / bulk[-1]:.1f}/s, "
            f"with --knn store {len(texts) / queried[-1]:.1f}/s"
        )
        say(f"  {name} round {r + 1}: {rates}")
    raw_s, bulk_s, store_s = statistics.median(raw), statistics.median(bulk), statistics.median(queried)
    return {
        "rows": len(texts),
        "mean_chars": _mean_chars(texts),
        "raw_encoder_per_s": len(texts) / raw_s,
        "classify_file_per_s": len(texts) / bulk_s,
        "ratio": raw_s / bulk_s,
        "knn_store_per_s": len(texts) / store_s,
        "knn_store_ratio": raw_s / store_s,
        "raw_seconds": raw,
        "classify_file_seconds": bulk,
        "knn_store_seconds": queried,
    }


def _ray(runtime: Runtime, settings: Settings, texts: Sequence[str], folder: Path, workers: int) -> dict[str, Any]:
    from app.services.bulk_ray import classify_file_on_ray, runtime_factory

    source = _write_input(folder / "ray-input.csv", texts)
    local = _bulk(runtime, source, folder / "ray-local.csv")
    options = BulkOptions(source, folder / "ray-out", "csv", "parquet", overwrite=True)
    result = classify_file_on_ray(runtime_factory(settings), settings, options, workers=workers)
    local_rate = len(texts) / local
    return {
        "rows": len(texts),
        "mean_chars": _mean_chars(texts),
        "workers": workers,
        "one_process_per_s": local_rate,
        "ray_per_s": result.rate,
        "ratio": result.rate / local_rate,
        "ray_init_seconds": result.startup_seconds,
        "ray_seconds": result.seconds,
        "written": result.written,
    }


def _records_done(parts: Path) -> int:
    try:
        return int(json.loads((parts / CHECKPOINT).read_text())["records"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_and_resume(state: Path, texts: Sequence[str], folder: Path, part_rows: int, say: Say) -> dict[str, Any]:
    """``classify-file`` in a subprocess, SIGKILLed past half of the rows, then the same command again."""
    source = _write_input(folder / "kill-titles.csv", texts)
    out = folder / "kill-out.csv"
    env = {**os.environ, "JOBCLASS_STATE_DIR": str(state), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "classify-file",
        str(source),
        "--out",
        str(out),
    ]
    command += ["--part-rows", str(part_rows), "--batch-size", str(part_rows)]
    half = len(texts) // 2
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and _records_done(parts_dir(out)) < half:
        time.sleep(0.2)
    killed_at = _records_done(parts_dir(out))
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_s = time.perf_counter() - start
    say(f"  killed at {killed_at}/{len(texts)} records after {first_s:.0f} s; resuming")
    start = time.perf_counter()
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    rows = read_output(out) if out.is_file() else []
    ids = [str(r["id"]) for r in rows]
    expected = [f"r{i:07d}" for i in range(len(texts))]
    return {
        "rows": len(texts),
        "part_rows": part_rows,
        "killed_at_records": killed_at,
        "finished_before_the_kill": finished_first,
        "first_seconds": first_s,
        "resume_seconds": time.perf_counter() - start,
        "resume_exit_code": again.returncode,
        "resumed": "resumed after" in (again.stdout + again.stderr),
        "output_rows": len(ids),
        "distinct_ids": len(set(ids)),
        "exactly_once_in_order": ids == expected,
        "parts_left": parts_dir(out).exists(),
    }


@dataclass
class _Result:
    config: dict[str, Any]
    embedder: str
    setup_seconds: float
    backend: str = ""  # the encoder's backend and dtype as it ran here
    speed: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] | None = None
    kill: dict[str, Any] | None = None
    seconds: float = 0.0


def run_bulk_bench(settings: Settings, cfg: BulkBenchConfig, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    sources = {
        "titles": cfg.datasets / "jobbert_titles_isco" / "val.csv",
        "ads": cfg.datasets / "en_google_job_skills" / "train.csv",  # 614 postings, repeated when asked for more
    }
    titles, ads = _texts(sources["titles"], cfg.n_titles), _texts(sources["ads"], cfg.n_ads)
    with tempfile.TemporaryDirectory(prefix="jobclass-bulk-") as tmp:
        state, folder = Path(tmp) / "state", Path(tmp)
        fresh = settings.model_copy(update={"state_dir": state})
        runtime = Runtime(fresh)
        try:
            bootstrap(runtime, say)
            ran = runtime.settings  # after setup: the backend that really loaded
            result = _Result(
                config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
                embedder=fresh.embedding_model,
                backend=f"{backend_label(ran.embedding_backend, ran.embedding_quantization)}, "
                f"{effective_dtype(ran.embedding_dtype)}",
                setup_seconds=time.perf_counter() - started,
            )
            for name, texts in (("titles", titles), ("ads", ads)) if cfg.speed else ():
                say(f"speed: {name}")
                result.speed[name] = _speed(runtime, name, texts, folder, cfg.rounds, say)
            if cfg.ray:
                say(f"ray: {cfg.ray_rows} {cfg.ray_set}")
                result.ray = _ray(runtime, fresh, _texts(sources[cfg.ray_set], cfg.ray_rows), folder, cfg.workers)
        finally:
            runtime.close()
        if cfg.kill:
            say("kill -9 and resume")
            result.kill = _kill_and_resume(state, titles[: cfg.kill_rows], folder, cfg.part_rows, say)
    result.seconds = time.perf_counter() - started
    machine = {"cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "load_average": list(os.getloadavg())}
    return {**asdict(result), "machine": machine}


def cpu_model() -> str:
    """The CPU's name and whether it computes bfloat16 natively (the embedder's dtype follows it)."""
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {'native' if native_bf16() else 'no native'} bfloat16"


def bulk_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Bulk classification: classify-file against the raw encoder",
        "",
        "Generated by `jobclass bench-bulk` (`app/bench/bulk.py`): a fresh default setup (the shipped sample),",
        f"embedder `{result['embedder']}`{_backend(result)}, {result['machine']['cpu_count']} CPUs"
        + (f" ({result['machine']['cpu_model']})" if result["machine"].get("cpu_model") else "")
        + ", load average at the end "
        + ", ".join(f"{x:.1f}" for x in result["machine"]["load_average"])
        + f". Whole run {result['seconds']:.0f} s (setup {result['setup_seconds']:.0f} s).",
    ]
    if result["speed"]:
        lines += [
            "",
            "## Rows per second, side by side (median of the rounds, alternating)",
            "",
            "classify-file reads the index into memory once (the default, `--knn auto`); the last two columns",
            "query the store per batch instead (`--knn store`), as the service does.",
            "",
            "| texts | rows | mean chars | raw encoder /s | classify-file /s | × raw encoder "
            "| --knn store /s | × raw encoder |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for name, s in result["speed"].items():
        store = f"{s['knn_store_per_s']:.1f} | {s['knn_store_ratio']:.2f}" if "knn_store_per_s" in s else "– | –"
        lines.append(
            f"| {name} | {s['rows']} | {s['mean_chars']} | {s['raw_encoder_per_s']:.1f} | "
            f"{s['classify_file_per_s']:.1f} | {s['ratio']:.2f} | {store} |"
        )
    if result.get("ray"):
        r = result["ray"]
        lines += [
            "",
            "## Ray Data against one process",
            "",
            "| rows | mean chars | workers | one process /s | Ray /s | × one process | ray.init (apart) |",
            "|---|---|---|---|---|---|---|",
            f"| {r['rows']} | {r.get('mean_chars', '')} | {r['workers']} | {r['one_process_per_s']:.1f} | "
            f"{r['ray_per_s']:.1f} | {r['ratio']:.2f} | {r['ray_init_seconds']:.1f} s |",
        ]
    if result.get("kill"):
        k = result["kill"]
        ok = "✓" if k["exactly_once_in_order"] and not k["parts_left"] else "✗"
        lines += [
            "",
            "## kill -9 at about half, then resume",
            "",
            f"`jobclass classify-file` on {k['rows']} titles (parts of {k['part_rows']} rows), SIGKILLed with "
            f"{k['killed_at_records']} records committed after {k['first_seconds']:.0f} s"
            + (" (it had already finished)" if k["finished_before_the_kill"] else "")
            + f"; the same command again {'resumed' if k['resumed'] else 'did not say it resumed'} and exited "
            f"{k['resume_exit_code']} after {k['resume_seconds']:.0f} s. Output: {k['output_rows']} rows, "
            f"{k['distinct_ids']} distinct ids, every input row exactly once and in order: {ok}.",
        ]
    return "\n".join(lines) + "\n"


def _backend(result: dict[str, Any]) -> str:
    backend = result.get("backend")
    return f" ({backend})" if backend else ""


def write_bulk_outputs(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bulk.json").write_text(json.dumps(result, indent=2))
    (out / "bulk.md").write_text(bulk_markdown(result))
