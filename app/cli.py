"""The ``jobclass`` command line: one entry point for setup, data, models and the server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from tqdm import tqdm

from app.errors import ServiceError
from app.runtime import Runtime
from app.settings import Settings, get_settings
from indexing.store import StoreLockedError

cli = typer.Typer(
    help="Classify job vacancies and find similar ones.", no_args_is_help=True, pretty_exceptions_enable=False
)
models_cli = typer.Typer(help="List and activate model versions.", no_args_is_help=True)
cli.add_typer(models_cli, name="models")


def _runtime(settings: Settings | None = None) -> Runtime:
    try:
        return Runtime(settings or get_settings())
    except StoreLockedError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


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
                session, path, runtime.taxonomy, source=source, clean_max_chars=settings.clean_max_chars
            )
    except ServiceError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(
        f"added {result.added}, updated {result.updated}, unchanged {result.unchanged}, "
        f"rejected {len(result.rejected)}"
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
    bar = tqdm(total=0, unit="vacancy", desc="reindex")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

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
        f"(alias {runtime.store.alias!r}; previous {result.previous})"
    )


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
    from app.services.bootstrap import bootstrap

    settings = get_settings()
    runtime = _runtime(settings)
    try:
        if bootstrap_first:
            bootstrap(runtime, typer.echo)
        else:
            runtime.load_active_model()
    except (ServiceError, RuntimeError) as exc:
        runtime.close()
        raise _fail(exc) from exc
    uvicorn.run(create_app(settings, runtime), host=host or settings.host, port=port or settings.port)
    runtime.close()


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
    """Make VERSION the active model (takes effect on the next server start)."""
    from app.services.training import activate_version

    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            activate_version(runtime, session, version)
    except LookupError as exc:
        raise _fail(exc) from exc
    finally:
        runtime.close()
    typer.echo(f"active model: {version}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cli()


if __name__ == "__main__":
    main()
