"""Micro-batching: concurrent small ``encode`` calls share one call of the embedding model.

Single ``/v1/classify`` requests each embed one text. A transformer on a CPU embeds 16 texts in one
call several times faster than in 16 calls, so :class:`MicroBatchingEncoder` puts small calls on a
queue; one worker thread takes the first, waits up to ``wait_ms`` for more (at most ``max_items``
texts), embeds them together and hands each caller its own rows. It has the ``Encoder`` interface, so
the services do not change. Large calls (a batch request, a reindex) and calls with a progress bar go
straight to the model. An error stays with its request: when a grouped call fails, each request is
retried alone and only the failing one gets the exception.

Callers block in their own thread (FastAPI runs the ``def`` classify route in its thread pool), never on
the event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from indexing.embed import Encoder

log = logging.getLogger(__name__)


@dataclass
class _Request:
    texts: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Counters for tests and the benchmark: model calls made by the worker and texts they carried."""

    calls: int = 0
    texts: int = 0
    requests: int = 0
    largest: int = 0


class MicroBatchingEncoder:
    def __init__(self, inner: Encoder, *, wait_ms: float = 5.0, max_items: int = 64) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self.max_items = max_items
        self.stats = BatchStats()
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="jobclass-microbatch", daemon=True)
        self._worker.start()

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if len(texts) == 0 or show_progress or len(texts) >= self.max_items or self._closed:
            return self.inner.encode(texts, show_progress=show_progress)
        request = _Request(list(texts))
        self._queue.put(request)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def close(self) -> None:
        """Stop the worker after the requests already queued; later calls go straight to the model."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=30)

    # ---- worker --------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.texts)
            deadline = time.monotonic() + self.wait_s
            while size < self.max_items:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt.texts)
            self._embed(batch)
        # Anything queued after the stop signal is still answered.
        while True:
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                self._embed([left])

    def _embed(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        self.stats.calls += 1
        self.stats.texts += len(texts)
        self.stats.requests += len(batch)
        self.stats.largest = max(self.stats.largest, len(texts))
        try:
            vectors = self.inner.encode(texts)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].done.set()
                return
            log.warning("grouped encode of %d requests failed (%s); retrying each alone", len(batch), exc)
            for request in batch:
                self._embed([request])
            return
        start = 0
        for request in batch:
            request.result = vectors[start : start + len(request.texts)]
            start += len(request.texts)
            request.done.set()
