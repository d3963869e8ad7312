"""`jobclass loadtest` smoke test: 2 clients for 3 s against an in-process uvicorn on a free port (fake
encoder, SQLite, in-memory Qdrant). It checks the tool works end to end, not the service's speed."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from qdrant_client import QdrantClient

from app.bench.loadtest import percentile, run_loadtest, write_report
from app.db import migrate
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import seed
from tests.fakes import FakeEncoder


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([], 50) is None and percentile([7.0], 99) == 7.0


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    settings = make_settings(tmp_path, embedding_cache=False)
    migrate(settings.db_url)
    runtime = Runtime(settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    seed(runtime, tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runtime), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        runtime.close()


def test_loadtest_drives_a_live_server_and_writes_its_report(server_url: str, tmp_path: Path) -> None:
    report = run_loadtest(server_url, clients=2, duration=3, pid=os.getpid(), settle=0.1)
    assert report.requests > 0 and report.errors == 0, report.error_samples
    assert set(report.by_kind) == {"classify", "batch", "search"}
    assert sum(k.requests for k in report.by_kind.values()) == report.requests
    assert report.p50_ms is not None and report.p99_ms is not None and report.p50_ms <= report.p99_ms
    assert report.throughput_rps > 0 and report.items_per_s >= report.throughput_rps * 0.5
    assert report.rss_before_bytes and report.rss_after_bytes  # this process is the server
    md, js = write_report(report, tmp_path / "loadtest.md")
    assert json.loads(js.read_text())["requests"] == report.requests
    table = md.read_text()
    assert "| clients | duration (s) | requests | errors |" in table and f"| 2 | {report.duration_s:.1f} |" in table

    # RSS from /health when no pid is given; a refused connection counts as an error, not a crash
    via_health = run_loadtest(server_url, clients=1, duration=0.5, settle=0.0)
    assert via_health.rss_before_bytes and via_health.rss_source == "GET /health rss_bytes"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = run_loadtest(f"http://127.0.0.1:{closed}", clients=1, duration=0.3, settle=0.0)
    assert down.requests > 0 and down.errors == down.requests and down.statuses == {"no answer": down.requests}
