"""Small factories: labelled CSV files, a runtime seeded with data, a model and an index, and a live
uvicorn server in a thread."""

from __future__ import annotations

import csv
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from fastapi.testclient import TestClient

from app.runtime import Runtime
from app.services.index import reindex
from app.services.training import train
from app.services.vacancies import ingest_csv
from tests.fakes import topic_texts


def write_csv(path: Path, rows: Iterable[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return path


def seed(runtime: Runtime, tmp_path: Path, n_per_label: int = 12) -> None:
    """Ingest the topic texts, train a model and build the index."""
    path = write_csv(tmp_path / "seed.csv", topic_texts(n_per_label))
    with runtime.sessions() as session:
        result = ingest_csv(session, path, runtime.taxonomy, source="sample")
        assert result.ok, result.rejected
        train(runtime, session)
        reindex(runtime, session)


def wait_for_job(
    client: TestClient, accepted: Any, headers: Mapping[str, str] | None = None, timeout: float = 180.0
) -> dict[str, Any]:
    """Poll the job behind a 202 answer until it has finished; return its last status."""
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["location"]
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(location, headers=headers).json()
        if body["status"] in ("succeeded", "failed", "interrupted") or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def one_error_line(result: Any) -> str:
    """The CLI's one ``error: …`` line (and no traceback) from a CliRunner result."""
    output = result.output.strip()
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


class ServerThread:
    """uvicorn on an already bound socket (no race for the port), in a daemon thread: a real server for
    tests that need real connections (a browser, raw sockets)."""

    def __init__(self, app: Any, wait_s: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.wait_s = wait_s
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.wait_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(self.wait_s)
        self.sock.close()


def classify(client: TestClient, text: str, **fields: Any) -> dict[str, Any]:
    """``POST /v1/classify`` of ``text`` (and any other request ``fields``), asserted 200; its JSON."""
    response = client.post("/v1/classify", json={"text": text, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def correct(client: TestClient, prediction_id: str, label: str) -> dict[str, Any]:
    """``POST /v1/feedback`` of ``label`` for ``prediction_id``, asserted 201; its JSON."""
    response = client.post("/v1/feedback", json={"prediction_id": prediction_id, "label": label})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
