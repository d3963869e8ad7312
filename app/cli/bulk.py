"""Bulk classification: ``classify-file`` (one process, resumable; or a Ray Data job with ``--engine ray``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli import common
from app.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from app.services.bulk import BulkOptions

MAX_LISTED = 10  # bad rows echoed on stderr; all of them are in OUT.errors.csv


def classify_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, JSONL or Parquet with id,text")],
    out: Annotated[Path, typer.Option("--out", help="Output file; its extension gives the format.")],
    input_format: Annotated[
        str | None, typer.Option("--format", help="Input format (csv, jsonl, parquet); default: by extension.")
    ] = None,
    id_column: Annotated[str, typer.Option(help="Input column (or JSON key) of the id.")] = "id",
    text_column: Annotated[str, typer.Option(help="Input column (or JSON key) of the text.")] = "text",
    top_k: Annotated[int, typer.Option(min=1, max=50, help="Labels and probabilities written per row.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Rows per classify call.")] = 256,
    part_rows: Annotated[
        int, typer.Option(min=1, help="Input rows per checkpointed part (work lost to a crash at most).")
    ] = 5000,
    store: Annotated[bool, typer.Option("--store", help="Record every prediction in the database.")] = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an interrupted run's parts instead of resuming it.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")] = False,
    engine: Annotated[str, typer.Option(help="local (this process, resumable) or ray (a Ray Data job).")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (with --engine ray); default: a local Ray.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Ray actors embedding and classifying (--engine ray).")] = 2,
    knn: Annotated[
        str,
        typer.Option(
            help="Neighbours from an in-memory copy of the index read once (memory), from the store per batch "
            "(store), or memory when the index fits (auto)."
        ),
    ] = "auto",
) -> None:
    """Classify every row of a CSV, JSONL or Parquet file into a file of labels (resumable: rerun to continue)."""
    from app.services.bulk import BulkOptions, file_format

    options = BulkOptions(
        input=path,
        out=out,
        input_format=file_format(path, input_format),
        output_format=file_format(out, what="output"),
        id_column=id_column,
        text_column=text_column,
        top_k=top_k,
        batch_size=batch_size,
        part_rows=part_rows,
        store=store,
        restart=restart,
        overwrite=overwrite,
        knn=knn,  # type: ignore[arg-type]  # checked by app.services.bulk.bulk_index
    )
    if engine == "ray":
        _classify_on_ray(options, address, workers)
        return
    if engine != "local":
        raise InvalidInput(f"--engine must be local or ray, not {engine!r}")
    if address is not None:
        raise InvalidInput("--address needs --engine ray")
    _classify_here(options)


def _classify_here(options: BulkOptions) -> None:
    from app.services.bulk import classify_file

    runtime = common.runtime()
    bar, progress = common.progress_bar("classify")
    bar.unit = "row"
    try:
        if runtime.load_active_model() is None:
            raise Unavailable("no trained model is active: run `jobclass train`")
        runtime.check_index_compatible()
        summary = classify_file(runtime, options, progress)
    finally:
        bar.close()
        runtime.close()
    resumed = f", resumed after {summary.resumed_from}" if summary.resumed_from else ""
    typer.echo(
        f"classified {summary.written} of {summary.records} rows ({summary.abstained} abstained{resumed}) "
        f"with model {summary.model_version} in {summary.seconds:.1f}s ({summary.rate:.0f} rows/s) → {summary.out}"
    )
    if summary.errors_file is not None:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(summary.error_reasons.items()))
        typer.secho(
            f"{summary.errors} bad row(s) ({kinds}) listed by line in {summary.errors_file}",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _classify_on_ray(options: BulkOptions, address: str | None, workers: int) -> None:
    from app.services.bulk_ray import classify_file_on_ray, runtime_factory

    settings = common.resolved_settings()
    result = classify_file_on_ray(runtime_factory(settings), settings, options, address=address, workers=workers)
    typer.echo(
        f"classified {result.written} of {result.records} rows on Ray ({workers} workers) in {result.seconds:.1f}s "
        f"({result.rate:.0f} rows/s after a {result.startup_seconds:.1f}s start) → {result.out}/"
    )
    if result.errors:
        typer.secho(f"{result.errors} bad row(s) listed in {result.errors_file}", fg=typer.colors.YELLOW, err=True)


def register(cli: typer.Typer) -> None:
    cli.command("classify-file")(classify_file)
