"""Background jobs recorded in the database (app/services/jobs.py), on SQLite and the real Postgres: status,
progress and result persist; a job of a dead process reads ``interrupted``; one job of a kind at a time
holds across registries (API workers) on one database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient
from sqlalchemy import Engine, delete
from sqlalchemy.orm import sessionmaker

from app.db import JobRow, make_session_factory, utcnow
from app.errors import Conflict, InvalidInput, NotFound
from app.main import create_app
from app.runtime import Runtime
from app.services.jobs import HOST, JobRegistry
from app.settings import PROJECT_ROOT, Settings
from tests.fakes import FakeEncoder


@pytest.fixture
def sessions(migrated_engine: Engine) -> Iterator[sessionmaker]:
    """Real, independent sessions (jobs write from their own threads, as in production); the job rows
    are deleted afterwards."""
    yield make_session_factory(migrated_engine)
    with migrated_engine.begin() as conn:
        conn.execute(delete(JobRow))


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_progress_and_result_are_recorded_for_every_reader(sessions: sessionmaker) -> None:
    runner, reader = JobRegistry(sessions, progress_interval=0.0), JobRegistry(sessions)
    step = threading.Event()

    def work(progress: Any) -> dict[str, int]:
        progress(2, 4)
        step.wait(10)
        progress(4, 4)
        return {"count": 4}

    try:
        job = runner.submit("reindex", work)
        assert job.status == "queued" and job.result is None and job.owner == f"{HOST}:{os.getpid()}"
        wait_until(lambda: reader.get(job.id).done == 2)
        running = reader.get(job.id)  # another registry (worker) reads the row
        assert running.status == "running" and running.total == 4 and running.started_at is not None
        step.set()
        runner.wait(job.id, 10)
        finished = reader.get(job.id)
        assert finished.status == "succeeded" and finished.result == {"count": 4} and finished.error is None
        assert (finished.done, finished.total) == (4, 4) and finished.rate is not None and finished.rate > 0
        assert finished.finished_at is not None and finished.seconds is not None
        assert [j.id for j in reader.list()] == [job.id]
    finally:
        step.set()
        runner.shutdown()
        reader.shutdown()


def test_progress_writes_are_throttled_but_the_runner_reads_its_own_exactly(sessions: sessionmaker) -> None:
    runner, reader = JobRegistry(sessions, progress_interval=3600.0), JobRegistry(sessions)
    step = threading.Event()

    def work(progress: Any) -> None:
        for done in range(1, 6):
            progress(done, 10)
        step.wait(10)

    try:
        job = runner.submit("retrain", work)
        wait_until(lambda: runner.get(job.id).done == 5)
        assert reader.get(job.id).done == 1  # the first report was written; the next ones wait an interval
        step.set()
        assert runner.wait(job.id, 10).done == 5 and reader.get(job.id).done == 5  # the end writes the last
    finally:
        step.set()
        runner.shutdown()
        reader.shutdown()


def test_one_job_of_a_kind_across_registries(sessions: sessionmaker) -> None:
    first, second = JobRegistry(sessions), JobRegistry(sessions)
    release = threading.Event()
    try:
        running = first.submit("reindex", lambda progress: release.wait(10))
        with pytest.raises(Conflict, match=running.id) as refused:
            second.submit("reindex", lambda progress: None)
        assert refused.value.status_code == 409
        other = second.submit("retrain", lambda progress: None)  # another kind may run meanwhile
        assert second.wait(other.id, 10).status == "succeeded"
        release.set()
        assert first.wait(running.id, 10).status == "succeeded"
        again = second.submit("reindex", lambda progress: None)
        assert second.wait(again.id, 10).status == "succeeded"
        assert first.list()[0].id == again.id
    finally:
        release.set()
        first.shutdown()
        second.shutdown()


def test_failures_are_recorded_not_raised(sessions: sessionmaker) -> None:
    jobs = JobRegistry(sessions)

    def invalid(progress: Any) -> None:
        raise InvalidInput("no labelled vacancies")

    def crash(progress: Any) -> None:
        raise ZeroDivisionError("boom")

    try:
        assert jobs.wait(jobs.submit("retrain", invalid).id, 10).error == "no labelled vacancies"
        crashed = jobs.wait(jobs.submit("retrain", crash).id, 10)
        assert crashed.status == "failed" and crashed.error == "ZeroDivisionError: boom"
        with pytest.raises(NotFound):
            jobs.get("nope")
    finally:
        jobs.shutdown()


def test_old_finished_jobs_are_forgotten(sessions: sessionmaker) -> None:
    jobs = JobRegistry(sessions, keep=3)
    try:
        ids = [jobs.wait(jobs.submit("reindex", lambda progress: None).id, 10).id for _ in range(5)]
        assert {j.id for j in jobs.list()} == set(ids[-3:])
    finally:
        jobs.shutdown()


KILLED_WORKER = textwrap.dedent(
    """
    import sys, threading
    from app.db import make_engine, make_session_factory
    from app.services.jobs import JobRegistry

    jobs = JobRegistry(make_session_factory(make_engine(sys.argv[1])), progress_interval=0.0)

    def work(progress):
        progress(3, 7)
        print("started", flush=True)
        threading.Event().wait()

    job = jobs.submit("retrain", work)
    print(job.id, flush=True)
    threading.Event().wait()
    """
)


def test_a_job_of_a_killed_process_is_interrupted(sessions: sessionmaker, migrated_engine: Engine) -> None:
    """kill -9 of the worker that runs a job: the next registry reports it interrupted, with its progress,
    and a job of that kind can start again."""
    url = migrated_engine.url.render_as_string(hide_password=False)
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, url], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT
    )
    try:
        assert worker.stdout is not None
        job_id = worker.stdout.readline().strip()
        assert worker.stdout.readline().strip() == "started"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    jobs = JobRegistry(sessions)  # the restarted service
    try:
        job = jobs.get(job_id)
        assert job.status == "interrupted" and job.finished_at is not None
        assert job.error is not None and f"pid {worker.pid} on {HOST}" in job.error and "gone" in job.error
        assert (job.done, job.total) == (3, 7)  # the progress it had recorded
        assert jobs.wait(jobs.submit("retrain", lambda progress: None).id, 10).status == "succeeded"
    finally:
        jobs.shutdown()


def _row(job_id: str, **values: Any) -> JobRow:
    base: dict[str, Any] = {
        "kind": "reindex",
        "status": "running",
        "created_at": utcnow(),
        "heartbeat_at": utcnow(),
        "done": 1,
        "owner_host": HOST,
        "owner_pid": os.getpid(),
        "owner_id": "a-registry-that-is-gone",
    }
    return JobRow(id=job_id, **(base | values))


def test_a_restart_in_the_same_process_and_a_silent_host_interrupt_their_jobs(sessions: sessionmaker) -> None:
    with sessions() as session:
        session.add(_row("restarted"))  # this pid (a container's pid 1 after a restart), an old registry
        session.add(_row("silent", kind="retrain", owner_host="elsewhere", heartbeat_at=utcnow() - timedelta(hours=1)))
        session.add(_row("alive", kind="upgrade-encoder", owner_host="elsewhere"))
        session.commit()
    jobs = JobRegistry(sessions)
    try:
        assert jobs.recover() == 2
        status = {j.id: (j.status, j.error or "") for j in jobs.list()}
        assert status["restarted"][0] == "interrupted" and "restarted" in status["restarted"][1]
        assert status["silent"][0] == "interrupted" and "no heartbeat" in status["silent"][1]
        assert status["alive"] == ("running", "")  # another host that keeps beating: still running
    finally:
        jobs.shutdown()


def test_a_shutdown_during_a_job_records_it_interrupted(sessions: sessionmaker) -> None:
    jobs = JobRegistry(sessions)
    release = threading.Event()
    job = jobs.submit("reindex", lambda progress: release.wait(10))
    wait_until(lambda: jobs.get(job.id).status == "running")
    jobs.shutdown(timeout=0.05)  # the server stops while the job runs
    after = JobRegistry(sessions)
    try:
        stopped = after.get(job.id)
        assert stopped.status == "interrupted" and "shut down" in (stopped.error or "")
        release.set()  # the thread outlived the shutdown and finished its work: the record says so
        wait_until(lambda: after.get(job.id).status == "succeeded")
    finally:
        release.set()
        after.shutdown()


def _runtime(settings: Settings, engine: Engine) -> Runtime:
    return Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"), engine=engine)


def test_the_jobs_api_reads_the_database_across_workers(
    settings: Settings, migrated_engine: Engine, sessions: sessionmaker, tmp_path: Path
) -> None:
    """Two API workers (two runtimes) on one database: a job accepted by one is listed by the other, the
    other refuses a second one of its kind (409), and a restarted worker reports it interrupted."""
    first, second = _runtime(settings, migrated_engine), _runtime(settings, migrated_engine)
    release = threading.Event()
    try:

        def blocked(progress: Any) -> None:
            progress(1, 3)
            release.wait(10)

        running = first.jobs.submit("reindex", blocked)
        with TestClient(create_app(second.settings, second)) as client:
            busy = client.post("/v1/admin/reindex")
            assert busy.status_code == 409 and running.id in busy.json()["detail"]
            listed = client.get("/v1/admin/jobs").json()["jobs"]
            assert [j["id"] for j in listed] == [running.id] and listed[0]["status"] in ("queued", "running")
            wait_until(lambda: client.get(f"/v1/admin/jobs/{running.id}").json()["progress"]["done"] == 1)
        release.set()
        first.jobs.wait(running.id, 10)
        with TestClient(create_app(second.settings, second)) as client:
            body = client.get(f"/v1/admin/jobs/{running.id}").json()
            assert body["status"] == "succeeded" and (body["progress"]["done"], body["progress"]["total"]) == (1, 3)
    finally:
        release.set()
        first.close()
        second.close()
