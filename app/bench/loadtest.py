"""`jobclass loadtest`: drive a running server with N concurrent clients for a bounded time.

Each client is a thread with its own keep-alive HTTP connection (stdlib ``http.client``: nothing to
install). Requests are a fixed mix of single classify, batch classify and search calls over a set of
short vacancy texts. The report gives throughput, p50/p99 latency (overall and per kind), the error
count (any non-2xx answer, timeout or connection error) and the server's resident memory before and
after (from ``/proc/PID/status`` when ``pid`` is given, else from ``/health``'s ``rss_bytes``).
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# (kind, weight): most traffic is single classification, as in a pipeline that sends ads one by one.
DEFAULT_MIX: tuple[tuple[str, float], ...] = (("classify", 0.7), ("batch", 0.1), ("search", 0.2))
BATCH_ITEMS = 8

_OPENINGS = [
    "We are looking for an experienced carpenter to join our site team in Aarhus.",
    "Python developer wanted for backend services, cloud infrastructure and databases.",
    "Nurse for elderly care on a busy hospital ward, day and evening shifts.",
    "Night guard for patrol rounds, CCTV surveillance and alarm response at a warehouse.",
    "Accountant to handle bookkeeping, VAT returns and the monthly close.",
    "Teacher for mathematics and physics at a lower secondary school.",
    "Truck driver with a C/E licence for national distribution routes.",
    "Chef de partie for a busy restaurant kitchen, evenings and weekends.",
    "Sales representative for B2B customers in Jutland, car provided.",
    "Electrician for installation and service work in new housing projects.",
    "Warehouse worker for picking, packing and forklift driving.",
    "HR partner to run recruitment, onboarding and employee relations.",
]
_DETAILS = [
    "You will work closely with a friendly team and report to the department manager.",
    "We offer a good salary, a pension scheme and flexible working hours.",
    "Experience from a similar position is an advantage but not a requirement.",
    "You speak Danish and English and have a driving licence.",
    "The position is full time and permanent, starting as soon as possible.",
    "Send your application and CV through our website before the deadline.",
]


def vacancy_text(rng: random.Random) -> str:
    """A short, plausible ad: one opening sentence and two to four detail sentences."""
    return " ".join([rng.choice(_OPENINGS), *rng.sample(_DETAILS, rng.randint(2, 4))])


@dataclass(frozen=True)
class Sample:
    kind: str
    seconds: float
    status: int  # 0 when no HTTP answer came back (timeout, connection error)
    error: str | None = None


@dataclass
class KindStats:
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


@dataclass
class LoadReport:
    url: str
    clients: int
    duration_s: float  # measured: from the start to the last answer (requests in flight at the deadline finish)
    started_at: str
    requests: int
    errors: int
    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    items_per_s: float  # texts classified or searched per second (a batch counts its items)
    by_kind: dict[str, KindStats]
    statuses: dict[str, int]
    error_samples: list[str]
    rss_before_bytes: int | None
    rss_after_bytes: int | None
    rss_source: str
    mix: dict[str, float] = field(default_factory=dict)
    requested_duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class _Client:
    """One keep-alive connection; reconnects after an error."""

    def __init__(self, url: str, timeout: float, token: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout)
        return self.conn

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=data, headers=self.headers)
            response = conn.getresponse()
            payload = response.read()
        except Exception:
            self.close()
            raise
        if response.getheader("connection", "").lower() == "close":
            self.close()
        return response.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _request_for(kind: str, rng: random.Random) -> tuple[str, dict[str, Any], int]:
    if kind == "classify":
        return "/v1/classify", {"text": vacancy_text(rng)}, 1
    if kind == "batch":
        items = [{"id": f"load-{i}", "text": vacancy_text(rng)} for i in range(BATCH_ITEMS)]
        return "/v1/classify/batch", {"items": items}, BATCH_ITEMS
    if kind == "search":
        return "/v1/search", {"text": vacancy_text(rng), "k": 10}, 1
    raise ValueError(f"unknown request kind {kind!r}")


def read_rss(pid: int) -> int | None:
    """Resident set size of a local process in bytes (Linux ``/proc``), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _health_rss(url: str, timeout: float, token: str | None) -> int | None:
    client = _Client(url, timeout, token)
    try:
        _, payload = client.request("GET", "/health")
        value = json.loads(payload).get("rss_bytes")
        return int(value) if isinstance(value, int | float) else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        client.close()


@dataclass
class _Drive:
    """What one client thread needs: where to send, until when, which request kinds with which weights."""

    url: str
    timeout: float
    token: str | None
    kinds: list[str]
    weights: list[float]
    deadline: float
    barrier: threading.Barrier


def _client_loop(drive: _Drive, rng: random.Random, out: list[Sample]) -> int:
    """One client: random requests until the deadline, each recorded in ``out``; the items answered."""
    client = _Client(drive.url, drive.timeout, drive.token)
    items = 0
    drive.barrier.wait()
    try:
        while time.perf_counter() < drive.deadline:
            kind = rng.choices(drive.kinds, drive.weights)[0]
            path, body, n_items = _request_for(kind, rng)
            t0 = time.perf_counter()
            try:
                status, payload = client.request("POST", path, body)
            except Exception as exc:
                out.append(Sample(kind, time.perf_counter() - t0, 0, f"{type(exc).__name__}: {exc}"))
                continue
            seconds = time.perf_counter() - t0
            ok = 200 <= status < 300
            error = None if ok else f"HTTP {status}: {payload[:200].decode(errors='replace')}"
            out.append(Sample(kind, seconds, status, error))
            if ok:
                items += n_items
    finally:
        client.close()
    return items


def _drive_clients(drive: _Drive, clients: int, seed: int) -> tuple[list[Sample], int]:
    """Run ``clients`` threads at once; every sample they took and the items answered in all."""
    samples: list[list[Sample]] = [[] for _ in range(clients)]
    items: list[int] = [0] * clients

    def worker(n: int) -> None:
        items[n] = _client_loop(drive, random.Random(seed * 1_000_003 + n), samples[n])

    threads = [threading.Thread(target=worker, args=(n,), name=f"load-{n}", daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [s for per_client in samples for s in per_client], sum(items)


def _kind_stats(flat: Sequence[Sample], kinds: Sequence[str]) -> dict[str, KindStats]:
    by_kind: dict[str, KindStats] = {}
    for kind in kinds:
        these = [s for s in flat if s.kind == kind]
        ms = [s.seconds * 1000 for s in these if s.error is None]
        by_kind[kind] = KindStats(
            requests=len(these),
            errors=sum(s.error is not None for s in these),
            p50_ms=_round(percentile(ms, 50)),
            p99_ms=_round(percentile(ms, 99)),
            max_ms=_round(max(ms) if ms else None),
        )
    return by_kind


def run_loadtest(
    url: str,
    *,
    clients: int = 32,
    duration: float = 60.0,
    pid: int | None = None,
    timeout: float = 30.0,
    token: str | None = None,
    mix: Sequence[tuple[str, float]] = DEFAULT_MIX,
    seed: int = 0,
    settle: float = 2.0,
) -> LoadReport:
    """Run ``clients`` threads against ``url`` for ``duration`` seconds and summarise what they saw."""
    if clients < 1 or duration <= 0:
        raise ValueError("clients must be ≥ 1 and duration > 0")
    kinds = [k for k, _ in mix]

    def rss() -> int | None:
        return read_rss(pid) if pid is not None else _health_rss(url, timeout, token)

    rss_before = rss()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    drive = _Drive(url, timeout, token, kinds, [w for _, w in mix], start + duration, threading.Barrier(clients))
    flat, items = _drive_clients(drive, clients, seed)
    elapsed = time.perf_counter() - start
    time.sleep(settle)  # let the server finish logging and free request buffers before measuring
    rss_after = rss()
    errors = [s for s in flat if s.error is not None]
    ok_ms = [s.seconds * 1000 for s in flat if s.error is None]
    statuses = Counter(str(s.status) if s.status else "no answer" for s in flat)
    return LoadReport(
        url=url,
        clients=clients,
        duration_s=round(elapsed, 2),
        started_at=started_at,
        requests=len(flat),
        errors=len(errors),
        throughput_rps=round(len(flat) / elapsed, 2) if elapsed > 0 else 0.0,
        p50_ms=_round(percentile(ok_ms, 50)),
        p99_ms=_round(percentile(ok_ms, 99)),
        max_ms=_round(max(ok_ms) if ok_ms else None),
        items_per_s=round(items / elapsed, 2) if elapsed > 0 else 0.0,
        by_kind=_kind_stats(flat, kinds),
        statuses=dict(sorted(statuses.items())),
        error_samples=sorted({e.error for e in errors if e.error})[:10],
        rss_before_bytes=rss_before,
        rss_after_bytes=rss_after,
        rss_source=f"/proc/{pid}/status" if pid is not None else "GET /health rss_bytes",
        mix={k: w for k, w in mix},
        requested_duration_s=duration,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def to_markdown(report: LoadReport, note: str = "") -> str:
    r = report
    growth = (
        f"{(r.rss_after_bytes - r.rss_before_bytes) / 2**20:+.1f} MiB"
        if r.rss_before_bytes is not None and r.rss_after_bytes is not None
        else "n/a"
    )
    asked = r.requested_duration_s or r.duration_s
    lines = [
        "# Load test",
        "",
        f"`jobclass loadtest --url {r.url} --clients {r.clients} --duration {asked:g}` "
        f"started {r.started_at}. Mix: "
        + ", ".join(f"{k} {w:.0%}" for k, w in r.mix.items())
        + f" (a batch has {BATCH_ITEMS} items). Latency percentiles are over answered 2xx requests.",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += [
        "| clients | duration (s) | requests | errors | throughput (req/s) | items/s | p50 (ms) | p99 (ms) "
        "| max (ms) | RSS before | RSS after | RSS change |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r.clients} | {r.duration_s:.1f} | {r.requests} | {r.errors} | {r.throughput_rps:.1f} "
        f"| {r.items_per_s:.1f} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {_fmt(r.max_ms)} "
        f"| {_mib(r.rss_before_bytes)} | {_mib(r.rss_after_bytes)} | {growth} |",
        "",
        "| kind | requests | errors | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, s in r.by_kind.items():
        lines.append(f"| {kind} | {s.requests} | {s.errors} | {_fmt(s.p50_ms)} | {_fmt(s.p99_ms)} | {_fmt(s.max_ms)} |")
    lines += ["", "Statuses: " + ", ".join(f"{k}: {v}" for k, v in r.statuses.items()), ""]
    lines.append(f"RSS from {r.rss_source}.")
    if r.error_samples:
        lines += ["", "Error samples:", ""] + [f"- `{e}`" for e in r.error_samples]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def write_report(report: LoadReport, out: Path, note: str = "") -> tuple[Path, Path]:
    """Write ``out`` (Markdown) and the same name with ``.json``; return both paths."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    out.write_text(to_markdown(report, note), encoding="utf-8")
    return out, json_path
