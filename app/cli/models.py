"""``jobclass models list|activate``: the model registry."""

from __future__ import annotations

import typer

from app.cli import common
from app.settings import get_settings

models_cli = typer.Typer(help="List and activate model versions.", no_args_is_help=True)


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

    runtime = common.runtime()
    try:
        with runtime.sessions() as session:
            done = activate(runtime, session, version)
    finally:
        runtime.close()
    typer.echo(f"active model: {done.active} (was {done.previous})")


def register(cli: typer.Typer) -> None:
    cli.add_typer(models_cli, name="models")
