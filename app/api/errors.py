"""The API's error translation: each exception handler, and the OpenAPI schema of error bodies.

Services raise ``app.errors.ServiceError`` subclasses (one HTTP status each); a database that went away
answers 503 with a retry hint; so does a model registry error (a damaged version or marker, a models
folder that cannot be written), with its message, which names the file and the fix; FastAPI's validation
errors answer one ``ErrorBody`` naming the field; anything else is a 500 that names no internals (the log
has the traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import DatabaseUnavailable, RegistryError, ServiceError, Unavailable
from app.observability import REQUEST_ID_HEADER
from app.schemas import ErrorBody

log = logging.getLogger("app.main")


class BodyError(HTTPException):
    """A request body refused while it is read (an HTTPException, so FastAPI's body parsing lets it
    through): answered ``{"detail", "field": "body"}``, and the connection is closed (the rest of the
    body is not read)."""


class BodyTooLarge(BodyError):
    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, f"request body over {limit} bytes")
        self.limit = limit


class BodyNotUtf8(BodyError):
    """A JSON body in another encoding than UTF-8 (UTF-16 or UTF-32, with or without a byte-order mark)."""

    def __init__(self, found: str) -> None:
        super().__init__(status.HTTP_400_BAD_REQUEST, f"the body is {found}, not UTF-8: send JSON encoded as UTF-8")


class BodyTimeout(BodyError):
    """The body did not arrive in time (a client that sent part of it and stalled)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status.HTTP_408_REQUEST_TIMEOUT,
            f"the request body did not arrive within {seconds:g} s (JOBCLASS_BODY_TIMEOUT_S): send it whole",
        )


def _field(loc: Sequence[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _json_error(exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status_code, headers=headers)


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema tell the truth about errors: a 422 is an ``ErrorBody`` (field and message),
    not FastAPI's default list, and any other error status answers an ``ErrorBody`` too."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = {"description": "Invalid input: which field, and what is wrong", **error}
                responses.setdefault("default", {"description": "An error", **error})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def register_error_handlers(app: FastAPI) -> None:
    """Every exception handler of the API, on ``app``."""
    _service_errors(app)
    _body_errors(app)
    _validation_errors(app)
    _unexpected_errors(app)


def _service_errors(app: FastAPI) -> None:
    """A ServiceError answers its status; a database that went away answers 503."""

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _json_error(exc)

    # The database went away (refused, terminated, pool exhausted): 503 with a retry hint, never a 500.
    # The message names no host or credentials; the log has the driver's error.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return _json_error(DatabaseUnavailable(type(getattr(exc, "orig", None) or exc).__name__))

    # The model registry: a damaged version or ACTIVE marker, a models folder that cannot be written.
    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        log.error("model registry: %s", exc)
        return _json_error(Unavailable(str(exc)))


def _body_errors(app: FastAPI) -> None:
    """A body refused while it is read (too large 413, not UTF-8 400, too slow 408) and Starlette's HTTP
    errors (an unreadable JSON body: 400 naming ``body``)."""

    @app.exception_handler(BodyError)
    async def body_error(_: Request, exc: BodyError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "field": "body"}, status_code=exc.status_code, headers={"Connection": "close"}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, field = str(exc.detail), None
        if exc.status_code == status.HTTP_400_BAD_REQUEST:  # FastAPI could not read the body as JSON
            field = "body"
            if isinstance(exc.__cause__, UnicodeDecodeError):
                detail = "the body is not valid UTF-8: send JSON encoded as UTF-8"
        return JSONResponse({"detail": detail, "field": field}, status_code=exc.status_code, headers=exc.headers)


def _validation_errors(app: FastAPI) -> None:
    """FastAPI's validation errors as one ErrorBody naming the first field (415 for a body that is not JSON)."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        content_type = request.headers.get("content-type", "")
        if content_type and "json" not in content_type and errors and tuple(errors[0].get("loc", ())) == ("body",):
            # e.g. `curl -d '{...}'` without a header sends a form; JSON is only read when declared (CSRF-safe)
            return JSONResponse(
                {
                    "detail": "the body must be JSON sent with 'Content-Type: application/json' "
                    f"(got {content_type!r})",
                    "field": "body",
                },
                status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            )
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        return JSONResponse(
            {
                "detail": f"{field}: {first.get('msg', 'invalid')}",
                "field": field,
                "errors": [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")} for e in errors],
            },
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )


def _unexpected_errors(app: FastAPI) -> None:
    """Anything else: a 500 naming the request id and no internals."""

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        rid = getattr(request.state, "request_id", None)
        return JSONResponse(
            {"detail": "internal error", "request_id": rid},
            status_code=500,
            headers={REQUEST_ID_HEADER: rid} if rid else None,
        )
