"""Benchmarks and tooling: ``bench``, ``bench-all``, ``bench-danish``, ``bench-perf``, ``loadtest``,
``train-extractor``.
The work is done by ``app.bench`` (imported inside each command: torch and sentence-transformers load
only when a benchmark runs)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli import common
from app.errors import InvalidInput
from app.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from app.bench.accuracy import BenchConfig
    from app.services.dataset import Split
    from indexing.cache import EmbeddingCache
    from indexing.embed import Encoder
    from indexing.finetune import FinetuneConfig


def _finetune_rows(
    ft_cfg: FinetuneConfig, fine_labels: bool, encoder: Encoder, cache: EmbeddingCache
) -> Callable[..., dict[str, Any]]:
    """``extra_rows`` of ``run_cv`` (also called on the test split): the fine-tuned encoder's methods, with
    a fresh copy of ``ft_cfg`` seeded by each run's config."""
    from dataclasses import replace

    from app.bench.finetune_rows import run_finetune_rows

    def rows(train: Split, test: Split, cfg: BenchConfig, val: Split | None = None) -> dict[str, Any]:
        ft = replace(ft_cfg, seed=cfg.seed)
        return run_finetune_rows(train, val, test, encoder, cfg, ft, typer.echo, fine_labels=fine_labels, cache=cache)

    return rows


def _write_bench(result: dict[str, Any], out: Path) -> None:
    """metrics.json, report.md (with the fine-tuned rows when present) and the summary lines."""
    from app.bench.markdown import FT_METHODS, HIER_METHODS, METHOD_ORDER, finetune_markdown, write_outputs

    write_outputs(result, out)
    if "finetune" in result:
        with (out / "report.md").open("a") as report:
            report.write(finetune_markdown(result))
    m = result["methods"]
    hier = tuple(name for name in HIER_METHODS if name in m)
    for method in (*METHOD_ORDER, *hier, *(FT_METHODS if "finetune" in result else ())):
        typer.echo(f"  {method:18s} accuracy {m[method]['accuracy']:.4f}  macro-F1 {m[method]['macro_f1']:.4f}")
    typer.echo(f"wrote {out}/metrics.json, report.md, confusion_fused.png")


def _run_bench(
    settings: Settings,
    paths: tuple[Path, Path | None, Path | None],
    out: Path,
    folds: int,
    cfg: BenchConfig,
    finetune: tuple[FinetuneConfig, bool] | None,
) -> None:
    """``bench`` without ``--extract``: TRAIN/TEST and/or k-fold CV, then the outputs."""
    from app.bench.accuracy import load_bench_encoder, run_bench, run_cv
    from app.services.dataset import Split

    train, test, val = paths
    encoder, cache = load_bench_encoder(settings)
    extra = _finetune_rows(*finetune, encoder, cache) if finetune else None
    tr = common.read_split(train, settings)
    va = common.read_split(val, settings) if val else None
    te = common.read_split(test, settings) if test is not None else None
    result: dict[str, Any] = {}
    if te is not None:
        result = run_bench(tr, va, te, encoder, cache, cfg, typer.echo)
    if folds >= 2:
        cv = run_cv(Split.concat(tr, va) if va else tr, folds, encoder, cache, cfg, typer.echo, extra_rows=extra)
        if not result:
            typer.echo(json.dumps(cv, indent=2))
            out.mkdir(parents=True, exist_ok=True)
            (out / "cv.json").write_text(json.dumps(cv, indent=2))
            return
        result["cv"] = cv
    if extra is not None and te is not None:
        ft = extra(tr, te, cfg, va)
        result["methods"].update(ft["methods"])
        result["finetune"] = ft["finetune"]
    _write_bench(result, out)


def bench(
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="training CSV (id,text,label)")],
    out: Annotated[Path, typer.Option(help="output folder for metrics.json, report.md, confusion_fused.png")],
    test: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="test CSV")] = None,
    val: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="validation CSV (default: 10% of train)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="dataset name in the report")] = None,
    folds: Annotated[int, typer.Option(help="k-fold cross-validation over train (+val); 0 = off")] = 0,
    timing: Annotated[bool, typer.Option(help="measure throughput and latency")] = True,
    finetune: Annotated[bool, typer.Option(help="also fine-tune the encoder: rows ft_head, ft_knn, ft_fused…")] = False,
    ft_epochs: Annotated[float, typer.Option(min=0.01, help="fine-tuning epochs (with --finetune)")] = 1.0,
    ft_max_pairs: Annotated[int, typer.Option(min=1, help="fine-tuning pairs per class (with --finetune)")] = 200,
    ft_batch_size: Annotated[int, typer.Option(min=2, help="fine-tuning batch size (with --finetune)")] = 32,
    ft_objective: Annotated[
        str, typer.Option(help="fine-tuning objective: triplets, supcon or softmax (with --finetune)")
    ] = "triplets",
    ft_learning_rate: Annotated[float, typer.Option(min=0.0, help="encoder learning rate (with --finetune)")] = 3e-5,
    ft_fine_labels: Annotated[
        bool, typer.Option(help="fine-tune on label_fine, score coarse (with --finetune; needs label_fine)")
    ] = False,
    extract: Annotated[
        bool, typer.Option(help="compare raw vs cleaned vs extracted text instead (extract.json, extract.md)")
    ] = False,
    extractor: Annotated[
        str | None, typer.Option(help="GLiNER folder or name for --extract (default: JOBCLASS_EXTRACTOR_MODEL)")
    ] = None,
) -> None:
    """Train every method on TRAIN (tuning on VAL), score on TEST; write metrics.json and report.md."""
    if extract:
        _bench_extract(train, out, test, name, extractor)
        return
    from app.bench.accuracy import BenchConfig

    if test is None and folds < 2:
        raise InvalidInput("give --test, or --folds K (K >= 2) for cross-validation")
    objective = common.objective_option(ft_objective, "--ft-objective")
    settings = get_settings()
    cfg = BenchConfig(
        name=name or train.parent.name,
        abstain_threshold=settings.abstain_threshold,
        timing=timing,
        lexical_language=settings.lexical_language,
        hierarchy_threshold=settings.hierarchy_threshold,
        coverage=settings.coverage,
        min_class_rows=settings.conformal_min_class_rows,
    )
    ft = None
    if finetune:
        from indexing.finetune import FinetuneConfig

        ft_cfg = FinetuneConfig(
            objective=objective,
            epochs=ft_epochs,
            max_pairs_per_class=ft_max_pairs,
            batch_size=ft_batch_size,
            learning_rate=ft_learning_rate,
            seed=cfg.seed,
        )
        ft = (ft_cfg, ft_fine_labels)
    _run_bench(settings, (train, test, val), out, folds, cfg, ft)


def _bench_extract(train: Path, out: Path, test: Path | None, name: str | None, extractor: str | None) -> None:
    """``bench --extract``: raw vs cleaned vs extracted text on TRAIN (split) or TRAIN/TEST."""
    from app.bench.accuracy import BenchConfig, load_bench_encoder
    from app.bench.extract import run_extract_bench, write
    from indexing.extract import Extractor, parse_labels

    settings = get_settings()
    model = extractor or settings.extractor_model
    if not model:
        raise InvalidInput("--extract needs --extractor PATH or JOBCLASS_EXTRACTOR_MODEL")
    gliner = Extractor.load(
        model, labels=parse_labels(settings.extractor_labels), threshold=settings.extractor_threshold
    )
    encoder, _ = load_bench_encoder(settings)
    cfg = BenchConfig(name=name or train.stem, abstain_threshold=settings.abstain_threshold, timing=False)
    result = run_extract_bench(
        train, encoder, gliner, cfg, typer.echo, test=test, clean_max_chars=settings.clean_max_chars
    )
    write(result, out)
    typer.echo(f"wrote {out}/extract.json, extract.md")


def bench_perf(
    out: Annotated[Path, typer.Option(help="output folder for metrics.json and report.md")] = Path("perf"),
    only: Annotated[
        str | None, typer.Option(help="comma-separated sections: embedding,service,microbatch,knn,memory")
    ] = None,
    sizes: Annotated[str, typer.Option(help="index sizes for the kNN section")] = "10000,100000,1000000",
    queries: Annotated[int, typer.Option(help="kNN queries per size")] = 200,
) -> None:
    """Speed side by side: embedder dtypes, service overhead, micro-batching, kNN backends, memory."""
    from app.bench.markdown import write_perf_outputs
    from app.bench.perf import PerfConfig, iter_sections, run_perf

    try:
        cfg = PerfConfig(
            sizes=tuple(int(s) for s in sizes.split(",") if s.strip()),
            n_queries=queries,
            sections=tuple(iter_sections(only)),
        )
    except ValueError as exc:  # the option values themselves: not an integer, not a section
        raise InvalidInput(str(exc)) from exc
    result = run_perf(cfg, typer.echo)
    write_perf_outputs(result, out)
    typer.echo(f"wrote {out}/metrics.json and {out}/report.md")


def bench_encoders(
    out: Annotated[Path, typer.Option(help="output folder for encoders.json and encoders.md")] = Path("perf"),
    rounds: Annotated[int, typer.Option(min=1, help="timed rounds per variant (the median counts)")] = 5,
    variants: Annotated[
        str | None,
        typer.Option(help="comma-separated: torch-float32,torch-bfloat16,openvino-bf16,openvino-int8,onnx-int8"),
    ] = None,
    datasets: Annotated[
        Path | None, typer.Option(help="folder with jobbert_titles_isco, en_google_job_skills, banking77")
    ] = None,
    accuracy: Annotated[bool, typer.Option("--accuracy/--speed-only", help="also LR and kNN accuracy")] = True,
) -> None:
    """Encoder backends side by side: texts/s on titles and postings, cosine to float32, LR and kNN accuracy."""
    from app.bench.encoders import VARIANTS, EncoderBenchConfig, run_encoder_bench, write_encoder_outputs

    cfg = EncoderBenchConfig(rounds=rounds, accuracy=accuracy)
    if datasets is not None:
        cfg.datasets = datasets
    if variants:
        chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
        unknown = sorted(set(chosen) - {v.name for v in VARIANTS})
        if unknown:
            raise InvalidInput(
                f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(v.name for v in VARIANTS)}"
            )
        cfg.variants = chosen
    result = run_encoder_bench(get_settings(), cfg, typer.echo)
    write_encoder_outputs(result, out)
    typer.echo(f"wrote {out}/encoders.json and {out}/encoders.md")


def bench_bulk(
    out: Annotated[Path, typer.Option(help="output folder for bulk.json and bulk.md")] = Path("docs/perf"),
    titles: Annotated[int, typer.Option(min=10, help="job titles in the speed and Ray runs")] = 2000,
    ads: Annotated[int, typer.Option(min=10, help="long postings in the speed run")] = 300,
    rounds: Annotated[int, typer.Option(min=1, help="alternating rounds per path (the median counts)")] = 2,
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="classify-file against the raw encoder")] = True,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="also Ray Data against one process")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors")] = 2,
    ray_set: Annotated[str, typer.Option(help="texts of the Ray comparison: titles or ads")] = "titles",
    ray_rows: Annotated[int, typer.Option(min=10, help="rows of the Ray comparison")] = 2000,
    kill: Annotated[bool, typer.Option("--kill/--no-kill", help="also kill -9 at half and resume")] = True,
    datasets: Annotated[Path | None, typer.Option(help="folder with jobbert_titles_isco, en_google_job_skills")] = None,
) -> None:
    """classify-file against the raw encoder (titles and postings), Ray against one process, kill -9 and resume."""
    from app.bench.bulk import BulkBenchConfig, run_bulk_bench, write_bulk_outputs

    try:
        cfg = BulkBenchConfig(
            n_titles=titles,
            n_ads=ads,
            rounds=rounds,
            speed=speed,
            ray=ray,
            workers=workers,
            ray_set=ray_set,
            ray_rows=ray_rows,
            kill=kill,
        )
    except ValueError as exc:  # the option values themselves (--ray-set)
        raise InvalidInput(str(exc)) from exc
    if datasets is not None:
        cfg.datasets = datasets
    result = run_bulk_bench(get_settings(), cfg, typer.echo)
    write_bulk_outputs(result, out)
    typer.echo(f"wrote {out}/bulk.json and {out}/bulk.md")


def _bench_dataset(
    folder: Path, settings: Settings, encoder: Encoder, cache: EmbeddingCache, out: Path, cv_below: int
) -> dict[str, Any]:
    """One dataset of ``bench-all``: train.csv → val.csv (and 5-fold CV when small); writes its folder."""
    from app.bench.accuracy import BenchConfig, run_bench, run_cv
    from app.bench.markdown import write_outputs
    from app.services.dataset import Split

    cfg = BenchConfig(
        name=folder.name,
        abstain_threshold=settings.abstain_threshold,
        lexical_language=settings.lexical_language,
        hierarchy_threshold=settings.hierarchy_threshold,
        coverage=settings.coverage,
        min_class_rows=settings.conformal_min_class_rows,
    )
    train_split = common.read_split(folder / "train.csv", settings)
    test_split = common.read_split(folder / "val.csv", settings)
    result = run_bench(train_split, None, test_split, encoder, cache, cfg, typer.echo)
    if len(train_split) < cv_below:
        result["cv"] = run_cv(Split.concat(train_split, test_split), 5, encoder, cache, cfg, typer.echo)
    write_outputs(result, out / "benchmarks" / folder.name)
    return result


def bench_all(
    datasets: Annotated[Path, typer.Option(help="folder of datasets, each with train.csv and val.csv")] = (
        PROJECT_ROOT.parent / "shared" / "datasets"
    ),
    out: Annotated[Path, typer.Option(help="docs folder")] = PROJECT_ROOT / "docs",
    cv_below: Annotated[int, typer.Option(help="also run 5-fold CV on datasets with fewer training rows")] = 2000,
) -> None:
    """Benchmark every shared dataset: train on train.csv (tuning on 10% of it), score on val.csv;
    write docs/benchmarks.md and docs/benchmarks/<name>/."""
    from app.bench.accuracy import load_bench_encoder, target_checks
    from app.bench.markdown import benchmarks_markdown, markdown_report, summary_row

    settings = get_settings()
    encoder, cache = load_bench_encoder(settings)
    sections, summary_rows, checks = [], [], []
    started = time.perf_counter()
    for folder in sorted(p for p in datasets.iterdir() if (p / "train.csv").is_file() and (p / "val.csv").is_file()):
        result = _bench_dataset(folder, settings, encoder, cache, out, cv_below)
        sections.append(markdown_report(result, f"benchmarks/{folder.name}/confusion_fused.png", heading="###"))
        summary_rows.append(summary_row(folder.name, result))
        checks.append((folder.name, target_checks(result)))
    dtype = getattr(encoder, "dtype", settings.embedding_dtype)
    text = benchmarks_markdown(
        settings.embedding_model,
        f"backend {getattr(encoder, 'backend_label', 'torch')}, dtype {dtype}, chunking {settings.embedding_chunking}",
        time.perf_counter() - started,
        settings.embedding_cache,
        summary_rows,
        checks,
        sections,
    )
    (out / "benchmarks.md").write_text(text)
    typer.echo(f"wrote {out / 'benchmarks.md'}")


def loadtest(
    url: Annotated[str, typer.Option(help="The running server, e.g. http://127.0.0.1:8000")],
    clients: Annotated[int, typer.Option(min=1, max=1024, help="Concurrent clients (threads).")] = 32,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds to run.")] = 60.0,
    pid: Annotated[int | None, typer.Option(help="Server process id for RSS (else GET /health).")] = None,
    out: Annotated[Path, typer.Option(help="Markdown report; the JSON goes next to it.")] = PROJECT_ROOT
    / "docs"
    / "operations"
    / "loadtest.md",
    token: Annotated[str | None, typer.Option(envvar="JOBCLASS_LOADTEST_TOKEN", help="Bearer token.")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Per-request timeout in seconds.")] = 30.0,
) -> None:
    """Drive a running server with a mix of classify, batch and search requests; report throughput,
    p50/p99 latency, errors and the server's RSS before and after. Exits 1 if any request failed."""
    from app.bench.loadtest import run_loadtest, write_report

    report = run_loadtest(url, clients=clients, duration=duration, pid=pid, timeout=timeout, token=token)
    md, js = write_report(report, out)
    typer.echo(json.dumps(report.to_dict(), indent=2))
    typer.echo(f"wrote {md} and {js}")
    if report.errors:
        raise typer.Exit(1)


def train_extractor_command(
    spans: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="span-annotated JSON lines")],
    out: Annotated[Path, typer.Option(help="folder for the GLiNER model and metrics.json")],
    steps: Annotated[int, typer.Option(min=1, help="training steps (at most)")] = 300,
    max_cpu_minutes: Annotated[float | None, typer.Option(help="stop once this much CPU time is used")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="stop once this much wall-clock time has passed")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    holdout: Annotated[float, typer.Option(min=0.05, max=0.5, help="held-out fraction for P/R/F1")] = 0.2,
    by_category: Annotated[bool, typer.Option(help="hold out whole categories (unseen titles)")] = False,
    backbone: Annotated[str | None, typer.Option(help="local transformer folder (default: packaged MiniLM)")] = None,
    init_from: Annotated[Path | None, typer.Option(help="continue training this saved GLiNER model")] = None,
    seed: Annotated[int, typer.Option()] = 6,
) -> None:
    """Fine-tune a GLiNER extractor on SPANS from a local backbone; save it to OUT with metrics.json."""
    from indexing.extract_training import TrainConfig, train_extractor

    config = TrainConfig(
        steps=steps,
        max_cpu_seconds=max_cpu_minutes * 60 if max_cpu_minutes else None,
        max_wall_seconds=max_minutes * 60 if max_minutes else None,
        threads=threads,
        batch_size=batch_size,
        holdout=holdout,
        by_category=by_category,
        seed=seed,
    )
    result = train_extractor(spans, out, config, backbone=backbone, init_from=init_from, log_fn=typer.echo)
    s = result.scores
    typer.echo(f"held-out ({result.n_heldout} examples): P {s.precision:.3f}  R {s.recall:.3f}  F1 {s.f1:.3f}")
    typer.echo(f"wrote {out}/metrics.json")


def bench_danish(
    out: Annotated[Path, typer.Option(help="folder for danish.json and danish.md")] = PROJECT_ROOT / "docs",
) -> None:
    """Set up a fresh default installation in a temporary folder and score it on the Danish ads and titles
    of data/heldout/ (written apart from the sample, never trained on); writes OUT/danish.{json,md}."""
    from app.bench.danish import run_danish_eval, write

    result = run_danish_eval(get_settings(), typer.echo)
    for name, scored in result["sets"].items():
        typer.echo(f"{name}: accuracy {scored['accuracy']:.3f} on {scored['n']} (target {result['targets'][name]})")
    paths = write(result, out)
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")


def register(cli: typer.Typer) -> None:
    cli.command()(bench)
    cli.command("bench-danish")(bench_danish)
    cli.command("bench-perf")(bench_perf)
    cli.command("bench-encoders")(bench_encoders)
    cli.command("bench-bulk")(bench_bulk)
    cli.command("bench-all")(bench_all)
    cli.command()(loadtest)
    cli.command("train-extractor")(train_extractor_command)
