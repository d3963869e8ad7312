"""How request bodies arrive: JSON in UTF-16/UTF-32 (or declared so) is a 400 naming the fix, and a body
that stalls midway is a 408 after ``JOBCLASS_BODY_TIMEOUT_S``, through a real uvicorn server and raw
sockets, while the server keeps answering others. The checks run before any route reads the database,
so one backend (SQLite) suffices."""

from __future__ import annotations

import codecs
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from app.main import create_app
from app.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import ServerThread
from tests.fakes import FakeEncoder

BODY = {"text": "carpenter needed for timber roofing", "k": 3}
JSON_ROUTES = ("/v1/classify", "/v1/search", "/v1/feedback", "/v1/classify/batch")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    """No model, no migrated database: the body is refused before either is needed."""
    rt = Runtime(make_settings(tmp_path, body_timeout_s=1.0), encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime), raise_server_exceptions=False) as test_client:
        yield test_client


UTF16_BODIES = {
    "utf-16 with BOM": json.dumps(BODY).encode("utf-16"),
    "utf-16-le without BOM": json.dumps(BODY).encode("utf-16-le"),
    "utf-16-be without BOM": json.dumps(BODY).encode("utf-16-be"),
    "utf-32 with BOM": json.dumps(BODY).encode("utf-32"),
}


@pytest.mark.parametrize("route", JSON_ROUTES)
@pytest.mark.parametrize("body", UTF16_BODIES.values(), ids=UTF16_BODIES.keys())
def test_a_utf16_body_is_a_400_that_says_to_send_utf8(client: TestClient, route: str, body: bytes) -> None:
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == "body"
    assert "not UTF-8: send JSON encoded as UTF-8" in answer["detail"]
    assert "UTF-16" in answer["detail"] or "UTF-32" in answer["detail"]


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", '"utf-32"', "latin-1"])
def test_a_body_declared_in_another_charset_is_a_400(client: TestClient, charset: str) -> None:
    response = client.post(
        "/v1/search",
        content=json.dumps(BODY).encode(),
        headers={"content-type": f"application/json; charset={charset}"},
    )
    assert response.status_code == 400, response.text
    declared = charset.strip('"').lower()
    assert response.json() == {
        "detail": f"the body is declared as charset={declared}, not UTF-8: send JSON encoded as UTF-8",
        "field": "body",
    }


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=utf-8", json.dumps(BODY).encode()),
        ("application/json; charset=UTF-8", codecs.BOM_UTF8 + json.dumps(BODY).encode()),
        ("application/json", json.dumps({"text": "tømrer søges, 5 år"}, ensure_ascii=False).encode()),
    ],
)
def test_utf8_bodies_pass_the_check(client: TestClient, content_type: str, body: bytes) -> None:
    """UTF-8 (declared or not, with a BOM or not) reaches the route: here the search answers 503, as there
    is no index in this bare runtime, not 400."""
    response = client.post("/v1/search", content=body, headers={"content-type": content_type})
    assert response.status_code == 503, response.text


def _read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_half_sent_body_gets_a_408_and_the_server_serves_others_meanwhile(runtime: Runtime) -> None:
    body = json.dumps(BODY).encode()
    with ServerThread(create_app(runtime.settings, runtime)) as server:
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            head = (
                f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            stalled.sendall(head + body[:10])  # … and then nothing
            started = time.monotonic()
            # meanwhile the server answers other requests at once
            assert httpx.get(f"{server.url}/v1/taxonomy", timeout=5).status_code == 200
            answer = _read_answer(stalled)  # the server answers, then closes the connection
            waited = time.monotonic() - started
        finally:
            stalled.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    headers, _, content = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert json.loads(content) == {
        "detail": "the request body did not arrive within 1 s (JOBCLASS_BODY_TIMEOUT_S): send it whole",
        "field": "body",
    }
    assert 0.9 <= waited < 8.0  # after the configured second, not at once and not never


def test_a_slow_but_complete_body_within_the_timeout_is_served(runtime: Runtime) -> None:
    body = json.dumps({"text": "x"}).encode()  # answers 422 (no model needed): the body was read whole
    with (
        ServerThread(create_app(runtime.settings, runtime)) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(
            f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body[:4]
        )
        time.sleep(0.3)
        sock.sendall(body[4:])
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 422 "), answer
