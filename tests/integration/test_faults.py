"""Faults: the database or the vector store going away, a job crashing midway, concurrent corrections,
and the production profile. Database faults run against the real Postgres (a closed port, a proxy that
is cut and restored, ``pg_terminate_backend``); the rest on SQLite and Postgres with the fake encoder."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from qdrant_client import QdrantClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from app.db import Base, Feedback, JobRow, ModelVersion, Prediction, Vacancy, make_engine, migrate
from app.main import create_app
from app.observability import JsonFormatter
from app.runtime import Runtime
from app.services.classification import ClassifyItem, classify
from app.services.feedback import submit_feedback
from app.services.index import drop_abandoned_collections, reindex, write_vacancies
from app.services.vacancies import ingest_csv, labelled_vacancies
from app.settings import Settings
from indexing.store import point_id
from tests.conftest import POSTGRES_URL, _postgres_engine, make_settings
from tests.factories import seed, wait_for_job, write_csv
from tests.fakes import FakeEncoder, topic_texts

CARPENTER = "carpenter needed for timber roofing and scaffolding on our building site in aarhus"
DEVELOPER = "python developer for backend software and cloud database work"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rows(runtime: Runtime, model: type[Base]) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


class TcpProxy:
    """A TCP forwarder on a free local port to ``target``: ``stop()`` is the database going away (the port
    closes and every open connection is cut), ``start()`` it coming back on the same address."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): the port really closes
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)


def _postgres_or_skip() -> None:
    """Skip locally without Postgres; under CI=true fail (tests.conftest._postgres_engine decides)."""
    _postgres_engine().dispose()


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def live(settings: Settings, migrated_engine: Engine, tmp_path: Path) -> Iterator[Runtime]:
    """A seeded runtime with real, independent sessions (many threads may write at once); its rows are
    deleted afterwards."""
    settings.embedding_cache = False
    rt = Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"), engine=migrated_engine)
    try:
        seed(rt, tmp_path)
        yield rt
    finally:
        rt.jobs.shutdown()
        rt.store.client.close()
        with migrated_engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def seeded_state(tmp_path: Path) -> Iterator[tuple[Settings, QdrantClient]]:
    """Settings whose registry holds an active model and an in-memory index built from them (seeded on a
    throw-away SQLite file): apps on another database or store can then start and classify."""
    settings = make_settings(tmp_path, embedding_cache=False)
    migrate(settings.db_url)
    qdrant = QdrantClient(":memory:")
    rt = Runtime(settings, encoder=FakeEncoder(), qdrant=qdrant)
    seed(rt, tmp_path)
    rt.engine.dispose()
    yield settings, qdrant
    qdrant.close()


def _app_client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime.settings, runtime), raise_server_exceptions=False)


def assert_503_with_retry(response: Any, mentions: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert mentions in body["detail"]
    assert "Traceback" not in response.text and "postgres@" not in response.text


# ---- the database goes away and comes back -------------------------------------------------------
@pytest.mark.postgres
def test_database_down_then_back_without_a_restart(seeded_state: tuple[Settings, QdrantClient]) -> None:
    """(a) the app points at a closed port: classify answers unstored, feedback and admin answer 503, health
    says which component is down; (b) the database appears on that port: the same app, without a restart,
    stores predictions and feedback again."""
    _postgres_or_skip()
    settings, qdrant = seeded_state
    url = make_url(POSTGRES_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    migrate(POSTGRES_URL)
    engine = make_engine(proxied)  # nothing listens there until the proxy starts
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=qdrant, engine=engine)
    try:
        with _app_client(runtime) as client:
            # (a) closed port
            body = client.post("/v1/classify", json={"text": CARPENTER}).json()
            assert body["label"] == "Bygge og anlæg" and body["stored"] is False and body["prediction_id"] is None
            batch = client.post("/v1/classify/batch", json={"items": [{"text": CARPENTER}, {"text": DEVELOPER}]})
            assert batch.status_code == 200 and {r["stored"] for r in batch.json()["results"]} == {False}
            fb = client.post("/v1/feedback", json={"prediction_id": "0" * 32, "label": "Ledelse"})
            assert_503_with_retry(fb, "database is unavailable")
            for path in (
                "/v1/admin/reindex",
                "/v1/admin/retrain",
                f"/v1/admin/models/{runtime.model.version}/activate",
            ):
                assert_503_with_retry(client.post(path), "database is unavailable")
            # jobs live in the database: the list is unavailable too, and none was accepted (checked below)
            assert_503_with_retry(client.get("/v1/admin/jobs"), "database is unavailable")
            assert_503_with_retry(client.get("/v1/predictions"), "database is unavailable")
            health = client.get("/health")
            assert health.status_code == 503
            h = health.json()
            assert h["database"]["ok"] is False and h["vector_store"]["ok"] is True and h["model"]["ok"] is True

            # (b) the database comes back on the same address
            proxy.start()
            stored = client.post("/v1/classify", json={"text": CARPENTER}).json()
            assert stored["stored"] is True and stored["prediction_id"]
            fb = client.post("/v1/feedback", json={"prediction_id": stored["prediction_id"], "label": "Ledelse"})
            assert fb.status_code == 201, fb.text
            assert client.get("/health").json()["database"]["ok"] is True

            # and goes away again mid-run, with connections in the pool: cut, then 503, then back
            proxy.stop()
            unstored = client.post("/v1/classify", json={"text": DEVELOPER}).json()
            assert unstored["stored"] is False and unstored["prediction_id"] is None
            payload = {"prediction_id": stored["prediction_id"], "label": "Akademisk arbejde"}
            assert_503_with_retry(client.post("/v1/feedback", json=payload), "database is unavailable")
            proxy.start()
            assert client.post("/v1/feedback", json=payload).status_code == 201
        with runtime.sessions() as session:  # exactly what was acknowledged was written
            history = session.scalars(select(Feedback.label).where(Feedback.prediction_id == stored["prediction_id"]))
            assert list(history) == ["Ledelse", "Akademisk arbejde"]
            assert session.scalar(select(func.count()).select_from(Prediction)) == 1
            assert session.scalar(select(func.count()).select_from(JobRow)) == 0  # no job was accepted
    finally:
        proxy.stop()
        engine.dispose()
        with make_engine(POSTGRES_URL).begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.mark.postgres
def test_terminated_connections_are_replaced_without_a_restart(seeded_state: tuple[Settings, QdrantClient]) -> None:
    """``pg_terminate_backend`` on every connection of the app while requests keep coming: none answers 5xx
    except an honest 503, and once the server has cut them every request succeeds again."""
    _postgres_or_skip()
    settings, qdrant = seeded_state
    name = "jobclass_faults_terminate"
    url = make_url(POSTGRES_URL).update_query_dict({"application_name": name}).render_as_string(hide_password=False)
    migrate(POSTGRES_URL)
    engine = make_engine(url)
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=qdrant, engine=engine)
    admin = make_engine(POSTGRES_URL)
    statuses: list[int] = []
    stop = threading.Event()
    try:
        with _app_client(runtime) as client:
            first = client.post("/v1/classify", json={"text": CARPENTER}).json()
            assert first["stored"] is True

            def hammer() -> None:
                while not stop.is_set():
                    r = client.post("/v1/classify", json={"text": DEVELOPER})
                    statuses.append(r.status_code)

            threads = [threading.Thread(target=hammer) for _ in range(4)]
            for t in threads:
                t.start()
            killed = 0
            for _ in range(3):
                with admin.connect() as conn:
                    killed += int(
                        conn.execute(
                            text(
                                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                "WHERE application_name = :name AND pid <> pg_backend_pid()"
                            ),
                            {"name": name},
                        ).scalar_one()
                    )
                stop.wait(0.3)
            stop.set()
            for t in threads:
                t.join(30)
            assert killed >= 1  # the app's pooled connections really were cut
            assert statuses and set(statuses) == {200}
            # afterwards: every request succeeds and is stored, with the same engine and pool
            for _ in range(3):
                body = client.post("/v1/classify", json={"text": CARPENTER}).json()
                assert body["stored"] is True
            fb = client.post("/v1/feedback", json={"prediction_id": first["prediction_id"], "label": "Ledelse"})
            assert fb.status_code == 201, fb.text
            assert client.post(f"/v1/admin/models/{runtime.model.version}/activate").status_code == 200
            assert client.get("/health").json()["database"]["ok"] is True
    finally:
        stop.set()
        engine.dispose()
        with admin.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        admin.dispose()


# ---- the vector store goes away -----------------------------------------------------------------
# qdrant-client warns that it cannot read the version of a server that is down: that is the point here.
@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
def test_vector_store_unreachable_head_answers_search_503(
    seeded_state: tuple[Settings, QdrantClient], tmp_path: Path
) -> None:
    """A Qdrant server that refuses connections: the service starts, classify answers from the head alone
    (``index_used: false``), search and similar answer 503 with a retry hint, feedback is stored but not
    indexed, and /health names the component that is down."""
    settings, _ = seeded_state
    down = QdrantClient(url=f"http://127.0.0.1:{free_port()}", timeout=2)
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=down)
    try:
        with _app_client(runtime) as client:
            body = client.post("/v1/classify", json={"text": CARPENTER}).json()
            assert body["index_used"] is False and body["neighbours"] == [] and body["label"] == "Bygge og anlæg"
            assert body["stored"] is True
            assert_503_with_retry(client.post("/v1/search", json={"text": CARPENTER}), "vector store unavailable")
            assert_503_with_retry(client.get("/v1/vacancies/t0-00/similar"), "vector store unavailable")
            fb = client.post("/v1/feedback", json={"prediction_id": body["prediction_id"], "label": "Ledelse"})
            assert fb.status_code == 201 and fb.json()["indexed"] is False
            health = client.get("/health")
            assert health.status_code == 503
            h = health.json()
            assert h["vector_store"]["ok"] is False and h["database"]["ok"] is True and h["model"]["ok"] is True
    finally:
        runtime.close()


# ---- a job crashes midway ------------------------------------------------------------------------
class FailingEncoder(FakeEncoder):
    """Embeds single texts (classify) normally; batch calls (reindex, retrain) fail after ``ok_batches``."""

    def __init__(self, ok_batches: int) -> None:
        super().__init__()
        self.ok_batches = ok_batches
        self.batches = 0

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if len(texts) > 1:
            self.batches += 1
            if self.batches > self.ok_batches:
                raise RuntimeError("encoder crashed midway")
        return super().encode(texts, show_progress=show_progress)


def test_a_crash_midway_leaves_the_previous_index_and_model_serving(live: Runtime) -> None:
    live.settings.index_batch_size = 8  # 36 vacancies: 5 batches, the third one fails
    with _app_client(live) as client:
        before = client.post("/v1/classify", json={"text": CARPENTER}).json()
        collection = live.store.active_collection()
        version = live.model.version
        versions = len(live.registry.versions())
        live._encoder = FailingEncoder(ok_batches=2)

        job = wait_for_job(client, client.post("/v1/admin/reindex"))
        assert job["status"] == "failed" and "encoder crashed midway" in job["error"] and job["result"] is None
        assert job["progress"]["done"] == 16  # it really got midway
        assert live.store.active_collection() == collection
        names = {c.name for c in live.store.client.get_collections().collections}
        assert names == {collection}  # the half-built collection is gone

        live._encoder.batches = 0
        job = wait_for_job(client, client.post("/v1/admin/retrain"))
        assert job["status"] == "failed" and "encoder crashed midway" in job["error"]
        assert live.model.version == version and live.registry.active_version() == version
        assert len(live.registry.versions()) == versions
        with live.sessions() as session:
            active = session.scalars(select(ModelVersion.id).where(ModelVersion.is_active.is_(True)))
            assert list(active) == [version]

        after = client.post("/v1/classify", json={"text": CARPENTER}).json()
        assert after["index_used"] is True and after["model_version"] == version
        assert after["neighbours"] == before["neighbours"] and after["probabilities"] == before["probabilities"]
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_a_collection_left_by_a_killed_rebuild_is_dropped_at_start(
    tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rebuild killed before its swap leaves ``vacancies_v2`` on disk with no alias: the next start drops it
    (one log line) and keeps the aliased one serving. Embedded index on a folder, both backends."""
    settings = make_settings(tmp_path, qdrant_backend=backend, qdrant_path=str(tmp_path / "index"))
    migrate(settings.db_url)
    first = Runtime(settings, encoder=FakeEncoder())
    with first.sessions() as session:
        assert ingest_csv(session, write_csv(tmp_path / "a.csv", topic_texts(4)), first.taxonomy).ok
        live_collection = reindex(first, session).collection
        # the killed rebuild: a new collection, partly written, never swapped, never dropped
        half_built = first.store.create_version(first.encoder.dim, first.index_metadata())
        write_vacancies(first, labelled_vacancies(session)[:5], half_built)
    first.close()  # the process dies here: nothing cleans up after it

    second = Runtime(settings, encoder=FakeEncoder())
    try:
        names = {c.name for c in second.store.client.get_collections().collections}
        assert names == {live_collection, half_built}
        with caplog.at_level(logging.WARNING, logger="app.services.index"), _app_client(second) as client:
            names = {c.name for c in second.store.client.get_collections().collections}
            assert names == {live_collection}  # the half-built one is gone, the live one untouched
            assert second.store.active_collection() == live_collection and second.store.count() == 12
            hits = client.post("/v1/search", json={"text": CARPENTER, "k": 3})
            assert hits.status_code == 200 and len(hits.json()["hits"]) == 3
        lines = [r.getMessage() for r in caplog.records if "half-built" in r.getMessage()]
        assert lines == [
            f"dropped 1 half-built collection(s) of an interrupted rebuild (no alias pointed to them): {half_built}"
        ]
        assert drop_abandoned_collections(second) == []  # nothing left: a second start logs nothing
    finally:
        second.close()


def test_collections_without_an_alias_on_a_server_are_only_logged(
    bare: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """With a Qdrant server another worker may be building a collection right now: named, not dropped."""
    store = bare.store
    store.swap_alias(store.create_version(bare.encoder.dim, bare.index_metadata()))
    building = store.create_version(bare.encoder.dim, bare.index_metadata())
    bare.settings.qdrant_url = "http://qdrant.invalid:6333"  # what the server profile looks like to the check
    with caplog.at_level(logging.WARNING, logger="app.services.index"):
        assert drop_abandoned_collections(bare) == []
    assert building in {c.name for c in store.client.get_collections().collections}
    assert any(building in r.getMessage() and "not dropped" in r.getMessage() for r in caplog.records)


# ---- concurrent corrections -----------------------------------------------------------------------
def test_concurrent_feedback_on_one_prediction_loses_nothing(live: Runtime) -> None:
    labels = ["Ledelse", "Akademisk arbejde", "It og teleteknik", "Bygge og anlæg"]
    threads_n, posts = 16, 3
    with _app_client(live) as client:
        pid = client.post("/v1/classify", json={"text": DEVELOPER}).json()["prediction_id"]
        answers: list[tuple[int, dict[str, Any]]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(threads_n)

        def post(n: int) -> None:
            barrier.wait()
            for i in range(posts):
                r = client.post(
                    "/v1/feedback",
                    json={"prediction_id": pid, "label": labels[(n + i) % len(labels)], "comment": f"t{n}-{i}"},
                )
                with lock:
                    answers.append((r.status_code, r.json()))

        workers = [threading.Thread(target=post, args=(n,)) for n in range(threads_n)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(120)
    assert len(answers) == threads_n * posts
    assert {s for s, _ in answers} == {201}, [b for s, b in answers if s != 201][:3]
    acknowledged = {b["id"]: (b["label"], b["comment"]) for _, b in answers}
    assert len(acknowledged) == threads_n * posts  # no id handed out twice
    with live.sessions() as session:
        stored = {
            f.id: (f.label, f.comment) for f in session.scalars(select(Feedback).where(Feedback.prediction_id == pid))
        }
        assert stored == acknowledged  # every 2xx is a row, every row was acknowledged, nothing duplicated
        assert sorted(str(c) for _, c in stored.values()) == sorted(
            f"t{n}-{i}" for n in range(threads_n) for i in range(posts)
        )
        vacancies = session.scalars(select(Vacancy).where(Vacancy.source == "feedback")).all()
        assert len(vacancies) == 1  # one corrected vacancy per prediction, however many raced to create it
        latest = session.scalars(
            select(Feedback).where(Feedback.prediction_id == pid).order_by(Feedback.id.desc())
        ).first()
        assert latest is not None and vacancies[0].label == latest.label  # the latest correction wins


class JitterEncoder(FakeEncoder):
    """The fake encoder with a random pause of up to 50 ms per call (seeded): concurrent requests interleave
    between their database commit and their index write, as they do under a real model."""

    def __init__(self) -> None:
        super().__init__()
        self._random = random.Random(19)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        with self._lock:
            pause = self._random.uniform(0.0, 0.05)
        time.sleep(pause)
        return super().encode(texts, show_progress=show_progress)


def test_concurrent_corrections_leave_the_index_on_the_latest_one(live: Runtime) -> None:
    """30 corrections of one prediction from 10 threads: the vacancy row, the index payload and the latest
    feedback row all end on the same label, and the row's revision counts every correction."""
    labels = ["Ledelse", "Akademisk arbejde", "It og teleteknik"]  # few: a correction often repeats the last
    threads_n, posts = 10, 3
    with live.sessions() as session:
        [result] = classify(live, session, [ClassifyItem(DEVELOPER)])
    pid = result.prediction_id
    assert pid is not None
    live._encoder = JitterEncoder()
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def correct(n: int) -> None:
        try:
            for i in range(posts):
                barrier.wait(30)  # every round races, the last one included
                with live.sessions() as session:
                    assert submit_feedback(live, session, pid, labels[(n + i) % len(labels)]).indexed
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=correct, args=(n,)) for n in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not failures, failures[:3]
    with live.sessions() as session:
        latest = session.scalars(
            select(Feedback).where(Feedback.prediction_id == pid).order_by(Feedback.id.desc())
        ).first()
        assert latest is not None
        vacancy = session.get(Vacancy, latest.vacancy_id)
        assert vacancy is not None
        assert vacancy.label == latest.label  # the row is the latest correction …
        assert vacancy.revision == threads_n * posts  # … and counts every one of them
    [point] = live.store.client.retrieve(live.store.alias, ids=[point_id(vacancy.id)], with_payload=True)
    assert point.payload is not None
    assert (point.payload["label"], point.payload["revision"]) == (latest.label, vacancy.revision)  # the index too


# ---- access: production profile, tokens, CORS, error bodies ---------------------------------------
def test_production_profile_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="production profile needs JOBCLASS_ADMIN_TOKEN"):
        make_settings(tmp_path, profile="production")
    ok = make_settings(tmp_path, profile="production", admin_token="s3cret-admin-token")
    assert "s3cret-admin-token" not in repr(ok) and "s3cret-admin-token" not in str(ok.model_dump())


def test_tokens_never_reach_the_logs(live: Runtime) -> None:
    admin, api = "adm1n-t0ken-xyz", "ap1-t0ken-xyz"
    live.settings.admin_token, live.settings.api_token = SecretStr(admin), SecretStr(api)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with _app_client(live) as client:
            pid = client.post("/v1/classify", json={"text": CARPENTER}).json()["prediction_id"]
            for token in (admin, api, "wrong-" + admin):
                headers = {"Authorization": f"Bearer {token}"}
                client.post("/v1/feedback", json={"prediction_id": pid, "label": "Ledelse"}, headers=headers)
                client.get("/v1/admin/jobs", headers=headers)
                client.get("/v1/predictions", headers=headers)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert any(line.get("status") == 401 for line in lines)  # the requests were logged …
    assert admin not in stream.getvalue() and api not in stream.getvalue()  # … their tokens were not


@pytest.fixture
def bare(settings: Settings) -> Iterator[Runtime]:
    """No model, no migrated database: enough for what happens around the routes."""
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    yield runtime
    runtime.close()


def test_cors_is_off_by_default(bare: Runtime) -> None:
    with _app_client(bare) as client:
        preflight = client.options(
            "/v1/classify",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        simple = client.get("/v1/taxonomy", headers={"Origin": "https://evil.example"})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_no_stack_trace_in_a_500(bare: Runtime) -> None:
    app: FastAPI = create_app(bare.settings, bare)

    def boom() -> None:
        raise RuntimeError("secret internals at /srv/app.py line 42")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["detail"] == "internal error"
    assert "secret internals" not in response.text and "Traceback" not in response.text
