"""Long admin operations (reindex, retrain) as background jobs in this process.

A job runs in its own thread and reports progress (done / total, rate); readers get consistent
snapshots. One job of a kind runs at a time: a second one of the same kind is a ``Conflict`` (409).
Finished jobs are kept (the newest ``keep``) so their status can still be read. The registry lives in
memory: a restart forgets it, which is fine for jobs whose results are in the database, the registry
and the index.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from app.db import utcnow
from app.errors import Conflict, NotFound, ServiceError

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed"]
Progress = Callable[[int, int], None]
JobFn = Callable[[Progress], Any]


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: JobStatus = "queued"
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    done: int = 0
    total: int | None = None
    result: Any = None
    error: str | None = None
    _started: float = field(default=0.0, repr=False)  # monotonic clock, for the rate
    _finished: float = field(default=0.0, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def rate(self) -> float | None:
        """Items per second since the job started (up to its end)."""
        if not self._started:
            return None
        elapsed = (self._finished or time.monotonic()) - self._started
        return self.done / elapsed if elapsed > 0 else None

    @property
    def seconds(self) -> float | None:
        if not self._started:
            return None
        return (self._finished or time.monotonic()) - self._started


class JobRegistry:
    def __init__(self, keep: int = 100) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self.keep = keep

    def submit(self, kind: str, fn: JobFn) -> Job:
        """Start ``fn(progress)`` in a background thread; its return value becomes the job's result."""
        with self._lock:
            running = next((j for j in self._jobs.values() if j.kind == kind and j.active), None)
            if running is not None:
                raise Conflict(f"a {kind} job is already {running.status}: {running.id}", field="kind")
            job = Job(id=uuid.uuid4().hex, kind=kind)
            self._jobs[job.id] = job
            self._forget_old()
            thread = threading.Thread(target=self._run, args=(job.id, fn), name=f"job-{kind}-{job.id[:8]}")
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}", field="job_id")
        return job

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job has finished (or ``timeout`` seconds passed); return its snapshot."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Give running jobs up to ``timeout`` seconds to finish (jobs cannot be interrupted)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- internals -----------------------------------------------------------------------
    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run(self, job_id: str, fn: JobFn) -> None:
        self._update(job_id, status="running", started_at=utcnow(), _started=time.monotonic())

        def progress(done: int, total: int) -> None:
            self._update(job_id, done=done, total=total)

        try:
            result = fn(progress)
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                log.exception("job %s failed", job_id)
            message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            self._update(job_id, status="failed", error=message, finished_at=utcnow(), _finished=time.monotonic())
        else:
            self._update(job_id, status="succeeded", result=result, finished_at=utcnow(), _finished=time.monotonic())
        finally:
            with self._lock:
                self._threads.pop(job_id, None)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if not j.active]
        for job in sorted(finished, key=lambda j: j.created_at)[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]
