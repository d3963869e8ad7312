"""The ``jobclass`` command line: one entry point for setup, data, models and the server."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from tqdm import tqdm

from app.cli_errors import FriendlyErrors
from app.cli_finetune import encoders_cli, finetune_command, objective_option, upgrade_encoder_command
from app.encoders import resolve_encoder_settings
from app.errors import ServiceError
from app.runtime import Runtime
from app.settings import PROJECT_ROOT, Settings, get_settings
from indexing.store import StoreLockedError

cli = typer.Typer(
    help="Classify job vacancies and find similar ones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=FriendlyErrors,  # known errors print one line `error: …` instead of a traceback
)
models_cli = typer.Typer(help="List and activate model versions.", no_args_is_help=True, cls=FriendlyErrors)
cli.add_typer(models_cli, name="models")
cli.add_typer(encoders_cli, name="encoders")
cli.command("finetune")(finetune_command)
cli.command("upgrade-encoder")(upgrade_encoder_command)


def _runtime(settings: Settings | None = None) -> Runtime:
    try:
        return Runtime(resolve_encoder_settings(settings or get_settings()))
    except StoreLockedError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _progress_bar(desc: str) -> tuple[tqdm, Callable[[int, int], None]]:
    """A tqdm bar and the (done, total) callback the services report progress through."""
    bar = tqdm(total=0, unit="vacancy", desc=desc)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@cli.command()
def setup() -> None:
    """Migrate the database, ingest the sample, train and index: each step only if it is missing."""
    from app.services.bootstrap import bootstrap

    runtime = _runtime()
    try:
        bootstrap(runtime, typer.echo, show_progress=True)
    except (ServiceError, RuntimeError) as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()


@cli.command()
def migrate() -> None:
    """Apply the database migrations (Alembic) to JOBCLASS_DATABASE_URL."""
    from app.db import migrate as run

    settings = get_settings()
    run(settings.db_url)
    typer.echo("database is at the latest revision")


@cli.command()
def ingest(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with header id,text,label")],
    source: Annotated[str, typer.Option(help="Source tag stored with each vacancy.")] = "ingest",
) -> None:
    """Add or update labelled vacancies from a CSV file (upsert by id)."""
    from app.db import migrate as run_migrations
    from app.services.vacancies import ingest_csv

    settings = get_settings()
    run_migrations(settings.db_url)
    runtime = _runtime(settings)
    try:
        with runtime.sessions() as session:
            result = ingest_csv(
                session,
                path,
                runtime.taxonomy,
                source=source,
                clean_max_chars=settings.clean_max_chars,
                extractor=runtime.extractor,
                store_raw_text=settings.store_raw_text,
            )
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(
        f"added {result.added}, updated {result.updated}, unchanged {result.unchanged}, rejected {len(result.rejected)}"
    )
    for line in result.rejected[:50]:
        typer.secho(f"  rejected {line}", fg=typer.colors.YELLOW, err=True)
    if result.rejected:
        typer.echo("run `jobclass reindex` and `jobclass train` to use the new data")
        raise typer.Exit(1)
    typer.echo("run `jobclass reindex` and `jobclass train` to use the new data")


@cli.command()
def train() -> None:
    """Train a new model on every labelled vacancy and make it active."""
    from app.services.training import train as run

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            result = run(runtime, session, show_progress=True)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    val = result.metrics["validation"]
    typer.echo(f"model {result.version} trained on {result.n_examples} vacancies; params {result.params}")
    for name in ("head", "knn", "fused"):
        acc, f1 = val[name]["accuracy"], val[name]["macro_f1"]
        typer.echo(f"  validation {name:5s}: accuracy {acc:.3f}  macro-F1 {f1:.3f}")


@cli.command()
def reindex() -> None:
    """Re-embed every labelled vacancy into a new collection and swap the alias to it."""
    from app.services.index import reindex as run

    runtime = _runtime()
    bar, progress = _progress_bar("reindex")

    try:
        with runtime.sessions() as session:
            result = run(runtime, session, progress)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        bar.close()
        runtime.close()
    typer.echo(
        f"indexed {result.count} vacancies into {result.collection} in {result.seconds:.1f}s "
        f"({result.rate:.0f}/s; alias {runtime.store.alias!r}; previous {result.previous})"
    )


@cli.command()
def retrain(
    margin: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Promote if accuracy ≥ champion's − margin (default JOBCLASS_PROMOTION_MARGIN).",
        ),
    ] = None,
) -> None:
    """Train a challenger on every labelled vacancy (corrections included) and promote it only if it
    scores at least as well as the active model on the same validation set."""
    from app.services.training import retrain as run

    runtime = _runtime()
    bar, progress = _progress_bar("embed")

    try:
        with runtime.sessions() as session:
            result = run(runtime, session, margin, progress=progress)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        bar.close()
        runtime.close()
    ch, champ = result.challenger_scores, result.champion_scores
    typer.echo(
        f"challenger {result.version}: {result.n_examples} vacancies ({result.n_feedback} from feedback), "
        f"validation accuracy {ch['accuracy']:.4f}, macro-F1 {ch['macro_f1']:.4f} on {result.n_val}"
    )
    if champ is not None:
        acc, f1 = champ["accuracy"], champ["macro_f1"]
        typer.echo(f"champion   {result.champion}: accuracy {acc:.4f}, macro-F1 {f1:.4f}")
    verdict = "promoted" if result.promoted else "not promoted"
    typer.echo(f"{verdict}: {result.reason}; active model {result.active} ({result.seconds:.1f}s)")


@cli.command()
def evaluate(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="labelled CSV: id,text,label")],
) -> None:
    """Score the active model and index on a labelled CSV (nothing is stored)."""
    from app.services.classification import ClassifyItem, classify
    from app.services.vacancies import read_rows
    from models.metrics import summary

    runtime = _runtime()
    try:
        runtime.load_active_model()
        rows = [r for _, r in read_rows(path)]
        labels = runtime.model.classifier.labels
        index = {label: i for i, label in enumerate(labels)}
        unknown = {r["label"] for r in rows} - set(index)
        if unknown:
            raise _fail(ValueError(f"labels not in the model: {sorted(unknown)[:5]}"))
        probs = []
        for start in tqdm(range(0, len(rows), 64), desc="evaluate", unit="batch"):
            chunk = rows[start : start + 64]
            results = classify(runtime, None, [ClassifyItem(r["text"]) for r in chunk], top_k=len(labels))
            for res in results:
                p = np.zeros(len(labels))
                for lp in res.probabilities:
                    p[index[lp.label]] = lp.probability
                probs.append(p)
        y = np.array([index[r["label"]] for r in rows])
        report = summary(np.array(probs), y, labels)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(json.dumps({k: report[k] for k in ("accuracy", "macro_f1", "ece")}, indent=2))


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default JOBCLASS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default JOBCLASS_PORT).")] = None,
    bootstrap_first: Annotated[bool, typer.Option("--setup/--no-setup", help="Run `setup` first.")] = True,
) -> None:
    """Start the HTTP API (after `setup` unless --no-setup). This process owns the embedded index."""
    import uvicorn

    from app.main import create_app
    from app.observability import configure_json_logging
    from app.services.bootstrap import bootstrap

    configure_json_logging()  # the server logs JSON lines (one per request, with its request id)
    settings = get_settings()
    runtime = _runtime(settings)
    try:
        if bootstrap_first:
            bootstrap(runtime, logging.getLogger("jobclass.setup").info)
        else:
            runtime.load_active_model()
    except (ServiceError, RuntimeError) as exc:
        runtime.close()
        raise _fail(exc) from exc
    uvicorn.run(
        create_app(settings, runtime),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # keep the JSON handler; the middleware logs each request
        access_log=False,
    )
    runtime.close()


def _bench_encoder(settings: Settings) -> tuple[Any, Any]:
    from app.encoders import load_encoder
    from indexing.cache import EmbeddingCache

    return load_encoder(settings), EmbeddingCache(settings.cache_path)


@cli.command()
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
    from app.bench import METHOD_ORDER, BenchConfig, run_bench, run_cv, write_outputs
    from app.services.dataset import Split, load_split

    if test is None and folds < 2:
        raise _fail(ValueError("give --test, or --folds K (K >= 2) for cross-validation"))
    objective = objective_option(ft_objective, "--ft-objective")
    settings = get_settings()
    encoder, cache = _bench_encoder(settings)
    cfg = BenchConfig(name=name or train.parent.name, abstain_threshold=settings.abstain_threshold, timing=timing)
    tr = load_split(train, settings.clean_max_chars)
    va = load_split(val, settings.clean_max_chars) if val else None
    ft_rows = None
    if finetune:
        from app.bench import run_finetune_rows
        from indexing.finetune import FinetuneConfig

        def ft_rows(
            train_split: Split, test_split: Split, bench_cfg: BenchConfig, val_split: Split | None = None
        ) -> Any:
            ft_cfg = FinetuneConfig(
                objective=objective,
                epochs=ft_epochs,
                max_pairs_per_class=ft_max_pairs,
                batch_size=ft_batch_size,
                learning_rate=ft_learning_rate,
                seed=bench_cfg.seed,
            )
            try:
                return run_finetune_rows(
                    train_split,
                    val_split,
                    test_split,
                    encoder,
                    bench_cfg,
                    ft_cfg,
                    typer.echo,
                    fine_labels=ft_fine_labels,
                    cache=cache,
                )
            except ValueError as exc:
                raise _fail(exc) from exc

    result: dict[str, Any] = {}
    if test is not None:
        result = run_bench(tr, va, load_split(test, settings.clean_max_chars), encoder, cache, cfg, typer.echo)
    if folds >= 2:
        pool = Split.concat(tr, va) if va else tr
        cv = run_cv(pool, folds, encoder, cache, cfg, typer.echo, extra_rows=ft_rows)
        if not result:
            typer.echo(json.dumps(cv, indent=2))
            (out / "cv.json").parent.mkdir(parents=True, exist_ok=True)
            (out / "cv.json").write_text(json.dumps(cv, indent=2))
            return
        result["cv"] = cv
    if ft_rows is not None and test is not None:
        ft = ft_rows(tr, load_split(test, settings.clean_max_chars), cfg, va)
        result["methods"].update(ft["methods"])
        result["finetune"] = ft["finetune"]
    write_outputs(result, out)
    if "finetune" in result:
        from app.bench import FT_METHODS, finetune_markdown

        with (out / "report.md").open("a") as report:
            report.write(finetune_markdown(result))
    m = result["methods"]
    for method in (*METHOD_ORDER, *(FT_METHODS if "finetune" in result else ())):
        typer.echo(f"  {method:18s} accuracy {m[method]['accuracy']:.4f}  macro-F1 {m[method]['macro_f1']:.4f}")
    typer.echo(f"wrote {out}/metrics.json, report.md, confusion_fused.png")


def _bench_extract(train: Path, out: Path, test: Path | None, name: str | None, extractor: str | None) -> None:
    """``bench --extract``: raw vs cleaned vs extracted text on TRAIN (split) or TRAIN/TEST."""
    from app.bench import BenchConfig
    from app.bench_extract import run_extract_bench, write
    from indexing.extract import Extractor, ExtractorError, parse_labels

    settings = get_settings()
    model = extractor or settings.extractor_model
    if not model:
        raise _fail(ValueError("--extract needs --extractor PATH or JOBCLASS_EXTRACTOR_MODEL"))
    try:
        gliner = Extractor.load(
            model, labels=parse_labels(settings.extractor_labels), threshold=settings.extractor_threshold
        )
    except ExtractorError as exc:
        raise _fail(exc) from exc
    encoder, _ = _bench_encoder(settings)
    cfg = BenchConfig(name=name or train.stem, abstain_threshold=settings.abstain_threshold, timing=False)
    result = run_extract_bench(
        train, encoder, gliner, cfg, typer.echo, test=test, clean_max_chars=settings.clean_max_chars
    )
    write(result, out)
    typer.echo(f"wrote {out}/extract.json, extract.md")


@cli.command("bench-perf")
def bench_perf(
    out: Annotated[Path, typer.Option(help="output folder for metrics.json and report.md")] = Path("perf"),
    only: Annotated[
        str | None, typer.Option(help="comma-separated sections: embedding,service,microbatch,knn,memory")
    ] = None,
    sizes: Annotated[str, typer.Option(help="index sizes for the kNN section")] = "10000,100000,1000000",
    queries: Annotated[int, typer.Option(help="kNN queries per size")] = 200,
) -> None:
    """Speed side by side: embedder dtypes, service overhead, micro-batching, kNN backends, memory."""
    from app.perf import PerfConfig, iter_sections, run_perf, write_outputs

    try:
        cfg = PerfConfig(
            sizes=tuple(int(s) for s in sizes.split(",") if s.strip()),
            n_queries=queries,
            sections=tuple(iter_sections(only)),
        )
    except ValueError as exc:
        raise _fail(exc) from exc
    result = run_perf(cfg, typer.echo)
    write_outputs(result, out)
    typer.echo(f"wrote {out}/metrics.json and {out}/report.md")


@cli.command("bench-all")
def bench_all(
    datasets: Annotated[Path, typer.Option(help="folder of datasets, each with train.csv and val.csv")] = (
        PROJECT_ROOT.parent / "shared" / "datasets"
    ),
    out: Annotated[Path, typer.Option(help="docs folder")] = PROJECT_ROOT / "docs",
    cv_below: Annotated[int, typer.Option(help="also run 5-fold CV on datasets with fewer training rows")] = 2000,
) -> None:
    """Benchmark every shared dataset: train on train.csv (tuning on 10% of it), score on val.csv;
    write docs/benchmarks.md and docs/benchmarks/<name>/."""
    from app.bench import (
        METHOD_ORDER,
        BenchConfig,
        markdown_report,
        run_bench,
        run_cv,
        target_checks,
        targets_markdown,
        write_outputs,
    )
    from app.services.dataset import Split, load_split

    settings = get_settings()
    encoder, cache = _bench_encoder(settings)
    sections, summary_rows, checks = [], [], []
    started = time.perf_counter()
    for folder in sorted(p for p in datasets.iterdir() if (p / "train.csv").is_file() and (p / "val.csv").is_file()):
        cfg = BenchConfig(name=folder.name, abstain_threshold=settings.abstain_threshold)
        train_split = load_split(folder / "train.csv", settings.clean_max_chars)
        test_split = load_split(folder / "val.csv", settings.clean_max_chars)
        result = run_bench(train_split, None, test_split, encoder, cache, cfg, typer.echo)
        if len(train_split) < cv_below:
            result["cv"] = run_cv(Split.concat(train_split, test_split), 5, encoder, cache, cfg, typer.echo)
        target = out / "benchmarks" / folder.name
        write_outputs(result, target)
        sections.append(markdown_report(result, f"benchmarks/{folder.name}/confusion_fused.png", heading="###"))
        m = result["methods"]
        summary_rows.append(f"| {folder.name} | " + " | ".join(f"{m[k]['accuracy']:.4f}" for k in METHOD_ORDER) + " |")
        checks.append((folder.name, target_checks(result)))
    header = "| dataset | " + " | ".join(METHOD_ORDER) + " |"
    dtype = getattr(encoder, "dtype", settings.embedding_dtype)
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Generated by `make bench` (`jobclass bench-all`). Each dataset in `../shared/datasets` is trained on its",
            "`train.csv` and scored on its `val.csv`, which is never used for training or tuning (the official test",
            "splits are held back elsewhere). A stratified 10% of train tunes TF-IDF's C and the hybrid's β; the",
            "head's epoch count is chosen by 5-fold cross-validation and the fusion (α, k, temperatures) tuned on",
            "5-fold out-of-fold predictions over the other 90%. All methods share one run, one machine and the same",
            "embeddings, so the rows compare side by side.",
            f"Embedder: `{settings.embedding_model}` (dtype {dtype}, chunking"
            f" {settings.embedding_chunking}). Wall time of this run: {time.perf_counter() - started:.0f} s"
            f" ({'embeddings from the cache where present' if settings.embedding_cache else 'no embedding cache'}).",
            "",
            "## Accuracy on val.csv",
            "",
            header,
            "|---" * (len(METHOD_ORDER) + 1) + "|",
            *summary_rows,
            "",
            "## Targets",
            "",
            "Accuracy (and macro-F1) points; ✓ where the target holds: fused ≥ head and knn, fused ≥ tfidf_lr (the",
            "hybrid fused_tfidf is the remedy where an English embedder meets other text), compression loses ≤ 0.5.",
            "",
            targets_markdown(checks),
            "",
            "## Per dataset",
            "",
            *sections,
        ]
    )
    (out / "benchmarks.md").write_text(text + "\n")
    typer.echo(f"wrote {out / 'benchmarks.md'}")


@cli.command()
def drift(
    since: Annotated[str, typer.Option(help="Start of the window: YYYY-MM-DD or an ISO datetime (UTC).")],
    out: Annotated[Path, typer.Option(help="Folder for drift.json, drift.html and the plots.")],
    until: Annotated[
        str | None, typer.Option(help="End of the window (exclusive; a date includes that day). Default: now.")
    ] = None,
    ood_quantile: Annotated[
        float,
        typer.Option(
            min=0.001,
            max=0.49,
            help="Out-of-distribution threshold: this quantile of the labelled vacancies' leave-one-out "
            "nearest-neighbour similarity.",
        ),
    ] = 0.05,
    fail_on_alert: Annotated[
        bool, typer.Option(help="Exit with status 3 when the report raises an alert (for cron and CI).")
    ] = False,
) -> None:
    """Compare recent predictions with the training data: label shift, centroid distance, OOD rate."""
    from app.services.drift import compute_drift, window, write_drift_report

    win = window(since, until)
    runtime = _offline_runtime()
    try:
        with runtime.sessions() as session:
            result = compute_drift(runtime, session, win, ood_quantile=ood_quantile)
    finally:
        runtime.close()
    write_drift_report(result, out)
    shift, ood = result["label_shift"], result["ood"]
    typer.echo(
        f"{result['n_recent']} predictions vs {result['n_reference']} labelled vacancies: "
        f"PSI {shift['psi']:.3f}, JS {shift['js_divergence']:.3f}, centroid cosine {result['centroid']['cosine']:.4f}, "
        f"OOD rate {ood['rate']:.1%} (threshold {ood['threshold']:.3f})"
    )
    for alert in result["alerts"]:
        typer.secho(f"  alert: {alert}", fg=typer.colors.YELLOW)
    typer.echo(f"wrote {out / 'drift.json'} and {out / 'drift.html'}")
    if fail_on_alert and result["alerts"]:
        raise typer.Exit(3)


@cli.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for report.json, report.html, confusion.png, per_class.png.")],
) -> None:
    """Confusion matrix and per-class precision/recall/F1 of the active model on its hold-out."""
    from app.services.report import model_report, write_model_report

    runtime = _offline_runtime()
    try:
        with runtime.sessions() as session:
            result = model_report(runtime, session)
    finally:
        runtime.close()
    write_model_report(result, out)
    typer.echo(
        f"model {result['model_version']} on {result['n_val']} held-out vacancies: accuracy "
        f"{result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}, ECE {result['ece']:.4f}"
    )
    typer.echo(f"wrote {out / 'report.html'} (and report.json, confusion.png, per_class.png)")


def _offline_runtime() -> Runtime:
    """A runtime for read-only reports: they never touch the vector index, so it is left closed (an
    in-memory client) and the command runs while a server owns the embedded index."""
    from qdrant_client import QdrantClient

    return Runtime(resolve_encoder_settings(get_settings()), qdrant=QdrantClient(":memory:"))


@models_cli.command("list")
def models_list() -> None:
    """List model versions, newest first."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(get_settings().model_dir)
    active = registry.active_version()
    for meta in registry.versions():
        fused = meta.get("metrics", {}).get("validation", {}).get("fused", {})
        mark = "*" if meta["version"] == active else " "
        typer.echo(
            f"{mark} {meta['version']}  {meta['embedder']}  n={meta.get('n_train')}  "
            f"val_acc={fused.get('accuracy', float('nan')):.3f}"
        )


@models_cli.command("activate")
def models_activate(version: str) -> None:
    """Make VERSION the active model (roll back or forward). A running server picks it up on its next
    start; `POST /v1/admin/models/VERSION/activate` switches a running one at once."""
    from app.services.training import activate

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            done = activate(runtime, session, version)
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(f"active model: {done.active} (was {done.previous})")


@cli.command()
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
    from app.loadtest import run_loadtest, write_report

    report = run_loadtest(url, clients=clients, duration=duration, pid=pid, timeout=timeout, token=token)
    md, js = write_report(report, out)
    typer.echo(json.dumps(report.to_dict(), indent=2))
    typer.echo(f"wrote {md} and {js}")
    if report.errors:
        raise typer.Exit(1)


@cli.command("train-extractor")
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
    try:
        result = train_extractor(spans, out, config, backbone=backbone, init_from=init_from, log_fn=typer.echo)
    except ValueError as exc:
        raise _fail(exc) from exc
    s = result.scores
    typer.echo(f"held-out ({result.n_heldout} examples): P {s.precision:.3f}  R {s.recall:.3f}  F1 {s.f1:.3f}")
    typer.echo(f"wrote {out}/metrics.json")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cli()


if __name__ == "__main__":
    main()
