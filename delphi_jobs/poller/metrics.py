"""What a running poller reports: Prometheus metrics and a health verdict, served on one port.

Counters move where things happen (producer, executor, completer, store errors). Queue depth and the
oldest pending job's age cost DynamoDB reads, so they are sampled only when scraped and at most once
per ``sample_seconds``: an unscraped poller spends nothing on them, a scraped one a bounded amount.
``/healthz`` answers 200 only while the claim loop turns and every running job's lease is renewed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from delphi_jobs.model import utcnow
from delphi_jobs.states import Status

Sampler = Callable[[], tuple[dict[str, int], datetime | None]]
"""Returns (jobs per status, created_at of the oldest PENDING job)."""

SAMPLED_STATUSES = (Status.PENDING, Status.PROCESSING, Status.AWAITING_RECHECK, Status.PAUSED)
_OUTCOMES = {
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
    Status.PAUSED: "paused",
    Status.AWAITING_RECHECK: "rechecking",
}


class PollerMetrics:
    def __init__(self, sample_seconds: float = 30.0, sampler: Sampler | None = None) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.claimed = Counter("delphi_jobs_claimed", "Jobs claimed", ["job_type"], registry=reg)
        self.outcomes = Counter(
            "delphi_jobs_outcomes",
            "Outcomes written: completed, failed, retried, handed_back, cancelled, paused, rechecking",
            ["job_type", "outcome"],
            registry=reg,
        )
        self.duration = Histogram(
            "delphi_jobs_job_duration_seconds",
            "Time from claim to the written outcome",
            ["job_type"],
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600),
            registry=reg,
        )
        self.races_lost = Counter("delphi_jobs_claim_races_lost", "Claims another worker won", registry=reg)
        self.leases_lost = Counter(
            "delphi_jobs_leases_lost", "Runs stopped because the lease was lost", registry=reg
        )
        self.poll_seconds = Histogram(
            "delphi_jobs_poll_seconds",
            "Time to read one round of candidates",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=reg,
        )
        self.store_errors = Counter(
            "delphi_jobs_dynamodb_errors",
            "DynamoDB errors seen after retries, by code",
            ["code"],
            registry=reg,
        )
        self.depth = Gauge("delphi_jobs_queue_depth", "Jobs per status (sampled)", ["status"], registry=reg)
        self.oldest_pending = Gauge(
            "delphi_jobs_oldest_pending_age_seconds", "Age of the oldest PENDING job (sampled)", registry=reg
        )
        self._sampler = sampler
        self._sample_seconds = sample_seconds
        self._sampled_at = -float("inf")
        self._lock = threading.Lock()

    def outcome(self, job_type: str, status: Status, *, retry: bool = False) -> None:
        """Count a written outcome; ``retry`` tells a retry from a hand-back (both are PENDING)."""
        if status == Status.PENDING:
            label = "retried" if retry else "handed_back"
        else:
            label = _OUTCOMES.get(status, status.lower())
        self.outcomes.labels(job_type=job_type, outcome=label).inc()

    def store_error(self, code: str | None) -> None:
        self.store_errors.labels(code=code or "unknown").inc()

    def _sample(self) -> None:
        with self._lock:
            if self._sampler is None or time.monotonic() - self._sampled_at < self._sample_seconds:
                return
            self._sampled_at = time.monotonic()
            try:
                counts, oldest = self._sampler()
            except Exception as exc:  # a failed sample must not fail the scrape
                self.store_error(getattr(exc, "code", None) or type(exc).__name__)
                return
        for status, count in counts.items():
            self.depth.labels(status=status).set(count)
        self.oldest_pending.set((utcnow() - oldest).total_seconds() if oldest else 0)

    def exposition(self) -> bytes:
        self._sample()
        return generate_latest(self.registry)


class Health:
    """Alive while the claim loop has turned recently and no running job's lease is overdue."""

    def __init__(self, stale_after: float) -> None:
        self._stale_after = stale_after
        self._loop_turned = time.monotonic()
        self._overdue: Callable[[], list[str]] = list

    def loop_turned(self) -> None:
        self._loop_turned = time.monotonic()

    def watch_leases(self, overdue: Callable[[], list[str]]) -> None:
        self._overdue = overdue

    def problems(self) -> list[str]:
        found = []
        idle = time.monotonic() - self._loop_turned
        if idle > self._stale_after:
            found.append(f"claim loop has not turned for {idle:.0f}s")
        found += [f"lease of job {job_id} not renewed in time" for job_id in self._overdue()]
        return found


def serve(host: str, port: int, metrics: PollerMetrics, health: Health) -> ThreadingHTTPServer:
    """Start ``/metrics`` and ``/healthz`` on a daemon thread; returns the server (``server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif self.path.split("?")[0] == "/healthz":
                problems = health.problems()
                body = ("ok\n" if not problems else "\n".join(problems) + "\n").encode()
                self._reply(503 if problems else 200, body, "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found\n", "text/plain; charset=utf-8")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds would drown the job logs."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
