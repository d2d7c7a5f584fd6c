"""What a handler gets (JobContext) and what it returns (an Outcome). Handlers never touch DynamoDB:
the poller turns the outcome into the one fenced write that ends the run."""

from __future__ import annotations

import threading
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
    """Set by the poller (cancel or pause request, lost lease, shutdown); polled by handlers."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None
        self._detail = ""
        self._lock = threading.Lock()

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
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep that wakes up when the job must stop; True if it must."""
        return self._event.wait(seconds)


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
