"""The FastAPI application: lifespan wiring, routers and error translation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, classify, feedback, health, predictions, search, web
from app.encoders import resolve_encoder_settings
from app.errors import DatabaseUnavailable, ServiceError, StoreError, Unavailable
from app.metrics import Metrics
from app.observability import REQUEST_ID_HEADER, RequestContextMiddleware
from app.runtime import Runtime
from app.schemas import ErrorBody
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024


def _field(loc: Sequence[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


class BodyTooLarge(HTTPException):
    """Raised while a streamed body is read (an HTTPException, so FastAPI's body parsing lets it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, f"request body over {limit} bytes")
        self.limit = limit


class BodyLimitMiddleware:
    """Refuses request bodies over ``limit`` bytes with 413 before they are parsed: at once when
    ``Content-Length`` says so, and while reading when the body is streamed without one (chunked)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body over {self.limit} bytes", "field": "body"},
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _json_error(exc: ServiceError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
    return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status_code, headers=headers)


def _document_errors(app: FastAPI) -> None:
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


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime(resolve_encoder_settings(settings or get_settings()))
        if not rt.has_model:
            rt.load_active_model()
        try:
            rt.check_index_compatible()
        except StoreError as exc:  # serve anyway: classify answers from the head, search says 503
            log.warning("vector store unreachable at start-up (%s): the index is checked when it is back", exc)
        if not rt.has_model:
            log.warning("no active model: classify answers 503 until `jobclass train` has run")
        _ = rt.encoder  # load the embedding model now, not on the first request
        app.state.runtime = rt
        try:
            yield
        finally:
            if owned:
                rt.close()

    app = FastAPI(
        title="jobclass",
        version="0.1.0",
        summary="Classify job vacancies into occupation categories and find similar vacancies.",
        lifespan=lifespan,
    )

    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)

    # Outermost: every answer (413s and 500s included) carries a request id, is logged and counted.
    app.state.metrics = Metrics(lambda: getattr(app.state, "runtime", None))
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

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

    @app.exception_handler(BodyTooLarge)
    async def body_too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        rid = getattr(request.state, "request_id", None)
        return JSONResponse(
            {"detail": "internal error", "request_id": rid},
            status_code=500,
            headers={REQUEST_ID_HEADER: rid} if rid else None,
        )

    _document_errors(app)
    for router in (
        classify.router,
        search.router,
        feedback.router,
        predictions.router,
        admin.router,
        health.router,
        web.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    return app
