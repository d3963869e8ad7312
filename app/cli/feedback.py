"""``jobclass feedback retract ID``: withdraw a correction (the row stays, marked retracted)."""

from __future__ import annotations

import typer

from app.cli import common

feedback_cli = typer.Typer(help="Manage corrections (feedback).", no_args_is_help=True)


@feedback_cli.command("retract")
def feedback_retract(feedback_id: int = typer.Argument(..., metavar="ID", help="The feedback id")) -> None:
    """Retract correction ID: the vacancy takes the prediction's latest correction that still stands (or
    leaves the index and the training set), the index forgets it at once and the next retrain ignores it.
    With the embedded index a running server holds it: use `DELETE /v1/feedback/ID` then."""
    from app.services.feedback import retract_feedback

    runtime = common.runtime()
    try:
        with runtime.sessions() as session:
            result = retract_feedback(runtime, session, feedback_id)
    finally:
        runtime.close()
    row = result.feedback
    now = repr(result.label) if result.label is not None else "no label (out of the index and the training set)"
    typer.echo(f"retracted feedback {row.id} ({row.label!r} for prediction {row.prediction_id})")
    typer.echo(f"vacancy {row.vacancy_id}: {now}")
    if not result.indexed:
        typer.echo("the index could not be updated now: run `jobclass reindex`")


def register(cli: typer.Typer) -> None:
    cli.add_typer(feedback_cli, name="feedback")
