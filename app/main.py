"""The FastAPI application: lifespan wiring, middleware, routers; error translation is ``app.api.errors``."""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, catalog, classify, feedback, health, predictions, search, web
from app.api.errors import BodyError, BodyNotUtf8, BodyTimeout, BodyTooLarge, document_errors, register_error_handlers
from app.encoders import resolve_encoder_settings
from app.errors import StoreError
from app.metrics import Metrics
from app.observability import RequestContextMiddleware
from app.runtime import Runtime
from app.services.index import drop_abandoned_collections
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
            await _refuse(scope, receive, send, BodyTooLarge(self.limit))
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await _guarded(self.app, scope, receive, send, counted_receive)


UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})  # ASCII is UTF-8
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32 text"),
    (codecs.BOM_UTF32_BE, "UTF-32 text"),
    (codecs.BOM_UTF16_LE, "UTF-16 text"),
    (codecs.BOM_UTF16_BE, "UTF-16 text"),
)


def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of this content type as JSON (no content type: it does)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def _declared_charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip().lower()
    return None


def _not_utf8(chunk: bytes, first: bool) -> str | None:
    """What a chunk of a JSON body is, when it cannot be UTF-8 JSON: a UTF-16/32 byte-order mark, or a NUL
    byte (UTF-8 JSON has none; UTF-16 and UTF-32 of its ASCII punctuation always do)."""
    if first:
        for bom, name in _WIDE_BOMS:
            if chunk.startswith(bom):
                return f"{name} (it starts with a byte-order mark)"
    if b"\x00" in chunk:
        return "UTF-16 or UTF-32 text (it has NUL bytes)"
    return None


class BodyReadMiddleware:
    """How a request body arrives, checked before it is parsed:

    - a JSON body (``application/json``, ``…+json`` or no content type) declared in another charset than
      UTF-8, or in UTF-16/UTF-32 (a byte-order mark, or NUL bytes: UTF-16 without a BOM) answers 400
      naming the fix, instead of being decoded by guesswork or failing as garbage;
    - a body that has not wholly arrived ``timeout()`` seconds after the request started (a client that
      sent the headers and part of the body, then stalled) answers 408 and the connection is closed. The
      wait is asynchronous: the server serves other requests meanwhile.
    """

    def __init__(self, app: ASGIApp, timeout: Callable[[], float]) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"").decode("latin-1")
        json_body = _is_json(content_type)
        charset = _declared_charset(content_type) if json_body else None
        if charset is not None and charset not in UTF8_CHARSETS:
            await _refuse(scope, receive, send, BodyNotUtf8(f"declared as charset={charset}"))
            return
        loop = asyncio.get_running_loop()
        seconds = self.timeout()
        deadline = loop.time() + seconds
        complete = False  # the whole body arrived: later receives (waiting for a disconnect) are not timed
        first = True

        async def guarded_receive() -> Message:
            nonlocal complete, first
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTimeout(seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            chunk = message.get("body", b"") if message["type"] == "http.request" else b""
            if json_body and chunk:
                found = _not_utf8(chunk, first)
                first = False
                if found is not None:
                    raise BodyNotUtf8(found)
            return message

        await _guarded(self.app, scope, receive, send, guarded_receive)


async def _guarded(app: ASGIApp, scope: Scope, receive: Receive, send: Send, checked_receive: Receive) -> None:
    """Run ``app`` reading the body through ``checked_receive``; a ``BodyError`` it raises outside FastAPI's
    handlers (which answer it themselves) is answered here, unless the response has already started."""
    started = False

    async def tracked_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, checked_receive, tracked_send)
    except BodyError as exc:
        if started:
            raise
        await _refuse(scope, receive, send, exc)


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: BodyError) -> None:
    response = JSONResponse(
        {"detail": exc.detail, "field": "body"}, status_code=exc.status_code, headers={"Connection": "close"}
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
    """Load the active model and the encoder, drop half-built collections of interrupted rebuilds, and check
    the index fits them (an unreachable store is not fatal)."""
    if not rt.has_model:
        rt.load_active_model()
    try:
        drop_abandoned_collections(rt)
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


def _body_timeout(app: FastAPI) -> float:
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    return runtime.settings.body_timeout_s if runtime is not None else Settings.model_fields["body_timeout_s"].default


def _add_middleware(app: FastAPI) -> None:
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    app.add_middleware(BodyReadMiddleware, timeout=lambda: _body_timeout(app))
    # Outermost: every answer (413s and 500s included) carries a request id, is logged and counted.
    app.state.metrics = Metrics(lambda: getattr(app.state, "runtime", None))
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
