"""Long admin operations (reindex, retrain, encoder upgrade and rollback) as background jobs, recorded in
the database.

A job runs in a thread of the process that accepted it and reports progress (done / total). Its row in
``jobs`` (``app.db.JobRow``) is written when it is submitted, when it starts, as it progresses (at most
once per ``progress_interval`` seconds; the process that runs it reads its own progress exactly) and
when it ends, with its result (JSON) or error. So ``GET /v1/admin/jobs`` survives a restart and every API
worker answers alike.

One job of a kind is queued or running at a time, across processes: a partial unique index on ``kind``
over the active statuses makes a second insert fail, which is a ``Conflict`` (409) naming the job that
runs.

A job whose process died cannot finish: it is marked ``interrupted`` (with the reason in ``error``) by the
next registry that looks (every read and submit checks, so does ``recover`` at start). A queued or
running row is taken for dead when

- its owner is this process (same host and pid) but not a registry that is still open here (a restart
  within one process, e.g. a new ``Runtime``);
- its owner is another process of this host that no longer exists;
- its heartbeat (written every ``heartbeat_interval`` seconds while it runs) is older than
  ``stale_after`` seconds: the way to tell for a process on another host.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import JOB_ACTIVE_STATUSES, JobRow, utcnow
from app.errors import Conflict, NotFound, ServiceError

log = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "interrupted"]
Progress = Callable[[int, int], None]
JobFn = Callable[[Progress], Any]
SessionFactory = Callable[[], Session]

HOST = socket.gethostname()[:255]
_LIVE: weakref.WeakSet[JobRegistry] = weakref.WeakSet()  # the registries open in this process


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes (stored in UTC)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def result_json(value: Any) -> Any:
    """A job's return value as JSON: a dataclass as its fields plus its properties (``rate``)."""
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        data = dataclasses.asdict(value)
        for name, attr in vars(type(value)).items():
            if isinstance(attr, property) and name not in data:
                data[name] = getattr(value, name)
        value = data
    return json.loads(json.dumps(value, default=_json_default))


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
    result: Any = None  # JSON (``result_json``) of the job function's return value
    error: str | None = None
    owner: str = ""  # host:pid of the process that runs it

    @property
    def active(self) -> bool:
        return self.status in JOB_ACTIVE_STATUSES

    @property
    def seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def rate(self) -> float | None:
        """Items per second since the job started (up to its end)."""
        seconds = self.seconds
        return self.done / seconds if seconds else None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        return cls(
            id=row.id,
            kind=row.kind,
            status=row.status,  # type: ignore[arg-type]  # one of JobStatus (written only here)
            created_at=_aware(row.created_at) or utcnow(),
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            done=row.done,
            total=row.total,
            result=row.result,
            error=row.error,
            owner=f"{row.owner_host}:{row.owner_pid}",
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class JobRegistry:
    def __init__(
        self,
        sessions: SessionFactory,
        *,
        keep: int = 1000,
        progress_interval: float = 1.0,
        heartbeat_interval: float = 15.0,
        stale_after: float = 120.0,
    ) -> None:
        self._sessions = sessions
        self.keep = keep
        self.progress_interval = progress_interval
        self.heartbeat_interval = heartbeat_interval
        self.stale_after = stale_after
        self.id = uuid.uuid4().hex
        self._lock = threading.RLock()  # one database operation of this registry at a time
        self._threads: dict[str, threading.Thread] = {}
        self._progress: dict[str, tuple[int, int]] = {}  # the exact progress of the jobs running here
        _LIVE.add(self)

    # ---- the API the routes and services use ---------------------------------------------------
    def submit(self, kind: str, fn: JobFn) -> Job:
        """Record a queued job and start ``fn(progress)`` in a background thread; its return value becomes
        the job's result. ``Conflict`` when a job of ``kind`` is queued or running (in any process)."""
        self._reap()
        row = JobRow(
            id=uuid.uuid4().hex,
            kind=kind,
            status="queued",
            created_at=utcnow(),
            done=0,
            owner_host=HOST,
            owner_pid=os.getpid(),
            owner_id=self.id,
        )
        with self._lock, self._sessions() as session:
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                running = session.scalars(
                    select(JobRow).where(JobRow.kind == kind, JobRow.status.in_(JOB_ACTIVE_STATUSES))
                ).first()
                what = f"{running.status}: {running.id}" if running is not None else "queued or running"
                raise Conflict(f"a {kind} job is already {what}", field="kind") from None
            job = Job.of(row)
            thread = threading.Thread(target=self._run, args=(job.id, fn), name=f"job-{kind}-{job.id[:8]}")
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> Job:
        self._reap()
        with self._lock, self._sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFound(f"no job with id {job_id!r}", field="job_id")
            return self._fresh(Job.of(row))

    def list(self) -> list[Job]:
        self._reap()
        with self._lock, self._sessions() as session:
            rows = session.scalars(select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id)).all()
            return [self._fresh(Job.of(r)) for r in rows]

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until a job of this registry has finished (or ``timeout`` seconds passed); its state."""
        with self._lock:
            thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)

    def recover(self) -> int:
        """Mark the jobs of dead processes ``interrupted`` (at start); how many were."""
        return self._reap()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Give running jobs up to ``timeout`` seconds to finish (they cannot be stopped); a job still
        running then is recorded as ``interrupted`` (the process is going away)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = dict(self._threads)
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [job_id for job_id, thread in threads.items() if thread.is_alive()]
        if left:
            self._interrupt(left, "the process shut down before the job finished")
        _LIVE.discard(self)

    # ---- internals -----------------------------------------------------------------------------
    def _fresh(self, job: Job) -> Job:
        """A job running here reports its exact progress (the row's is at most ``progress_interval`` old)."""
        progress = self._progress.get(job.id)
        if progress is not None and job.status == "running":
            return dataclasses.replace(job, done=progress[0], total=progress[1])
        return job

    def _write(self, job_id: str, *, only_active: bool = False, **values: Any) -> None:
        query = update(JobRow).where(JobRow.id == job_id)
        if only_active:
            query = query.where(JobRow.status.in_(JOB_ACTIVE_STATUSES))
        try:
            with self._lock, self._sessions() as session:
                session.execute(query.values(**values))
                session.commit()
        except Exception:
            # the job goes on (or its end is recorded by the next write, or by recovery); say so in the log
            log.exception("job %s: could not record %s", job_id, sorted(values))

    def _run(self, job_id: str, fn: JobFn) -> None:
        now = utcnow()
        self._write(job_id, only_active=True, status="running", started_at=now, heartbeat_at=now)
        last: float | None = None  # when progress was last written (the first report is written at once)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop), name=f"job-beat-{job_id[:8]}")
        beat.daemon = True
        beat.start()

        def progress(done: int, total: int) -> None:
            nonlocal last
            self._progress[job_id] = (done, total)
            now = time.monotonic()
            if last is None or now - last >= self.progress_interval or done >= total:
                last = now
                self._write(job_id, only_active=True, done=done, total=total, heartbeat_at=utcnow())

        try:
            result = fn(progress)
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                log.exception("job %s failed", job_id)
            message = exc.message if isinstance(exc, ServiceError) else f"{type(exc).__name__}: {exc}"
            end: dict[str, Any] = {"status": "failed", "error": message}
        else:
            try:
                end = {"status": "succeeded", "result": result_json(result)}
            except (TypeError, ValueError) as exc:  # a result that is not JSON: the work is done, say so
                end = {"status": "succeeded", "result": None, "error": f"result not recorded: {exc}"}
        finally:
            stop.set()
        done_total = self._progress.pop(job_id, None)
        if done_total is not None:
            end.update(done=done_total[0], total=done_total[1])
        self._write(job_id, finished_at=utcnow(), heartbeat_at=utcnow(), **end)
        try:
            with self._lock, self._sessions() as session:
                self._forget_old(session)
        except Exception:
            log.exception("could not delete old jobs")
        finally:
            with self._lock:
                self._threads.pop(job_id, None)

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_interval):
            self._write(job_id, only_active=True, heartbeat_at=utcnow())

    def _interrupt(self, job_ids: builtins.list[str], reason: str) -> None:
        with self._lock, self._sessions() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id.in_(job_ids), JobRow.status.in_(JOB_ACTIVE_STATUSES))
                .values(status="interrupted", error=f"interrupted: {reason}", finished_at=utcnow())
            )
            session.commit()

    def _reap(self) -> int:
        """Mark the active jobs of dead processes ``interrupted``; how many."""
        pid = os.getpid()
        live = {r.id for r in list(_LIVE)}
        stale = utcnow() - timedelta(seconds=self.stale_after)
        dead: dict[str, builtins.list[str]] = {}
        with self._lock, self._sessions() as session:
            rows = session.scalars(select(JobRow).where(JobRow.status.in_(JOB_ACTIVE_STATUSES))).all()
        for row in rows:
            beat = _aware(row.heartbeat_at) or _aware(row.created_at)
            where = f"pid {row.owner_pid} on {row.owner_host}"
            if row.owner_host == HOST and row.owner_pid == pid and row.owner_id not in live:
                reason = f"the service that ran it ({where}) restarted before it finished"
            elif row.owner_host == HOST and row.owner_pid != pid and not _pid_alive(row.owner_pid):
                reason = f"the process that ran it ({where}) is gone"
            elif beat is not None and beat < stale:
                reason = f"the process that ran it ({where}) sent no heartbeat since {beat.isoformat()}"
            else:
                continue
            dead.setdefault(reason, []).append(row.id)
        for reason, ids in dead.items():
            log.warning("jobs %s marked interrupted: %s", ", ".join(ids), reason)
            self._interrupt(ids, reason)
        return sum(len(ids) for ids in dead.values())

    def _forget_old(self, session: Session) -> None:
        """Keep the newest ``keep`` finished jobs."""
        old = session.scalars(
            select(JobRow.id)
            .where(JobRow.status.not_in(JOB_ACTIVE_STATUSES))
            .order_by(JobRow.created_at.desc(), JobRow.id)
            .offset(self.keep)
        ).all()
        if old:
            session.execute(delete(JobRow).where(JobRow.id.in_(old)))
            session.commit()
