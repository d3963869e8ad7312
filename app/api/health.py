from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from app.deps import MetricsDep, RuntimeDep
from app.metrics import CONTENT_TYPE_LATEST
from app.schemas import ComponentHealth, HealthPublic

router = APIRouter(tags=["health"])


def _rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``); None elsewhere."""
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@router.get(
    "/health",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "Degraded: the component that is down says why."}},
)
def health(runtime: RuntimeDep, response: Response) -> HealthPublic:
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        db = ComponentHealth(ok=True, detail=runtime.engine.dialect.name)
    except Exception as exc:  # report, never raise: health must answer
        db = ComponentHealth(ok=False, detail=type(exc).__name__)
    try:
        collection = runtime.store.active_collection()
        store = ComponentHealth(
            ok=collection is not None,
            detail=f"{collection}: {runtime.store.count()} vectors" if collection else "no collection: run reindex",
        )
    except Exception as exc:
        store = ComponentHealth(ok=False, detail=type(exc).__name__)
    model = (
        ComponentHealth(ok=True, detail=f"{runtime.model.version} ({runtime.settings.head_variant})")
        if runtime.has_model
        else ComponentHealth(ok=False, detail="no active model: run train")
    )
    ok = db.ok and store.ok and model.ok
    if not ok:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthPublic(
        status="ok" if ok else "degraded", database=db, vector_store=store, model=model, rss_bytes=_rss_bytes()
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format: requests and latency per route, predictions per label, abstentions,
    feedback and disagreements, the active model version and the index size."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
