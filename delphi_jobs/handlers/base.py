"""What a handler gets (JobContext) and what it returns (an Outcome). Handlers never touch DynamoDB:
the poller turns the outcome into the one fenced write that ends the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from delphi_jobs.config import Settings
from delphi_jobs.logs import JobLog, get_logger
from delphi_jobs.model import ChildJob, Job, Progress
from delphi_jobs.queue import KEEP, Keep


class StopReason:
    CANCEL = "cancel"
    LEASE_LOST = "lease lost"
    SHUTDOWN = "shutdown"


class Cancellation:
    """Set by the poller (cancel or pause request, lost lease, shutdown); polled by handlers.

    Like a context with a deadline: past ``expire_at``'s moment the flag reads as set with that reason
    without anyone setting it, so a handler stops in time even while the thread that would set it hangs.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None
        self._detail = ""
        self._lock = threading.Lock()
        self._deadline: tuple[float, str, str] | None = None

    def expire_at(self, deadline: float, reason: str, detail: str) -> None:
        """Read as set with ``reason`` from ``deadline`` (``time.monotonic()``) on; replaces earlier ones."""
        self._deadline = (deadline, reason, detail)

    def _check_deadline(self) -> None:
        deadline = self._deadline
        if deadline is not None and time.monotonic() >= deadline[0]:
            self.set(deadline[1], deadline[2])

    def set(self, reason: str, detail: str = "") -> None:
        with self._lock:
            if self._reason is None:
                self._reason, self._detail = reason, detail
        self._event.set()

    @property
    def reason(self) -> str | None:
        self._check_deadline()
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
            deadline = self._deadline
            limit = left if deadline is None else min(left, max(0.0, deadline[0] - time.monotonic()))
            self._event.wait(limit + 0.001)
        return True


class LeaseLost(Exception):
    """A checkpoint write failed its fence: another worker owns the job now; stop, write nothing."""


@dataclass(frozen=True)
class Annotation:
    """What a job tells a related one before its own final write (a checker reporting to its parent):
    keys merged into that job's job_results, and its error_message (None removes it) unless KEEP."""

    job_id: str
    results: Mapping[str, Any]
    error_message: str | Keep | None = KEEP


@dataclass(frozen=True)
class Completed:
    results: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    """The handler's typed state to write with the final status (None: leave it as it is)."""
    children: tuple[ChildJob, ...] = ()
    """Follow-up jobs created in the same transaction as the completion (e.g. a batch checker)."""
    annotate: tuple[Annotation, ...] = ()
    """Written on related jobs before the final write, so a crash in between is repaired by the re-run."""
    process_exit_confirmed: bool = True
    """No process of this run is left: none was started, or the child guard proved its whole tree gone.
    Written on terminal writes: the newer Polis admission guard frees a FAILED job's slot only when true."""


@dataclass(frozen=True)
class Failed:
    reason: str
    retryable: bool = False
    results: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    annotate: tuple[Annotation, ...] = ()
    process_exit_confirmed: bool = True
    """As on Completed."""


@dataclass(frozen=True)
class Recheck:
    at: datetime
    results: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None


@dataclass(frozen=True)
class Stopped:
    """The handler stopped because ``ctx.cancellation`` was set; the poller acts on its reason."""

    note: str = ""
    process_exit_confirmed: bool = True
    """As on Completed (a cancel is terminal)."""
    annotate: tuple[Annotation, ...] = ()
    """As on Completed; written only when the stop is a cancel (the run's end)."""


@dataclass(frozen=True)
class Paused:
    """The handler reached a checkpoint while a pause was requested: it saved what it needs to go on
    (``state``) and stopped. The job becomes PAUSED; resuming makes it ``resume_as`` again, on any poller."""

    state: Any = None
    resume_as: str = "PENDING"
    note: str = "paused at a checkpoint"
    next_check_at: datetime | None = None
    """For a checker paused between checks: when its next check is due once resumed."""


Outcome = Completed | Failed | Recheck | Stopped | Paused


@dataclass
class JobContext:
    job: Job
    settings: Settings
    log: JobLog
    """The job's own log: prefixed stdout lines and the ``logs`` attribute."""
    cancellation: Cancellation
    checkpoint: Callable[[Any], None]
    """Write the handler's typed state on the job now, fenced; raises LeaseLost when the job is no
    longer ours. For what must be on the record before an external side effect."""
    state: Any = None
    """The handler's typed state as decoded from the job (None for handlers without one)."""
    logger: Any = field(default_factory=get_logger)
    """Structured logger bound to job_id, job_type and worker_id, for operational events."""
    _progress: Progress | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pause: str | None = None

    def step(self, current: int, total: int, name: str, message: str = "") -> None:
        """Step ``current`` of ``total`` has begun; it reaches the job record with the next heartbeat."""
        percent = 100.0 * (current - 1) / total if total else 0.0
        with self._lock:
            self._progress = Progress(current, total, percent, message, name)
        self.log.info(f"step {current}/{total} {name}" + (f": {message}" if message else ""))

    def report(self, percent: float | None = None, message: str = "") -> None:
        """Finer progress within the current step (percent of the whole job)."""
        with self._lock:
            now = self._progress or Progress()
            self._progress = replace(
                now, percent=now.percent if percent is None else percent, message=message or now.message
            )

    def progress_snapshot(self) -> Progress | None:
        with self._lock:
            return self._progress

    def request_pause(self, reason: str) -> None:
        """The lease keeper saw a pause request: the handler acts on it at its next checkpoint."""
        with self._lock:
            self._pause = self._pause or reason

    def pause_requested(self) -> str | None:
        """The pause request's reason, or None; a handler checks it at its checkpoints (between
        steps) and returns ``Paused`` with what it needs to go on."""
        with self._lock:
            return self._pause


class Handler(Protocol):
    job_type: str

    @property
    def state_type(self) -> type[Any] | None:
        """The dataclass of attributes this handler keeps on its job (model.py decodes and encodes it)."""

    def validate(self, job: Job) -> list[str]:
        """Problems that make the job impossible to run, each naming its field; [] when runnable."""

    def run(self, ctx: JobContext) -> Outcome: ...
