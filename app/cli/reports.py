"""Read-only reports on the running service's data: ``drift`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli import common


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
    runtime = common.offline_runtime()
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


def report(
    out: Annotated[
        Path, typer.Option(help="Folder for report.json, report.html, confusion.png, per_class.png, automation.png.")
    ],
) -> None:
    """Confusion matrix and per-class precision/recall/F1 of the active model on its hold-out."""
    from app.services.report import model_report, write_model_report

    runtime = common.offline_runtime()
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
    at95 = next((t for t in result["automation"]["targets"] if t["target"] == 0.95), None)
    if at95 is not None:
        per, glob = at95["per_class"], at95["global"]
        typer.echo(
            f"at 95% target accuracy: per-class thresholds automate {per['share_automated']:.1%}, "
            f"one global threshold {glob['share_automated']:.1%}"
        )
    typer.echo(f"wrote {out / 'report.html'} (and report.json, confusion.png, per_class.png, automation.png)")


def register(cli: typer.Typer) -> None:
    cli.command()(drift)
    cli.command()(report)
