"""The FastAPI application: lifespan wiring, routers and error translation."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api import admin, classify, feedback, health, predictions, search, web
from app.errors import ServiceError
from app.metrics import Metrics
from app.observability import REQUEST_ID_HEADER, RequestContextMiddleware
from app.runtime import Runtime
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024


def _field(loc: Sequence[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime(settings or get_settings())
        if not rt.has_model:
            rt.load_active_model()
        rt.check_index_compatible()
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

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                {"detail": f"request body over {MAX_BODY_BYTES} bytes", "field": "body"},
                status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            )
        return await call_next(request)

    # Outermost: every answer (413s and 500s included) carries a request id, is logged and counted.
    app.state.metrics = Metrics(lambda: getattr(app.state, "runtime", None))
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "field": exc.field}, status_code=exc.status_code)

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
