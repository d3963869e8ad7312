"""The app's own OpenAPI schema, fuzzed in-process with schemathesis (ASGI transport, no server).

Every operation gets a bounded number of generated requests (valid and invalid bodies, paths and
queries) on the fake encoder, SQLite and in-memory Qdrant. Checks: no 5xx, and every answer conforms
to the schema the app publishes (errors included: the schema documents its ``ErrorBody``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from qdrant_client import QdrantClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.result import Ok

from app.db import migrate
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import seed
from tests.fakes import FakeEncoder

MAX_EXAMPLES = int(os.environ.get("JOBCLASS_FUZZ_EXAMPLES", "15"))  # per operation and generation mode
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz")
    app_settings = make_settings(tmp, embedding_cache=False)
    migrate(app_settings.db_url)
    runtime = Runtime(app_settings, encoder=FakeEncoder(), qdrant=QdrantClient(":memory:"))
    seed(runtime, tmp)
    app = create_app(app_settings, runtime)
    with TestClient(app):  # runs the lifespan: app.state.runtime is set for the schemathesis client
        yield app
    runtime.jobs.shutdown(60)
    runtime.close()
    total = sum(CASES.values())
    print(f"\nschemathesis: {total} generated cases over {len(CASES)} operations: {dict(sorted(CASES.items()))}")


def _runner(operation: Any, mode: GenerationMode) -> Callable[[], None]:
    key = f"{mode.value} {operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same cases on every run: a failure here is reproducible, never flaky
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        CASES[key] = CASES.get(key, 0) + 1
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    return run


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_5xx_and_every_answer_matches_the_schema(fuzz_app: FastAPI, mode: GenerationMode) -> None:
    """For each operation, ``MAX_EXAMPLES`` requests generated from the schema (positive: valid by the
    schema; negative: each breaks it somewhere), sent in-process and checked."""
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), result  # the app's schema is valid OpenAPI
        operations.append(result.ok())
    assert len(operations) >= 12
    for operation in operations:
        try:
            _runner(operation, mode)()
        except Unsatisfiable:  # no parameters and no body (GET /health): nothing can break the schema
            assert mode is GenerationMode.NEGATIVE, operation.path


def test_the_schema_documents_errors_as_they_are_sent(fuzz_app: FastAPI, tmp_path: Path) -> None:
    spec = fuzz_app.openapi()
    classify = spec["paths"]["/v1/classify"]["post"]["responses"]
    assert classify["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    with TestClient(fuzz_app) as client:
        body = client.post("/v1/classify", json={"text": ""}).json()
    assert set(body) <= set(spec["components"]["schemas"]["ErrorBody"]["properties"])
