"""``jobclass models list|activate``: the model registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from models.registry import ModelRegistry

from app.cli import common
from app.errors import NotFound
from app.settings import get_settings

models_cli = typer.Typer(help="List and activate model versions.", no_args_is_help=True)


@models_cli.command("list")
def models_list() -> None:
    """List model versions, newest first (* the active one; a damaged one is named on stderr)."""
    from models.registry import ModelDamaged, ModelRegistry

    registry = ModelRegistry(get_settings().model_dir)
    try:
        active = registry.active_marker()
    except ModelDamaged as exc:
        typer.secho(f"warning: {exc}", fg=typer.colors.YELLOW, err=True)
        active = None
    readable, damaged = registry.scan()
    for meta in readable:
        fused = meta.get("metrics", {}).get("validation", {}).get("fused", {})
        accuracy = fused.get("accuracy") if isinstance(fused, dict) else None
        mark = "*" if meta["version"] == active else " "
        typer.echo(
            f"{mark} {meta['version']}  {meta.get('embedder', '?')}  n={meta.get('n_train')}  "
            f"val_acc={accuracy if isinstance(accuracy, float | int) else float('nan'):.3f}"
        )
    for problem in damaged:
        typer.secho(f"warning: {problem}", fg=typer.colors.YELLOW, err=True)


@models_cli.command("activate")
def models_activate(version: str) -> None:
    """Make VERSION the active model (roll back or forward). A running server picks it up on its next
    start; `POST /v1/admin/models/VERSION/activate` switches a running one at once."""
    from app.services.training import activate

    runtime = common.runtime()
    try:
        _require_version(runtime.registry, version)
        with runtime.sessions() as session:
            done = activate(runtime, session, version)
    finally:
        runtime.close()
    typer.echo(f"active model: {done.active} (was {done.previous})")


def _require_version(registry: ModelRegistry, version: str) -> None:
    """``NotFound`` (exit 2) unless the registry holds ``version``: an invalid name, or one too long for a
    file name, is missing too."""
    from models.registry import RegistryError

    try:
        registry.metadata(version)
    except (RegistryError, OSError) as exc:
        shown = version if len(version) <= 60 else version[:60] + "…"
        raise NotFound(f"unknown model version {shown!r}: `jobclass models list` shows the versions") from exc


def register(cli: typer.Typer) -> None:
    cli.add_typer(models_cli, name="models")
