"""Backups: ``snapshot`` (database, model and encoder registries, index) and ``restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli import common
from app.settings import get_settings


def snapshot(
    out: Annotated[Path, typer.Argument(help="A new folder, or a file ending in .tar.")],
    index: Annotated[
        bool,
        typer.Option(
            "--index/--no-index",
            help="Include a snapshot of the index where the backend has one (the embedded engine, a Qdrant "
            "server). --no-index leaves the index out (restore rebuilds it) and runs beside a server "
            "that owns an embedded index.",
        ),
    ] = True,
) -> None:
    """Write a snapshot of this installation: database, model and encoder registries, and the index."""
    from app.services.snapshot import take_snapshot

    runtime = common.runtime() if index else common.offline_runtime()
    try:
        done = take_snapshot(runtime, out, include_index=index)
    finally:
        runtime.close()
    rows = sum(done.rows.values())
    where = {
        "edge": "an index snapshot",
        "server": "a Qdrant server snapshot",
        "rebuild": "no index (rebuilt at restore)",
    }
    typer.echo(
        f"snapshot {done.path}: {done.dialect} database ({rows} rows in {len(done.rows)} tables), "
        f"active model {done.model or 'none'}, {where[done.index]}"
        + (f" of {done.points} points" if done.index != "rebuild" else "")
        + f"; {done.bytes / 1e6:.1f} MB in {done.seconds:.1f}s"
    )


def restore(
    source: Annotated[Path, typer.Argument(help="A snapshot folder or .tar file (`jobclass snapshot`).")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database and state folder that already hold data.")
    ] = False,
) -> None:
    """Restore a snapshot into JOBCLASS_STATE_DIR and JOBCLASS_DATABASE_URL (empty ones, unless --force)."""
    from app.services.snapshot import restore_snapshot

    done = restore_snapshot(get_settings(), source, open_runtime=common.runtime, force=force)
    how = "from the snapshot" if done.index == "snapshot" else "rebuilt from the database"
    typer.echo(
        f"restored {done.source} into the {done.dialect} database ({sum(done.rows.values())} rows): "
        f"active model {done.model or 'none'}, index {how} ({done.points} points) in {done.seconds:.1f}s"
    )


def register(cli: typer.Typer) -> None:
    for command in (snapshot, restore):
        cli.command()(command)
