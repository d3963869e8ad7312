"""Prometheus metrics, one registry per app (tests build many apps; the global registry would clash).

Counters are recorded by the HTTP layer (middleware and routers); the model version and the index size
are read from the runtime at scrape time, so a model swapped in by retraining shows at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from app.runtime import Runtime

log = logging.getLogger(__name__)
UNCERTAIN = "uncertain"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class RuntimeCollector(Collector):
    """Gauges read from the live runtime: the active model version and the number of indexed vectors."""

    def __init__(self, get_runtime: Callable[[], Runtime | None]) -> None:
        self._get_runtime = get_runtime

    def collect(self) -> Iterable[Metric]:
        runtime = self._get_runtime()
        if runtime is None:  # before start-up
            return
        model = GaugeMetricFamily(
            "jobclass_model_info",
            "The active model version (value 1); absent while none is active.",
            labels=["version", "variant"],
        )
        if runtime.has_model:
            model.add_metric([runtime.model.version, runtime.settings.head_variant], 1.0)
        yield model
        try:
            size = float(runtime.store.count())
        except Exception as exc:  # a scrape must answer even when the store is down
            log.warning("index size unavailable for /metrics: %s", exc)
            size = float("nan")
        yield GaugeMetricFamily("jobclass_index_vectors", "Vectors in the active kNN collection.", value=size)


class Metrics:
    def __init__(self, get_runtime: Callable[[], Runtime | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "jobclass_http_requests",
            "HTTP requests by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "jobclass_http_request_duration_seconds",
            "HTTP request latency by route template and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "jobclass_predictions", f"Answers by returned label ({UNCERTAIN!r} when abstained).", ["label"], registry=r
        )
        self.abstentions = Counter("jobclass_abstentions", "Answers where the model abstained.", registry=r)
        self.feedback = Counter("jobclass_feedback", "Corrections received.", registry=r)
        self.disagreements = Counter(
            "jobclass_feedback_disagreements", "Corrections whose label differs from the predicted label.", registry=r
        )
        r.register(RuntimeCollector(get_runtime))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_predictions(self, labels: Sequence[str | None]) -> None:
        """One entry per answer: its label, or None when the model abstained."""
        for label in labels:
            self.predictions.labels(label or UNCERTAIN).inc()
            if label is None:
                self.abstentions.inc()

    def observe_feedback(self, predicted: str, corrected: str) -> None:
        self.feedback.inc()
        if predicted != corrected:
            self.disagreements.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
