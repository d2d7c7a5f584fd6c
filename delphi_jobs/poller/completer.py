"""The completer: turns a handler's outcome into the one fenced write that ends a run.

A finished job's outcome must not be dropped on a transient DynamoDB error (a four-hour pipeline would
run again): writes that fail with StoreUnavailable are retried with backoff for up to 2/3 of the lease,
while the lease keeper goes on renewing the lease. The fence decides in the end: a write after the job
changed hands is refused, never forced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from delphi_jobs import faults
from delphi_jobs.handlers.base import (
    Annotation,
    Cancellation,
    Completed,
    Failed,
    JobContext,
    Outcome,
    Paused,
    Recheck,
    Stopped,
    StopReason,
)
from delphi_jobs.logs import JobLog
from delphi_jobs.model import Activity, format_timestamp
from delphi_jobs.poller.lease import activity_of
from delphi_jobs.poller.metrics import PollerMetrics
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import InvalidRequest, Lost, StoreUnavailable


class Completer:
    def __init__(self, queue: JobQueue, lease_seconds: float, metrics: PollerMetrics) -> None:
        self._queue = queue
        self._patience = lease_seconds * 2 / 3
        self._metrics = metrics

    def _persist(self, write: Callable[[], Status | Lost], log: Any) -> Status | Lost:
        retrying = Retrying(
            retry=retry_if_exception_type(StoreUnavailable),
            stop=stop_after_delay(self._patience),
            wait=wait_exponential(multiplier=0.2, max=5),
            before_sleep=lambda state: log.warning(
                "outcome write failed; retrying",
                error=str(state.outcome.exception()) if state.outcome else "",
            ),
            reraise=True,
        )
        return retrying(write)

    def complete(
        self,
        claim: Claim,
        outcome: Outcome,
        job_log: JobLog,
        cancellation: Cancellation,
        log: Any,
        ctx: JobContext | None = None,
    ) -> Status | None:
        """The status written, or None when nothing could be written (the job changed hands)."""
        reason = cancellation.reason
        if isinstance(outcome, Stopped) and reason == StopReason.LEASE_LOST:
            self._metrics.leases_lost.inc()
            log.warning("lease lost: job stopped, nothing written", why=cancellation.detail)
            return None
        faults.point("before_outcome")
        pause = ctx.pause_requested() if ctx else None
        if pause and isinstance(outcome, Recheck):
            # Between two checks is a checker's checkpoint: it pauses with its schedule kept.
            outcome = Paused(outcome.state, Status.AWAITING_RECHECK, f"paused: {pause}", outcome.at)
        annotate = outcome.annotate if isinstance(outcome, Completed | Failed | Stopped) else ()
        if isinstance(outcome, Stopped) and reason != StopReason.CANCEL:
            annotate = ()  # a hand-back does not end the run's work
        # Before the final write: if we die in between, the re-run writes the same notes again.
        for related in annotate:
            if not self._persist(partial(self._annotate, related), log):
                log.warning("could not annotate a related job: it does not exist", related_job=related.job_id)
        activity = activity_of(ctx) if ctx else None
        if activity and activity.progress and isinstance(outcome, Completed):
            activity = replace(activity, progress=replace(activity.progress, percent=100.0))
        level, note, write = self._plan(claim, outcome, job_log, cancellation, activity)
        log.debug("writing the outcome", outcome=type(outcome).__name__, stop_reason=reason, note=note)
        job_log.add(level, note)
        try:
            written = self._persist(write, log)
        except InvalidRequest as exc:
            # DynamoDB refuses the outcome itself (the item would pass 400 KB, a value it cannot store):
            # record that much, without logs or results, rather than leave the job to run again.
            log.error("outcome write refused; writing a bare failure", error=str(exc), code=exc.code)
            reason = f"the outcome ({type(outcome).__name__}) could not be written: {exc.code}: {exc}"
            written = self._persist(
                lambda: self._queue.finish(claim, Status.FAILED, error_message=reason), log
            )
        if isinstance(written, Lost):
            self._metrics.leases_lost.inc()
            log.warning("outcome not written: the job changed hands first", outcome=type(outcome).__name__)
            return None
        retry = isinstance(outcome, Failed) and outcome.retryable
        self._metrics.outcome(claim.job.job_type, written, retry=retry)
        log.info("job finished", status=str(written))
        return written

    def _annotate(self, note: Annotation) -> Status | Lost:
        merged = self._queue.merge_results(note.job_id, note.results, error_message=note.error_message)
        return Status.COMPLETED if merged else Lost(None)

    def _plan(
        self,
        claim: Claim,
        outcome: Outcome,
        job_log: JobLog,
        cancellation: Cancellation,
        activity: Activity | None,
    ) -> tuple[str, str, Callable[[], Status | Lost]]:
        """The job log line for this outcome and the write that records it (retried as a whole)."""
        queue = self._queue
        match outcome:
            case Stopped() if cancellation.reason == StopReason.CANCEL:
                message = f"cancelled: {cancellation.detail}"
                return (
                    "WARNING",
                    message,
                    lambda: queue.finish(
                        claim,
                        Status.CANCELLED,
                        error_message=message,
                        logs=job_log.snapshot(),
                        process_exit_confirmed=outcome.process_exit_confirmed,
                        activity=activity,
                    ),
                )
            case Stopped():
                return (
                    "WARNING",
                    "handed back to PENDING (poller shutting down); no attempt consumed",
                    lambda: queue.release(
                        claim,
                        reason=cancellation.detail or "stopped",
                        logs=job_log.snapshot(),
                        activity=activity,
                    ),
                )
            case Paused():
                return (
                    "WARNING",
                    outcome.note,
                    lambda: queue.finish(
                        claim,
                        Status.PAUSED,
                        logs=job_log.snapshot(),
                        state=outcome.state,
                        activity=activity,
                        paused_from=outcome.resume_as,
                        next_check_at=outcome.next_check_at,
                    ),
                )
            case Completed():
                return (
                    "INFO",
                    "completed",
                    lambda: queue.finish(
                        claim,
                        Status.COMPLETED,
                        results=outcome.results,
                        logs=job_log.snapshot(),
                        state=outcome.state,
                        children=outcome.children,
                        process_exit_confirmed=outcome.process_exit_confirmed,
                        activity=activity,
                    ),
                )
            case Recheck():
                return (
                    "INFO",
                    f"re-check scheduled at {format_timestamp(outcome.at)}",
                    lambda: queue.schedule_recheck(
                        claim,
                        outcome.at,
                        results=outcome.results,
                        logs=job_log.snapshot(),
                        state=outcome.state,
                        activity=activity,
                    ),
                )
            case Failed() if outcome.retryable:
                return (
                    "ERROR",
                    outcome.reason,
                    lambda: queue.retry_later(
                        claim,
                        error=outcome.reason,
                        logs=job_log.snapshot(),
                        process_exit_confirmed=outcome.process_exit_confirmed,
                        activity=activity,
                    ),
                )
            case Failed():
                return (
                    "ERROR",
                    outcome.reason,
                    lambda: queue.finish(
                        claim,
                        Status.FAILED,
                        error_message=outcome.reason,
                        results=outcome.results,
                        logs=job_log.snapshot(),
                        state=outcome.state,
                        process_exit_confirmed=outcome.process_exit_confirmed,
                        activity=activity,
                    ),
                )
        raise TypeError(f"unknown outcome {outcome!r}")
