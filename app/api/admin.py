from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Response, status
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import AdminDep, ModelDep, RuntimeDep, SessionDep
from app.errors import DatabaseUnavailable
from app.schemas import (
    ActivationPublic,
    CalibrateRequest,
    JobProgress,
    JobPublic,
    JobsResponse,
    OperatingPointPublic,
    ReindexPublic,
    RetrainPublic,
    RetrainRequest,
    RollbackEncoderPublic,
    UpgradeEncoderPublic,
    UpgradeEncoderRequest,
)
from app.services.encoder_upgrade import (
    sentence_transformers_finetune,
    start_rollback_encoder,
    start_upgrade_encoder,
)
from app.services.index import start_reindex
from app.services.jobs import Job
from app.services.training import activate, start_retrain
from app.services.uncertainty import calibrate
from app.services.uncertainty import summary as uncertainty_summary

router = APIRouter(prefix="/v1", tags=["admin"])


def require_database(runtime: RuntimeDep) -> None:
    """Admin changes read and write the database: refuse them (503, retry hint) while it is unreachable
    rather than accept a job that can only fail or switch a model whose activation cannot be recorded."""
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(type(getattr(exc, "orig", None) or exc).__name__) from exc


DatabaseDep = Depends(require_database)
CALIBRATE = "Choose the active model's abstain thresholds for an accuracy target on its hold-out"


JobResult = ReindexPublic | RetrainPublic | UpgradeEncoderPublic | RollbackEncoderPublic


_PUBLIC: dict[str, type[JobResult]] = {
    "reindex": ReindexPublic,
    "retrain": RetrainPublic,
    "upgrade-encoder": UpgradeEncoderPublic,
    "rollback-encoder": RollbackEncoderPublic,
}


def _result(job: Job) -> JobResult | None:
    """A finished job's result (JSON, as recorded in the database) as the public schema of its kind."""
    public = _PUBLIC.get(job.kind)
    if public is None or not isinstance(job.result, dict):
        return None
    try:
        return public.model_validate(job.result)
    except ValidationError:  # a result recorded by another version of the service: still show the job
        return None


def _job_route(path: str, summary: str) -> Callable[[Callable[..., JobPublic]], Callable[..., JobPublic]]:
    """An admin route that starts a background job: 202 with the job and a ``Location`` to poll."""
    return router.post(
        path,
        response_model=JobPublic,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[AdminDep, DatabaseDep],
        summary=summary,
    )


def job_public(job: Job) -> JobPublic:
    return JobPublic.model_validate(
        {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "seconds": job.seconds,
            "progress": JobProgress(done=job.done, total=job.total, rate=job.rate),
            "result": _result(job),
            "error": job.error,
        }
    )


def _accepted(job: Job, response: Response) -> JobPublic:
    response.headers["Location"] = f"/v1/admin/jobs/{job.id}"
    return job_public(job)


@_job_route("/admin/reindex", "Rebuild the index in the background (poll the job)")
def admin_reindex(runtime: RuntimeDep, response: Response) -> JobPublic:
    return _accepted(start_reindex(runtime), response)


@_job_route("/admin/retrain", "Train a challenger and promote it if it is not worse (poll the job)")
def admin_retrain(
    runtime: RuntimeDep, response: Response, body: Annotated[RetrainRequest | None, Body()] = None
) -> JobPublic:
    body = body or RetrainRequest()
    return _accepted(start_retrain(runtime, body.margin, body.target_accuracy), response)


@_job_route("/admin/upgrade-encoder", "Fine-tune the encoder, reindex, train a head, compare; swap or discard")
def admin_upgrade_encoder(
    runtime: RuntimeDep, response: Response, body: Annotated[UpgradeEncoderRequest | None, Body()] = None
) -> JobPublic:
    from indexing.finetune import FinetuneConfig  # torch: loaded when an upgrade is asked for

    body = body or UpgradeEncoderRequest()
    cfg = FinetuneConfig(
        objective=body.objective,
        epochs=body.epochs,
        batch_size=body.batch_size,
        max_pairs_per_class=body.max_pairs_per_class,
        seed=body.seed,
        chunking=runtime.settings.embedding_chunking == "sentences",
    )
    job = start_upgrade_encoder(
        runtime,
        margin=body.margin,
        target_accuracy=body.target_accuracy,
        finetune_fn=sentence_transformers_finetune(cfg),
    )
    return _accepted(job, response)


@_job_route("/admin/rollback-encoder", "Back to the previous encoder and its head, re-embedding the index")
def admin_rollback_encoder(runtime: RuntimeDep, response: Response) -> JobPublic:
    return _accepted(start_rollback_encoder(runtime), response)


@router.get("/admin/jobs", response_model=JobsResponse, dependencies=[AdminDep])
def list_jobs(runtime: RuntimeDep) -> JobsResponse:
    return JobsResponse(jobs=[job_public(j) for j in runtime.jobs.list()])


@router.get("/admin/jobs/{job_id}", response_model=JobPublic, dependencies=[AdminDep])
def get_job(job_id: Annotated[str, Path(min_length=1, max_length=64)], runtime: RuntimeDep) -> JobPublic:
    return job_public(runtime.jobs.get(job_id))


@router.post(
    "/admin/calibrate", response_model=OperatingPointPublic, dependencies=[AdminDep, DatabaseDep], summary=CALIBRATE
)
def admin_calibrate(
    runtime: RuntimeDep, session: SessionDep, _: ModelDep, body: Annotated[CalibrateRequest | None, Body()] = None
) -> OperatingPointPublic:
    """Recompute the active model's prediction sets and operating point on its hold-out and serve them at once
    (embeds every labelled vacancy: cached embeddings make it quick)."""
    block = calibrate(runtime, session, body.target_accuracy if body else None)
    return OperatingPointPublic.model_validate(uncertainty_summary(block))


@router.post("/admin/models/{version}/activate", response_model=ActivationPublic, dependencies=[AdminDep, DatabaseDep])
def activate_model(
    version: Annotated[str, Path(min_length=1, max_length=64)], runtime: RuntimeDep, session: SessionDep
) -> ActivationPublic:
    done = activate(runtime, session, version)
    return ActivationPublic(active=done.active, previous=done.previous)
