"""The service's lifecycle: ``setup``, ``migrate``, ``ingest``, ``train``, ``reindex``, ``retrain``,
``evaluate``, ``serve``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import common
from app.errors import InvalidInput
from app.settings import get_settings


def setup() -> None:
    """Migrate the database, ingest the sample, train and index: each step only if it is missing."""
    from app.services.bootstrap import bootstrap

    runtime = common.runtime()
    try:
        bootstrap(runtime, typer.echo, show_progress=True)
    finally:
        runtime.close()


def migrate() -> None:
    """Apply the database migrations (Alembic) to JOBCLASS_DATABASE_URL."""
    from app.db import migrate as run

    settings = get_settings()
    run(settings.db_url)
    typer.echo("database is at the latest revision")


MAX_LISTED = 50  # rejected rows listed on stderr


def ingest(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV with header id,text,label")],
    source: Annotated[str, typer.Option(help="Source tag stored with each vacancy.")] = "ingest",
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Write the valid rows of a file that has invalid ones (listed with their line numbers). "
            "Without it such a file writes nothing and the command exits 2.",
        ),
    ] = False,
) -> None:
    """Add or update labelled vacancies from a CSV file (upsert by id; all or nothing unless --skip-invalid)."""
    from app.db import migrate as run_migrations
    from app.services.vacancies import ingest_rows, read_csv

    rows = list(read_csv(path))  # the file's own problems exit 2 before the database or a model is touched
    settings = get_settings()
    run_migrations(settings.db_url)
    runtime = common.runtime(settings)
    try:
        with runtime.sessions() as session:
            result = ingest_rows(
                session,
                rows,
                runtime.taxonomy,
                source=source,
                clean_max_chars=settings.clean_max_chars,
                extractor=runtime.extractor,
                store_raw_text=settings.store_raw_text,
                skip_invalid=skip_invalid,
            )
    finally:
        runtime.close()
    for line in result.rejected[:MAX_LISTED]:
        typer.secho(f"  rejected {line}", fg=typer.colors.YELLOW, err=True)
    if len(result.rejected) > MAX_LISTED:
        typer.secho(f"  … and {len(result.rejected) - MAX_LISTED} more", fg=typer.colors.YELLOW, err=True)
    if not result.written:
        n_valid = len(rows) - len(result.rejected)
        fix = f"fix them, or pass --skip-invalid to write the {n_valid} valid one(s)" if n_valid else "fix them"
        raise InvalidInput(
            f"{path}: {len(result.rejected)} of {len(rows)} row(s) invalid (listed above), nothing was written: {fix}"
        )
    typer.echo(
        f"added {result.added}, updated {result.updated}, unchanged {result.unchanged}, rejected {len(result.rejected)}"
    )
    typer.echo("run `jobclass reindex` and `jobclass train` to use the new data")


TargetAccuracy = Annotated[
    float | None,
    typer.Option(
        min=0.01,
        max=0.999,
        help="Choose per-class thresholds so that automated (non-abstained) answers reach this accuracy on the "
        "hold-out (default JOBCLASS_TARGET_ACCURACY; unset: abstain unless the prediction set is the top label alone).",
    ),
]


def _operating_point_line(op: dict[str, Any] | None) -> str:
    """One line on the prediction sets and automation of a version on its hold-out."""
    if op is None:
        return "  no prediction-set calibration"
    acc, cov = op["accuracy_automated"], op["empirical_coverage"]
    coverage = f"{cov:.3f}" if cov is not None else "not estimated (too few hold-out rows to halve)"
    line = (
        f"  hold-out of {op['n_holdout']}: coverage {coverage} (target {op['coverage_target']:g}), "
        f"mean set size {op['mean_set_size']:.2f}; automated {op['share_automated']:.1%}"
        f"{f' at accuracy {acc:.4f}' if acc is not None else ''}"
    )
    if op["target_accuracy"] is not None:
        g_acc = op["global_accuracy_automated"]
        line += (
            f" (target {op['target_accuracy']:g}; one global threshold: {op['global_share_automated']:.1%}"
            f"{f' at {g_acc:.4f}' if g_acc is not None else ''})"
        )
    return line


def train(target_accuracy: TargetAccuracy = None) -> None:
    """Train a new model on every labelled vacancy and make it active."""
    from app.services.training import train as run

    runtime = common.runtime()
    try:
        with runtime.sessions() as session:
            result = run(runtime, session, show_progress=True, target_accuracy=target_accuracy)
    finally:
        runtime.close()
    val = result.metrics["validation"]
    typer.echo(f"model {result.version} trained on {result.n_examples} vacancies; params {result.params}")
    for name in ("head", "knn", "fused"):
        acc, f1 = val[name]["accuracy"], val[name]["macro_f1"]
        typer.echo(f"  validation {name:5s}: accuracy {acc:.3f}  macro-F1 {f1:.3f}")
    typer.echo(_operating_point_line(result.uncertainty))


def calibrate(target_accuracy: TargetAccuracy = None) -> None:
    """Recompute the active model's prediction sets (JOBCLASS_COVERAGE) and, with --target-accuracy, its
    per-class automation thresholds on its hold-out; stored with the version. A running server serves them
    after `POST /v1/admin/calibrate` (which does the same in the server) or its next start."""
    from app.services.uncertainty import calibrate as run
    from app.services.uncertainty import summary

    runtime = common.offline_runtime()
    try:
        with runtime.sessions() as session:
            block = run(runtime, session, target_accuracy)
    finally:
        runtime.close()
    typer.echo(f"model {block['model_version']} calibrated")
    typer.echo(_operating_point_line(summary(block)))


def reindex(
    engine: Annotated[str, typer.Option(help="local (this process) or ray (embed in a Ray actor pool).")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (with --engine ray); default: a local Ray.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors embedding (--engine ray).")] = 2,
) -> None:
    """Re-embed every labelled vacancy into a new collection and swap the alias to it."""
    from app.services.index import BulkEmbed
    from app.services.index import reindex as run

    if engine not in ("local", "ray"):
        raise InvalidInput(f"--engine must be local or ray, not {engine!r}")
    if address is not None and engine != "ray":
        raise InvalidInput("--address needs --engine ray")
    runtime = common.runtime()
    embed: BulkEmbed | None = None
    if engine == "ray":
        from app.services.bulk_ray import embed_on_ray, encoder_factory

        settings = runtime.settings
        embed = embed_on_ray(
            encoder_factory(settings), address=address, workers=workers, batch_size=settings.embedding_batch_size * 8
        )
    bar, progress = common.progress_bar("reindex")
    try:
        with runtime.sessions() as session:
            result = run(runtime, session, progress, embed=embed)
    finally:
        bar.close()
        runtime.close()
    typer.echo(
        f"indexed {result.count} vacancies into {result.collection} in {result.seconds:.1f}s "
        f"({result.rate:.0f}/s; alias {runtime.store.alias!r}; previous {result.previous})"
    )


def retrain(
    margin: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Promote if accuracy ≥ champion's − margin (default JOBCLASS_PROMOTION_MARGIN).",
        ),
    ] = None,
    target_accuracy: TargetAccuracy = None,
) -> None:
    """Train a challenger on every labelled vacancy (corrections included) and promote it only if it
    scores at least as well as the active model on the same validation set."""
    from app.services.training import retrain as run

    runtime = common.runtime()
    bar, progress = common.progress_bar("embed")
    try:
        with runtime.sessions() as session:
            result = run(runtime, session, margin, progress=progress, target_accuracy=target_accuracy)
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
    typer.echo(_operating_point_line(result.operating_point))
    verdict = "promoted" if result.promoted else "not promoted"
    typer.echo(f"{verdict}: {result.reason}; active model {result.active} ({result.seconds:.1f}s)")


def _evaluate_probs(runtime: Any, rows: list[dict[str, str]], index: dict[str, int]) -> Any:
    """Class probabilities of the active model (and index) for each row, in batches of 64."""
    import numpy as np
    from tqdm import tqdm

    from app.services.classification import ClassifyItem, classify

    probs = []
    for start in tqdm(range(0, len(rows), 64), desc="evaluate", unit="batch"):
        chunk = rows[start : start + 64]
        for res in classify(runtime, None, [ClassifyItem(r["text"]) for r in chunk], top_k=len(index)):
            p = np.zeros(len(index))
            for lp in res.probabilities:
                p[index[lp.label]] = lp.probability
            probs.append(p)
    return np.array(probs)


def evaluate(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="labelled CSV: id,text,label")],
) -> None:
    """Score the active model and index on a labelled CSV (nothing is stored)."""
    import numpy as np

    from app.services.vacancies import read_rows
    from models.metrics import summary

    runtime = common.runtime()
    try:
        runtime.load_active_model()
        rows = [r for _, r in read_rows(path)]
        labels = runtime.model.classifier.labels
        index = {label: i for i, label in enumerate(labels)}
        unknown = {r["label"] for r in rows} - set(index)
        if unknown:
            raise InvalidInput(f"labels not in the model: {sorted(unknown)[:5]}")
        y = np.array([index[r["label"]] for r in rows])
        report = summary(_evaluate_probs(runtime, rows, index), y, labels)
    finally:
        runtime.close()
    typer.echo(json.dumps({k: report[k] for k in ("accuracy", "macro_f1", "ece")}, indent=2))


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
    runtime = common.runtime(settings)
    try:
        if bootstrap_first:
            bootstrap(runtime, logging.getLogger("jobclass.setup").info)
        else:
            runtime.load_active_model()
        uvicorn.run(
            create_app(settings, runtime),
            host=host or settings.host,
            port=port or settings.port,
            log_config=None,  # keep the JSON handler; the middleware logs each request
            access_log=False,
        )
    finally:
        runtime.close()


def register(cli: typer.Typer) -> None:
    for command in (setup, migrate, ingest, train, calibrate, reindex, retrain, evaluate, serve):
        cli.command()(command)
