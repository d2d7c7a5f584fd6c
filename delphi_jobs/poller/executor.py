"""The executor: runs one claimed job from validation to its written outcome.

It validates the record and decodes the handler's typed state before anything runs (a bad field fails
the job naming it, and nothing is run), keeps the lease alive while the handler works and while the
outcome is written, and turns anything a handler raises into a FAILED job instead of a dead worker.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from delphi_jobs import faults
from delphi_jobs.config import Settings
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import (
    Failed,
    Handler,
    JobContext,
    LeaseLost,
    Outcome,
    Paused,
    Stopped,
    StopReason,
)
from delphi_jobs.logs import JobLog, get_logger
from delphi_jobs.model import JobValidationError, decode_state
from delphi_jobs.poller.completer import Completer
from delphi_jobs.poller.lease import LeaseKeeper
from delphi_jobs.poller.metrics import PollerMetrics
from delphi_jobs.poller.rescuer import poison_reason
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status


@dataclass(frozen=True)
class RunResult:
    job_id: str
    status: Status | None
    """The status written, or None when nothing could be written (the job changed hands)."""


class RunningJobs:
    """The jobs running in this process, so a shutdown can stop and hand them all back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, LeaseKeeper] = {}

    def add(self, job_id: str, lease: LeaseKeeper) -> None:
        with self._lock:
            self._running[job_id] = lease

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._running.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

    def stop_all(self, reason: str, detail: str) -> None:
        with self._lock:
            running = list(self._running.values())
        for lease in running:
            lease.cancellation.set(reason, detail)

    def overdue(self) -> list[str]:
        """Jobs whose lease keeper has not renewed in time (health)."""
        with self._lock:
            return [job_id for job_id, lease in self._running.items() if lease.overdue()]


class Executor:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        queue: JobQueue,
        lease_queue: JobQueue,
        running: RunningJobs | None = None,
        metrics: PollerMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._lease_queue = lease_queue
        self._metrics = metrics or PollerMetrics()
        self._completer = Completer(queue, settings.lease_seconds, self._metrics)
        self._running = running if running is not None else RunningJobs()

    def run(self, claim: Claim) -> RunResult:
        job = claim.job
        job_log = JobLog(job.job_id, job.logs)
        log = get_logger(job_id=job.job_id, job_type=job.job_type, worker_id=claim.worker_id)
        lease = LeaseKeeper(self._lease_queue, claim, self._settings.lease_seconds, log)
        self._running.add(job.job_id, lease)
        self._metrics.claimed.labels(job_type=job.job_type).inc()
        started = time.monotonic()
        faults.point("after_claim")
        try:
            if claim.reclaimed:
                job_log.warning("reclaimed: the previous owner's lease expired")
            log.info("job claimed", version=claim.version, reclaimed=claim.reclaimed)
            outcome, ctx = self._outcome(claim, job_log, lease, log)
            status = self._completer.complete(claim, outcome, job_log, lease.cancellation, log, ctx)
            self._metrics.duration.labels(job_type=job.job_type).observe(time.monotonic() - started)
            return RunResult(job.job_id, status)
        finally:
            lease.stop()
            self._running.remove(job.job_id)

    def _outcome(
        self, claim: Claim, job_log: JobLog, lease: LeaseKeeper, log: Any
    ) -> tuple[Outcome, JobContext | None]:
        """The run's outcome, and the handler's context when it ran (its progress and pause request)."""
        job = claim.job
        handler = self._registry.get(job.job_type)
        if handler is None:
            lacking = self._registry.skipped.get(job.job_type)
            if lacking:
                return Failed(f"job_type: {job.job_type} cannot run on this poller: {lacking}"), None
            return Failed(self._registry.unknown_message(job.job_type)), None
        try:
            state = decode_state(handler.state_type, job.item) if handler.state_type else None
            problems = list(job.problems) or handler.validate(job)
        except JobValidationError as exc:
            problems = [*job.problems, str(exc)]
            state = None
        except Exception as exc:
            log.exception("validation raised")
            return Failed(f"internal error validating the job: {type(exc).__name__}: {exc}"), None
        if problems:
            return Failed("invalid job, not run: " + "; ".join(problems)), None
        log.debug("job valid", state=state, timeout_seconds=job.timeout_seconds, priority=job.priority)
        poisoned = poison_reason(claim)
        if poisoned:  # the lost worker's processes are out of our sight: their exit is unconfirmed
            return Failed(poisoned, process_exit_confirmed=False), None
        cancellation = lease.cancellation
        if job.cancel_requested:
            cancellation.set(StopReason.CANCEL, job.cancel_requested)
        elif job.pause_requested:
            # Asked before this run began (e.g. while handed back): the start is the checkpoint.
            return Paused(resume_as=claim.claimed_from, note="paused before starting"), None
        ctx = JobContext(
            job, self._settings, job_log, cancellation, lease.checkpoint, state=state, logger=log
        )
        lease.start(ctx)
        return self._run_handler(handler, ctx, log), ctx

    @staticmethod
    def _run_handler(handler: Handler, ctx: JobContext, log: Any) -> Outcome:
        try:
            return handler.run(ctx)
        except LeaseLost:
            return Stopped("lease lost at a checkpoint")
        except Exception as exc:
            log.exception("handler raised")
            return Failed(f"internal error in {ctx.job.job_type} handler: {type(exc).__name__}: {exc}")
