"""What a handler gets (JobContext) and what it returns (an Outcome). Handlers never touch DynamoDB:
the poller turns the outcome into the one fenced write that ends the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from delphi_jobs.config import Settings
from delphi_jobs.logs import JobLog, get_logger
from delphi_jobs.model import Job


class StopReason:
    CANCEL = "cancel"
    PAUSE = "pause"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"


class Cancellation:
    """Set by the poller (cancel or pause request, lost lease, shutdown); polled by handlers.

    It also carries the lease deadline: past it, the flag reads as set (LEASE_LOST) without anyone
    having to set it, so a handler stops in time even while a heartbeat call hangs (defect 2).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None
        self._detail = ""
        self._lock = threading.Lock()
        self._deadline: float | None = None

    def renewed(self, deadline: float) -> None:
        """The lease was renewed: the job may run until ``deadline`` (``time.monotonic()``)."""
        self._deadline = deadline

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.set(StopReason.LEASE_LOST, "no lease renewal for 2/3 of the lease")

    def set(self, reason: str, detail: str = "") -> None:
        with self._lock:
            if self._reason is None:
                self._reason, self._detail = reason, detail
        self._event.set()

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def detail(self) -> str:
        return self._detail

    def is_set(self) -> bool:
        self._check_deadline()
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep that wakes up when the job must stop; True if it must."""
        end = time.monotonic() + seconds
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            limit = left if self._deadline is None else min(left, max(0.0, self._deadline - time.monotonic()))
            self._event.wait(limit + 0.001)
        return True


class LeaseLost(Exception):
    """A checkpoint write failed its fence: another worker owns the job now; stop, write nothing."""


@dataclass(frozen=True)
class Completed:
    results: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Extra attributes written on the job with the final status (e.g. batch_id, model)."""
    children: tuple[Mapping[str, Any], ...] = ()
    """Job records created in the same transaction as the completion (e.g. a batch checker)."""
    annotate: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(job_id, keys) merged into another job's job_results afterwards (a checker's parent)."""


@dataclass(frozen=True)
class Failed:
    reason: str
    retryable: bool = False
    results: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    annotate: tuple[tuple[str, Mapping[str, Any]], ...] = ()


@dataclass(frozen=True)
class Recheck:
    at: datetime
    results: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stopped:
    """The handler stopped because ``ctx.cancellation`` was set; the poller acts on its reason."""

    note: str = ""


Outcome = Completed | Failed | Recheck | Stopped


@dataclass
class JobContext:
    job: Job
    settings: Settings
    log: JobLog
    """The job's own log: prefixed stdout lines and the ``logs`` attribute."""
    cancellation: Cancellation
    checkpoint: Callable[[Mapping[str, Any]], None]
    """Write attributes on the job now, fenced; raises LeaseLost when the job is no longer ours."""
    logger: Any = field(default_factory=get_logger)
    """Structured logger bound to job_id, job_type and worker_id, for operational events."""
    _progress: dict[str, Any] = field(default_factory=dict)
    _progress_lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, stage: str, fraction: float | None = None, message: str = "") -> None:
        """Record progress; it reaches the job record with the next heartbeat."""
        with self._progress_lock:
            self._progress = {"stage": stage, "fraction": fraction, "message": message}
        if message:
            self.log.info(f"{stage}: {message}")

    def progress_snapshot(self) -> dict[str, Any] | None:
        with self._progress_lock:
            return dict(self._progress) if self._progress else None


class Handler(Protocol):
    job_type: str

    def validate(self, job: Job) -> list[str]:
        """Problems that make the job impossible to run, each naming its field; [] when runnable."""

    def run(self, ctx: JobContext) -> Outcome: ...
