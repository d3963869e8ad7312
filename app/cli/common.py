"""What every ``jobclass`` command shares: the one error policy, runtime construction and progress bars.

Error policy (:class:`ErrorPolicy`, the root group's ``invoke``, the only place commands' errors are
handled): every error becomes one line ``error: …`` on stderr, no traceback, and an exit code:

- 2 (``BAD_INPUT``, like click's usage errors): the user can fix it by changing the input, the
  configuration or the order of commands: ``InvalidInput``, ``NotFound``, ``Conflict``, invalid settings,
  a missing or unreadable file, the embedded index held by another process, a model registry error
  (``RegistryError``: a damaged version or ``ACTIVE`` marker, a models folder that cannot be written;
  its message names the file and the fix);
- 1 (``FAILED``) otherwise: a dependency that failed (database, vector store, model), or a bug.

A labelled CSV's problems are of the first kind (``app.services.vacancies.read_csv``): an empty file, a
header without rows, missing columns, text that is not UTF-8, an oversized field; ``ingest`` of a file with
invalid rows lists them (line numbers) on stderr, writes nothing and exits 2, unless ``--skip-invalid``.

``JOBCLASS_TRACEBACK=1`` re-raises errors that are not of the first kind, to debug them. Commands'
deliberate exits (``typer.Exit``: ``drift --fail-on-alert`` exits 3) and typer's own usage errors pass
through unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer
from pydantic import ValidationError
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from typer.core import TyperGroup

from app.encoders import resolve_encoder_settings
from app.errors import Conflict, InvalidInput, NotFound, RegistryError, ServiceError
from app.settings import Settings, get_settings
from indexing.store import StoreError, StoreLockedError

if TYPE_CHECKING:
    from tqdm import tqdm

    from app.runtime import Runtime
    from app.services.dataset import Split
    from indexing.finetune import Objective

BAD_INPUT = 2
FAILED = 1
TRACEBACK_ENV = "JOBCLASS_TRACEBACK"
_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _typer_usage_errors() -> tuple[type[BaseException], ...]:
    """typer's own usage errors: ``TyperException`` since typer 0.26 (which vendors click), click's
    ``ClickException`` before (typer < 0.26 comes with huggingface-hub < 1.22, which optimum-intel needs)."""
    try:
        from typer.exceptions import TyperException  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from click.exceptions import ClickException

        return (ClickException,)
    return (TyperException,)


_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, *_typer_usage_errors())


# ---- the error policy -------------------------------------------------------------------------
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


def _user_fixable(exc: BaseException) -> str | None:
    """The one-line message of an error the user can fix (exit 2), or None."""
    if isinstance(exc, StoreLockedError):
        return _first_line(exc)
    if isinstance(exc, InvalidInput | NotFound | Conflict):
        return exc.message
    if isinstance(exc, RegistryError):
        return _first_line(exc)
    if isinstance(exc, ValidationError):
        return _settings_problem(exc)
    if isinstance(exc, _FILE_ERRORS):
        name = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or _first_line(exc)}{name}"
    return None


def _failure(exc: BaseException) -> str:
    """The one-line message of any other error (exit 1)."""
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, SQLAlchemyError):
        return _database_problem(exc)
    if isinstance(exc, StoreError):
        hint = " (check JOBCLASS_QDRANT_URL)" if "unreachable" in str(exc) else ""
        return f"vector store: {_first_line(exc)}{hint}"
    if isinstance(exc, ResponseHandlingException | UnexpectedResponse):
        return f"vector store unreachable or refused the request: {_first_line(exc)} (check JOBCLASS_QDRANT_URL)"
    return _first_line(exc) or type(exc).__name__


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) of any error a command raised."""
    message = _user_fixable(exc)
    if message is not None:
        return BAD_INPUT, message
    return FAILED, _failure(exc)


class ErrorPolicy(TyperGroup):
    """The root group: runs the command (or sub-group) and turns any error into ``error: …`` and an
    exit code (see the module docstring). typer's exits and usage errors pass through."""

    def invoke(self, ctx: Any) -> Any:  # a click.Context (typer's vendored copy since typer 0.26)
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            code, message = describe(exc)
            if code != BAD_INPUT and os.environ.get(TRACEBACK_ENV):
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code) from exc


# ---- runtime and progress ---------------------------------------------------------------------
def runtime(settings: Settings | None = None) -> Runtime:
    """The service runtime (database, vector index, models) for a command that changes state."""
    from app.runtime import Runtime

    return Runtime(resolve_encoder_settings(settings or get_settings()))


def resolved_settings() -> Settings:
    """The settings a runtime would serve with (an active fine-tuned encoder applied), without building one."""
    return resolve_encoder_settings(get_settings())


def offline_runtime() -> Runtime:
    """A runtime for read-only reports: they never touch the vector index, so it is left closed (an
    in-memory client) and the command runs while a server owns the embedded index."""
    from qdrant_client import QdrantClient

    from app.runtime import Runtime

    return Runtime(resolve_encoder_settings(get_settings()), qdrant=QdrantClient(":memory:"))


def progress_bar(desc: str) -> tuple[tqdm, Callable[[int, int], None]]:
    """A tqdm bar and the (done, total) callback the services report progress through."""
    from tqdm import tqdm

    bar = tqdm(total=0, unit="vacancy", desc=desc)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def objective_option(value: str, flag: str = "--objective") -> Objective:
    """The fine-tuning objective named on the command line (``InvalidInput`` otherwise)."""
    from indexing.finetune import OBJECTIVES

    if value not in OBJECTIVES:
        raise InvalidInput(f"{flag} must be one of {', '.join(OBJECTIVES)}, not {value!r}")
    return cast("Objective", value)


def read_split(path: Path, settings: Settings) -> Split:
    """A labelled CSV the user named (``app.services.dataset.load_split``); a malformed one is bad input."""
    from app.services.dataset import load_split

    try:
        return load_split(path, settings.clean_max_chars)
    except (ValueError, KeyError) as exc:
        raise InvalidInput(_first_line(exc)) from exc
