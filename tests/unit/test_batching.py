"""Micro-batching: concurrent small encode calls are grouped, answers and errors stay per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.batching import MicroBatchingEncoder
from app.db import migrate
from app.main import create_app
from app.runtime import Runtime
from tests.conftest import make_settings, memory_qdrant
from tests.factories import seed
from tests.fakes import FakeEncoder

N = 16


class GatedEncoder(FakeEncoder):
    """Its first call waits at a gate; it records each call's texts and thread, and fails on "bad"."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []
        self.threads: list[int] = []

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        self.batches.append(list(texts))
        self.threads.append(threading.get_ident())
        if len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(timeout=10)
        if "bad" in texts:
            raise ValueError("cannot embed 'bad'")
        return super().encode(texts, show_progress=show_progress)


def _wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _hold_first_call(encoder: MicroBatchingEncoder, inner: GatedEncoder, n_total: int) -> None:
    """Keep the model busy with the first call until all ``n_total`` single-text requests are either in
    it or queued up behind it (requests sent at once may already share the first call)."""
    assert inner.entered.wait(timeout=10)
    _wait_until(lambda: len(inner.batches[0]) + encoder._queue.qsize() >= n_total)
    inner.gate.set()


def test_concurrent_single_calls_share_one_model_call() -> None:
    inner = GatedEncoder()
    encoder = MicroBatchingEncoder(inner, wait_ms=0, max_items=64)
    texts = [f"vacancy number {i} for a carpenter" for i in range(N)]
    try:
        with ThreadPoolExecutor(N) as pool:
            first = pool.submit(encoder.encode, [texts[0]])
            assert inner.entered.wait(timeout=10)
            rest = [pool.submit(encoder.encode, [t]) for t in texts[1:]]
            _hold_first_call(encoder, inner, N)
            results = [first.result(timeout=10)] + [f.result(timeout=10) for f in rest]
    finally:
        encoder.close()
    assert [len(b) for b in inner.batches] == [1, N - 1]  # two model calls for sixteen requests
    expected = FakeEncoder().encode(texts)
    for i, vector in enumerate(results):
        assert vector.shape == (1, inner.dim)
        np.testing.assert_array_equal(vector[0], expected[i])  # each caller gets its own row
    assert encoder.stats.calls == 2 and encoder.stats.requests == N and encoder.stats.largest == N - 1


def test_wait_gathers_requests_that_arrive_within_the_window() -> None:
    inner = FakeEncoder()
    encoder = MicroBatchingEncoder(inner, wait_ms=300, max_items=64)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(encoder.encode, [f"text {i}"]) for i in range(4)]
            [f.result(timeout=10) for f in futures]
    finally:
        encoder.close()
    assert inner.calls == [4]


def test_max_items_bounds_a_group() -> None:
    inner = GatedEncoder()
    encoder = MicroBatchingEncoder(inner, wait_ms=0, max_items=5)
    try:
        with ThreadPoolExecutor(N) as pool:
            first = pool.submit(encoder.encode, ["t0"])
            assert inner.entered.wait(timeout=10)
            rest = [pool.submit(encoder.encode, [f"t{i}"]) for i in range(1, 13)]
            _hold_first_call(encoder, inner, 13)
            for f in [first, *rest]:
                f.result(timeout=10)
    finally:
        encoder.close()
    assert [len(b) for b in inner.batches] == [1, 5, 5, 2]


def test_an_error_stays_with_its_request() -> None:
    inner = GatedEncoder()
    encoder = MicroBatchingEncoder(inner, wait_ms=0, max_items=64)
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(encoder.encode, ["first"])
            assert inner.entered.wait(timeout=10)
            good = [pool.submit(encoder.encode, [f"good {i}"]) for i in range(5)]
            bad = pool.submit(encoder.encode, ["bad"])
            _hold_first_call(encoder, inner, 7)
            first.result(timeout=10)
            with pytest.raises(ValueError, match="cannot embed"):
                bad.result(timeout=10)
            vectors = [f.result(timeout=10) for f in good]
    finally:
        encoder.close()
    expected = FakeEncoder().encode([f"good {i}" for i in range(5)])
    for i, v in enumerate(vectors):
        np.testing.assert_array_equal(v[0], expected[i])
    assert len(inner.batches[1]) == 6  # the grouped call failed, then each request ran alone
    assert sorted(len(b) for b in inner.batches[2:]) == [1] * 6


def test_large_calls_progress_bars_and_closed_encoders_skip_the_queue() -> None:
    inner = GatedEncoder()
    inner.gate.set()
    encoder = MicroBatchingEncoder(inner, wait_ms=0, max_items=8)
    me = threading.get_ident()
    encoder.encode([f"t{i}" for i in range(8)])
    encoder.encode(["one"], show_progress=True)
    assert inner.threads == [me, me] and encoder.stats.calls == 0
    assert encoder.encode([]).shape == (0, inner.dim)
    encoder.encode(["queued"])
    assert inner.threads[-1] != me and encoder.stats.calls == 1
    encoder.close()
    out = encoder.encode(["after close"])
    assert inner.threads[-1] == me and out.shape == (1, inner.dim)


def test_runtime_wraps_the_encoder_only_when_enabled(tmp_path: Path) -> None:
    on = Runtime(make_settings(tmp_path / "on", microbatch=True, microbatch_wait_ms=2), encoder=FakeEncoder())
    off = Runtime(make_settings(tmp_path / "off", microbatch=False), encoder=FakeEncoder())
    try:
        assert isinstance(on.encoder, MicroBatchingEncoder) and on.encoder.wait_s == pytest.approx(0.002)
        assert isinstance(off.encoder, FakeEncoder)
    finally:
        on.close()
        off.close()
    assert on.encoder.encode(["closed: goes straight to the model"]).shape == (1, 64)


def test_concurrent_classify_requests_are_grouped_and_answer_as_alone(tmp_path: Path) -> None:
    """Sixteen concurrent POST /v1/classify: the same answers as one at a time, in fewer model calls.
    (SQLite only: grouping happens before the database; the API tests cover Postgres.)"""
    settings = make_settings(tmp_path, microbatch=True, microbatch_wait_ms=0)
    migrate(settings.db_url)
    inner = GatedEncoder()
    inner.gate.set()
    runtime = Runtime(settings, encoder=inner, qdrant=memory_qdrant())
    try:
        seed(runtime, tmp_path, n_per_label=6)
        batcher = runtime.encoder
        assert isinstance(batcher, MicroBatchingEncoder)
        texts = [f"experienced carpenter number {i} for roofs and building sites" for i in range(N)]
        with TestClient(create_app(settings, runtime)) as client:
            alone = [client.post("/v1/classify", json={"text": t}).json() for t in texts]
            inner.gate.clear()
            inner.entered.clear()
            inner.batches.clear()  # the next call waits at the gate again
            before = batcher.stats.calls
            with ThreadPoolExecutor(N) as pool:
                futures = [pool.submit(client.post, "/v1/classify", json={"text": t}) for t in texts]
                _hold_first_call(batcher, inner, N)
                together = [f.result(timeout=30) for f in futures]
        assert all(r.status_code == 200 for r in together)
        for a, b in zip(alone, [r.json() for r in together], strict=True):
            assert a["label"] == b["label"]
            assert [p["label"] for p in a["probabilities"]] == [p["label"] for p in b["probabilities"]]
            np.testing.assert_allclose(
                [p["probability"] for p in a["probabilities"]],
                [p["probability"] for p in b["probabilities"]],
                atol=1e-6,
            )
        assert batcher.stats.calls - before == 2  # 16 requests, 2 model calls
    finally:
        runtime.close()
