"""The FastAPI application: lifespan wiring, middleware, routers; error translation is ``app.api.errors``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, status
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, catalog, classify, feedback, health, predictions, search, web
from app.api.errors import BodyTooLarge, document_errors, register_error_handlers
from app.encoders import resolve_encoder_settings
from app.errors import StoreError
from app.metrics import Metrics
from app.observability import RequestContextMiddleware
from app.runtime import Runtime
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 8 * 1024 * 1024
ROUTERS = (
    classify.router,
    search.router,
    feedback.router,
    predictions.router,
    admin.router,
    catalog.router,
    health.router,
    web.router,
)


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


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    app = FastAPI(
        title="jobclass",
        version="0.1.0",
        summary="Classify job vacancies into occupation categories and find similar vacancies.",
        lifespan=_lifespan(settings, runtime),
    )
    _add_middleware(app)
    register_error_handlers(app)
    document_errors(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    return app


def _lifespan(
    settings: Settings | None, runtime: Runtime | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Build the runtime (unless one is given, then it is not closed here), check it, serve, close."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        rt = runtime or Runtime(resolve_encoder_settings(settings or get_settings()))
        _start(rt)
        app.state.runtime = rt
        try:
            yield
        finally:
            if owned:
                rt.close()

    return lifespan


def _start(rt: Runtime) -> None:
    """Load the active model and the encoder, and check the index fits them (an unreachable store is not fatal)."""
    if not rt.has_model:
        rt.load_active_model()
    try:
        rt.check_index_compatible()
    except StoreError as exc:  # serve anyway: classify answers from the head, search says 503
        log.warning("vector store unreachable at start-up (%s): the index is checked when it is back", exc)
    if not rt.has_model:
        log.warning("no active model: classify answers 503 until `jobclass train` has run")
    try:  # jobs a dead process left queued or running are reported as interrupted, not as running forever
        interrupted = rt.jobs.recover()
    except SQLAlchemyError as exc:  # the database is down or not migrated: the next read of the jobs checks
        log.warning("could not check for interrupted jobs at start-up (%s)", type(exc).__name__)
    else:
        if interrupted:
            log.warning("%d job(s) left by a stopped process marked interrupted", interrupted)
    _ = rt.encoder  # load the embedding model now, not on the first request


def _add_middleware(app: FastAPI) -> None:
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    # Outermost: every answer (413s and 500s included) carries a request id, is logged and counted.
    app.state.metrics = Metrics(lambda: getattr(app.state, "runtime", None))
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
