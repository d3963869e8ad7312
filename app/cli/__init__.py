"""The ``jobclass`` command line: one entry point for setup, data, models, the server and the benchmarks.

The root group (``common.ErrorPolicy``) applies the one error policy to every command; the commands live
in thin modules by theme (``service``, ``backup``, ``models``, ``encoders``, ``reports``, ``bench``) and import the
heavy libraries inside their bodies, so ``jobclass --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

from app.cli import backup, bench, bulk, common, encoders, feedback, models, reports, service

cli = typer.Typer(
    help="Classify job vacancies and find similar ones.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=common.ErrorPolicy,  # every error: one line `error: …`, exit 2 (fixable input) or 1
)
for module in (encoders, service, bulk, backup, bench, reports, models, feedback):
    module.register(cli)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "sentence_transformers", "transformers", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cli()


__all__ = ["cli", "main"]
