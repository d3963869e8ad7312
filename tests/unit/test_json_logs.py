"""The JSON log format of `jobclass serve`: one object per line, with the request id inside a request."""

from __future__ import annotations

import json
import logging
import sys

from app.observability import JsonFormatter, request_id_from, request_id_var


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.getLogger("jobclass.test").makeRecord("jobclass.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_line_is_one_json_object_with_the_request_id_and_extras() -> None:
    token = request_id_var.set("rid-1")
    try:
        line = JsonFormatter().format(record("took %d ms", 12, status=200, path="/v1/classify"))
    finally:
        request_id_var.reset(token)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "took 12 ms" and out["level"] == "info" and out["logger"] == "jobclass.test"
    assert out["request_id"] == "rid-1" and out["status"] == 200 and out["path"] == "/v1/classify"
    assert out["ts"].endswith("+00:00")
    assert "args" not in out and "msg" not in out and "exc" not in out


def test_outside_a_request_there_is_no_request_id_and_tracebacks_stay_on_one_line() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert "request_id" not in out and "ValueError: bad" in out["exc"]


def test_only_plain_request_ids_are_propagated() -> None:
    assert request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a b", "x" * 129, "new\nline", 'q"uote'):
        made = request_id_from(bad)
        assert made != bad and len(made) == 32
