"""The daemon: worker threads that claim jobs, keep their leases alive, run handlers and write outcomes.

Each worker thread has its own DynamoDB client and worker_id. While a job runs, a heartbeat thread
renews its lease every third of the lease, flushes its logs and progress, and watches for cancel or
pause requests; if the lease is lost the job is stopped and no outcome is written (defect 2).
SIGTERM/SIGINT stop claiming; running jobs get a grace period, then are stopped and handed back to
PENDING without consuming an attempt (defect 4); a second signal hands them back at once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import (
    Cancellation,
    Completed,
    Failed,
    JobContext,
    LeaseLost,
    Outcome,
    Recheck,
    Stopped,
    StopReason,
)
from delphi_jobs.logs import JobLog, get_logger
from delphi_jobs.model import format_timestamp
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import InvalidStateError, Status

QueueFactory = Callable[[], JobQueue]
MAX_RECLAIMS = 3
"""A job whose owner died this many times is failed rather than run again (a poison job)."""


def new_worker_id(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Running:
    claim: Claim
    cancellation: Cancellation


@dataclass(frozen=True)
class RunResult:
    job_id: str
    status: str | None
    """The status written, or None when nothing could be written (the lease was lost)."""


class Poller:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        max_jobs: int | None = None,
        exit_when_idle: bool = False,
        queue_factory: QueueFactory | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._max_jobs = max_jobs
        self._exit_when_idle = exit_when_idle
        self._queue_factory = queue_factory or (lambda: JobQueue(make_client(settings), settings.jobs_table))
        self._beats = threading.local()
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # also taken by the signal handler, in the main thread
        self._running: dict[str, _Running] = {}
        self._reserved = 0
        self._signals = 0
        self._log = get_logger(component="poller")

    # ---- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (signal, --max-jobs, --exit-when-idle); returns the exit code."""
        self._install_signal_handlers()
        self._log.info(
            "poller starting",
            workers=self.settings.max_workers,
            interval=self.settings.poll_interval,
            lease_seconds=self.settings.lease_seconds,
            table=self.settings.jobs_table,
            endpoint=self.settings.endpoint_url or "aws",
            job_types=self.registry.known,
        )
        workers = [
            threading.Thread(target=self._work, args=(i,), name=f"worker-{i}", daemon=True)
            for i in range(self.settings.max_workers)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(timeout=0.2)  # short joins keep the main thread responsive to signals
        self._log.info("poller stopped")
        return 0

    def run_one(self, job_id: str) -> RunResult | str:
        """Claim one given job and run it in the foreground; a string says why it could not be."""
        self._install_signal_handlers()
        queue = self._queue_factory()
        job = queue.get(job_id)
        if job is None:
            return f"no job {job_id!r} in {queue.table}"
        try:
            claim = queue.claim(job, new_worker_id(0), self.settings.lease_seconds)
        except InvalidStateError:
            claim = None
        if claim is None:
            return (
                f"job {job_id} is not claimable now (status {job.status or '(none)'}; run_after "
                f"{job.run_after}, next_check_at {job.next_check_at}, lease until {job.lock_expires_at})"
            )
        return self.process(queue, claim)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)

    def request_stop(self) -> None:
        """First call: stop claiming, give running jobs the grace period. Second: hand back now."""
        with self._lock:
            self._signals += 1
            first = self._signals == 1
            running = len(self._running)
        self._stopping.set()
        if first:
            grace = self.settings.shutdown_grace_seconds
            self._log.info("stop requested: no new claims", running=running, grace_seconds=grace)
            timer = threading.Timer(grace, self._hand_back_all)
            timer.daemon = True
            timer.start()
        else:
            self._log.warning("second stop request: handing running jobs back now", running=running)
            self._hand_back_all()

    def _hand_back_all(self) -> None:
        with self._lock:
            running = list(self._running.values())
        for run in running:
            run.cancellation.set(StopReason.SHUTDOWN, "poller shutting down")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop()

    # ---- the loop --------------------------------------------------------------------------------

    def _reserve(self) -> bool:
        with self._lock:
            if self._max_jobs is not None and self._reserved >= self._max_jobs:
                return False
            self._reserved += 1
            return True

    def _unreserve(self) -> None:
        with self._lock:
            self._reserved -= 1

    def _work(self, index: int) -> None:
        worker_id = new_worker_id(index)
        queue = self._queue_factory()
        log = self._log.bind(worker_id=worker_id)
        failures = 0
        while not self._stopping.is_set():
            if not self._reserve():
                self._stopping.set()  # --max-jobs reached: finish in-flight work and exit
                break
            try:
                claim, any_candidates = self._claim_next(queue, worker_id)
                failures = 0
            except Exception as exc:
                self._unreserve()
                failures += 1
                delay = min(30.0, self.settings.poll_interval * 2**failures)
                log.error("poll failed; backing off", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                self._stopping.wait(delay)
                continue
            if claim is None:
                self._unreserve()
                if not any_candidates and self._exit_when_idle and self._idle():
                    log.info("nothing claimable and nothing in flight: exiting (--exit-when-idle)")
                    self._stopping.set()
                    break
                if not any_candidates:
                    self._stopping.wait(self.settings.poll_interval)
                continue
            try:
                self.process(queue, claim)
            except Exception as exc:
                # The job stays PROCESSING without heartbeats: its lease runs out and it is reclaimed.
                log.error(
                    "could not complete a job run",
                    job_id=claim.job.job_id,
                    error=f"{type(exc).__name__}: {exc}",
                )

    def _idle(self) -> bool:
        with self._lock:
            return not self._running

    def _claim_next(self, queue: JobQueue, worker_id: str) -> tuple[Claim | None, bool]:
        candidates = queue.find_candidates()
        # Several pollers see the same page: start at a random candidate among the best few so they
        # spread out instead of all racing for the first one. Lost races are normal and quiet.
        top = candidates[: max(1, self.settings.max_workers)]
        ordered = random.sample(top, len(top)) + candidates[len(top) :]
        for job in ordered:
            if self._stopping.is_set():
                break
            claim = queue.claim(job, worker_id, self.settings.lease_seconds)
            if claim is not None:
                return claim, True
        return None, bool(candidates)

    # ---- one job ---------------------------------------------------------------------------------

    def process(self, queue: JobQueue, claim: Claim) -> RunResult:
        """Run a claimed job to its outcome and write it, fenced."""
        job = claim.job
        job_log = JobLog(job.job_id, job.logs)
        log = get_logger(job_id=job.job_id, job_type=job.job_type, worker_id=claim.worker_id)
        cancellation = Cancellation()
        with self._lock:
            self._running[job.job_id] = _Running(claim, cancellation)
        try:
            if claim.reclaimed:
                job_log.warning("reclaimed: the previous owner's lease expired")
            log.info("job claimed", version=claim.version, reclaimed=claim.reclaimed)
            outcome = self._run_handler(queue, claim, job_log, cancellation, log)
            status = self._apply(queue, claim, outcome, job_log, cancellation, log)
            return RunResult(job.job_id, status)
        finally:
            with self._lock:
                self._running.pop(job.job_id, None)

    def _heartbeat_queue(self) -> JobQueue:
        """Per worker thread, a client whose calls cannot outlast a sixth of the lease: a heartbeat
        stuck in retries must not let the lease run out while the job keeps running (defect 2)."""
        queue: JobQueue | None = getattr(self._beats, "queue", None)
        if queue is None:
            budget = max(0.5, self.settings.lease_seconds / 6)
            client = make_client(self.settings, max_attempts=2, read_timeout=budget, connect_timeout=budget)
            queue = self._beats.queue = JobQueue(client, self.settings.jobs_table)
        return queue

    def _run_handler(
        self, queue: JobQueue, claim: Claim, job_log: JobLog, cancellation: Cancellation, log: Any
    ) -> Outcome:
        job = claim.job
        handler = self.registry.get(job.job_type)
        if handler is None:
            return Failed(self.registry.unknown_message(job.job_type))
        try:
            problems = list(job.problems) or handler.validate(job)
        except Exception as exc:
            log.exception("validation raised")
            return Failed(f"internal error validating the job: {type(exc).__name__}: {exc}")
        if problems:
            return Failed("invalid job, not run: " + "; ".join(problems))
        if claim.reclaimed and job.reclaim_count > MAX_RECLAIMS:
            return Failed(
                f"abandoned {job.reclaim_count} times by workers that died or stalled while running it "
                "(a job that kills its poller, e.g. by running out of memory?); not run again"
            )
        if job.cancel_requested:
            cancellation.set(StopReason.CANCEL, job.cancel_requested)
        elif job.pause_requested:
            cancellation.set(StopReason.PAUSE, job.pause_requested)

        def checkpoint(attributes: Mapping[str, Any]) -> None:
            attempted = time.monotonic()
            if queue.heartbeat(claim, self.settings.lease_seconds, attributes=attributes) is None:
                cancellation.set(StopReason.LEASE_LOST, "checkpoint write lost its fence")
                raise LeaseLost(job.job_id)
            cancellation.renewed(attempted + self.settings.lease_seconds * 2 / 3)

        ctx = JobContext(job, self.settings, job_log, cancellation, checkpoint, log)
        beat = _Heartbeat(self._heartbeat_queue(), claim, self.settings.lease_seconds, ctx, log)
        beat.start()
        try:
            return handler.run(ctx)
        except LeaseLost:
            return Stopped("lease lost at a checkpoint")
        except Exception as exc:
            log.exception("handler raised")
            return Failed(f"internal error in {job.job_type} handler: {type(exc).__name__}: {exc}")
        finally:
            beat.stop()

    def _apply(
        self,
        queue: JobQueue,
        claim: Claim,
        outcome: Outcome,
        job_log: JobLog,
        cancellation: Cancellation,
        log: Any,
    ) -> str | None:
        reason = cancellation.reason
        if reason == StopReason.LEASE_LOST and isinstance(outcome, Stopped):
            log.warning("lease lost: the job belongs to another worker now; writing nothing")
            return None
        if isinstance(outcome, Completed | Failed):
            # Before the final write: if we die in between, the re-run writes the same notes again.
            for other_id, keys in outcome.annotate:
                if not queue.merge_results(other_id, keys):
                    log.warning("could not annotate a related job: it does not exist", related_job=other_id)
        status: str | None
        if isinstance(outcome, Stopped):
            if reason == StopReason.CANCEL:
                message = f"cancelled: {cancellation.detail}"
                job_log.warning(message)
                ok = queue.finish(claim, Status.CANCELLED, error_message=message, logs=job_log.snapshot())
                status = Status.CANCELLED if ok else None
            elif reason == StopReason.PAUSE:
                job_log.warning(f"paused: {cancellation.detail}")
                ok = queue.finish(claim, Status.PAUSED, logs=job_log.snapshot())
                status = Status.PAUSED if ok else None
            else:
                job_log.warning("handed back to PENDING (poller shutting down); no attempt consumed")
                ok = queue.release(claim, reason=cancellation.detail or "stopped", logs=job_log.snapshot())
                status = Status.PENDING if ok else None
        elif isinstance(outcome, Completed):
            job_log.info("completed")
            ok = queue.finish(
                claim,
                Status.COMPLETED,
                results=outcome.results,
                logs=job_log.snapshot(),
                attributes=outcome.attributes,
                children=outcome.children,
            )
            status = Status.COMPLETED if ok else None
        elif isinstance(outcome, Recheck):
            job_log.info(f"re-check scheduled at {format_timestamp(outcome.at)}")
            ok = queue.schedule_recheck(
                claim,
                outcome.at,
                results=outcome.results,
                logs=job_log.snapshot(),
                attributes=outcome.attributes,
            )
            status = Status.AWAITING_RECHECK if ok else None
        elif outcome.retryable:
            job_log.error(outcome.reason)
            status = queue.retry_later(claim, error=outcome.reason, logs=job_log.snapshot())
        else:
            job_log.error(outcome.reason)
            ok = queue.finish(
                claim,
                Status.FAILED,
                error_message=outcome.reason,
                results=outcome.results,
                logs=job_log.snapshot(),
                attributes=outcome.attributes,
            )
            status = Status.FAILED if ok else None
        if status is None:
            log.warning("outcome not written: the job changed hands first", outcome=type(outcome).__name__)
            return None
        log.info("job finished", status=str(status))
        return str(status)


class _Heartbeat:
    """Renews the lease every third of it, flushes logs and progress, and relays operator requests."""

    def __init__(self, queue: JobQueue, claim: Claim, lease: float, ctx: JobContext, log: Any) -> None:
        self._queue = queue
        self._claim = claim
        self._lease = lease
        self._ctx = ctx
        self._log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-{claim.job.short_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._lease)

    def _loop(self) -> None:
        """Each renewal lets the job run 2/3 of a lease further; the remaining third covers the kill
        grace, so the job is gone before another worker can reclaim it (see Cancellation)."""
        cancellation = self._ctx.cancellation
        cancellation.renewed(time.monotonic() + self._lease * 2 / 3)
        while not self._stop.wait(self._lease / 3):
            attempted = time.monotonic()
            try:
                fresh = self._queue.heartbeat(
                    self._claim,
                    self._lease,
                    logs=self._ctx.log.snapshot(),
                    progress=self._ctx.progress_snapshot(),
                )
            except Exception as exc:
                self._log.warning("heartbeat failed", error=f"{type(exc).__name__}: {exc}")
                if cancellation.is_set():
                    return
                continue
            if fresh is None:
                cancellation.set(StopReason.LEASE_LOST, "heartbeat lost its fence")
                return
            cancellation.renewed(attempted + self._lease * 2 / 3)
            if fresh.cancel_requested:
                cancellation.set(StopReason.CANCEL, fresh.cancel_requested)
            elif fresh.pause_requested:
                cancellation.set(StopReason.PAUSE, fresh.pause_requested)
