"""Prometheus metrics, one registry per app (tests build many apps; the global registry would clash).

Counters are recorded by the HTTP layer (middleware and routers); the model version and the index size
are read from the runtime at scrape time, so a model swapped in by retraining shows at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from app.runtime import Runtime

log = logging.getLogger(__name__)
UNCERTAIN = "uncertain"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_WINDOW = 1000  # the ratio gauges cover this many latest answers / corrections
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


class RecentRatio:
    """The share of true outcomes among the latest ``window`` (NaN before the first)."""

    def __init__(self, window: int = RATE_WINDOW) -> None:
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, outcome: bool) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    def value(self) -> float:
        with self._lock:
            return sum(self._outcomes) / len(self._outcomes) if self._outcomes else float("nan")


class RatioCollector(Collector):
    """Abstain and disagreement ratios over recent traffic, ready to alert on (the counters give totals)."""

    def __init__(self, abstain: RecentRatio, disagreement: RecentRatio) -> None:
        self.abstain, self.disagreement = abstain, disagreement

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "jobclass_abstain_ratio",
            f"Share of the latest {RATE_WINDOW} answers where the model abstained (NaN before any).",
            value=self.abstain.value(),
        )
        yield GaugeMetricFamily(
            "jobclass_feedback_disagreement_ratio",
            f"Share of the latest {RATE_WINDOW} corrections whose label differs from the prediction (NaN before any).",
            value=self.disagreement.value(),
        )


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
        self.recent_abstain, self.recent_disagreement = RecentRatio(), RecentRatio()
        r.register(RuntimeCollector(get_runtime))
        r.register(RatioCollector(self.recent_abstain, self.recent_disagreement))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def observe_predictions(self, labels: Sequence[str | None]) -> None:
        """One entry per answer: its label, or None when the model abstained."""
        for label in labels:
            self.predictions.labels(label or UNCERTAIN).inc()
            self.recent_abstain.add(label is None)
            if label is None:
                self.abstentions.inc()

    def observe_feedback(self, predicted: str, corrected: str) -> None:
        self.feedback.inc()
        self.recent_disagreement.add(predicted != corrected)
        if predicted != corrected:
            self.disagreements.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
