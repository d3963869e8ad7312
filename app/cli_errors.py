"""One clear line instead of a traceback for the errors a user can cause or fix.

The ``jobclass`` group invokes every command through :class:`FriendlyErrors`: a known error
(a service error, invalid settings, a missing file, an unreachable or unmigrated database, the
embedded index held by another process) prints ``error: …`` on stderr and exits with 2 for bad input
or configuration, 1 for anything else. Unknown exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from typer.core import TyperGroup

from app.errors import InvalidInput, ServiceError
from indexing.store import StoreError, StoreLockedError

BAD_INPUT = 2  # like click's usage errors
FAILED = 1


def _first_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _settings_problem(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"JOBCLASS_{where.upper()}: {message}" if where else message)
    return "invalid configuration: " + "; ".join(parts)


def _database_problem(exc: SQLAlchemyError) -> str:
    detail = _first_line(exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc)
    lowered = detail.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database has no schema yet ({detail}): run `jobclass migrate` (or `jobclass setup`)"
    return f"database error: {detail} (check JOBCLASS_DATABASE_URL and that the database is up)"


def describe(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for a known error, or None for anything else."""
    if isinstance(exc, StoreLockedError):
        return BAD_INPUT, _first_line(exc)
    if isinstance(exc, InvalidInput):
        return BAD_INPUT, exc.message
    if isinstance(exc, ServiceError):
        return FAILED, exc.message
    if isinstance(exc, ValidationError):
        return BAD_INPUT, _settings_problem(exc)
    if isinstance(exc, SQLAlchemyError):
        return FAILED, _database_problem(exc)
    if isinstance(exc, StoreError):
        return FAILED, f"vector store: {_first_line(exc)}"
    if isinstance(exc, ResponseHandlingException | UnexpectedResponse):
        return (
            FAILED,
            f"vector store unreachable or refused the request: {_first_line(exc)} (check JOBCLASS_QDRANT_URL)",
        )
    if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError | PermissionError):
        name = f": {exc.filename}" if exc.filename else ""
        return FAILED, f"{exc.strerror or _first_line(exc)}{name}"
    return None


class FriendlyErrors(TyperGroup):
    """A typer group whose commands turn known errors into ``error: …`` and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except Exception as exc:  # typer's own Exit / usage errors are not "known" here and pass through
            known = describe(exc)
            if known is None:
                raise
            code, message = known
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code) from exc
