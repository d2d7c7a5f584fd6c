"""The daemon, in parts (River's split): the producer claims, the executor runs one job, the completer
writes its outcome, the lease keeper renews leases and relays requests, the rescuer finds abandoned
jobs, signals handle shutdown. This module wires them together from the settings."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from delphi_jobs import faults
from delphi_jobs.config import Settings
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import StopReason
from delphi_jobs.logs import get_logger
from delphi_jobs.model import Job
from delphi_jobs.poller.executor import Executor, RunningJobs, RunResult
from delphi_jobs.poller.metrics import SAMPLED_STATUSES, Health, PollerMetrics, serve
from delphi_jobs.poller.producer import Producer, Slot, Slots
from delphi_jobs.poller.signals import on_stop_signals
from delphi_jobs.poller.sizes import SizeGate
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.redact import remember_settings
from delphi_jobs.states import InvalidStateError
from delphi_jobs.store import Lost, StoreUnavailable, open_store

__all__ = ["Executor", "Poller", "RunResult", "lease_queue", "new_worker_id"]

STARTUP_PATIENCE = 30.0
"""How long ``--exit-when-idle`` waits for an unreachable DynamoDB before giving up."""


def new_worker_id(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:6]}"


def lease_queue(settings: Settings, on_error: Callable[[str | None], None] | None = None) -> JobQueue:
    """A queue whose calls cannot outlast a sixth of the lease: a heartbeat stuck in retries must not
    let the lease run out while the job keeps running (defect 2)."""
    budget = max(0.5, settings.lease_seconds / 6)
    store = open_store(
        settings, on_error=on_error, max_attempts=2, read_timeout=budget, connect_timeout=budget
    )
    return JobQueue.for_settings(store, settings)


class Poller:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        queue: JobQueue | None = None,
        leases: JobQueue | None = None,
        max_jobs: int | None = None,
        exit_when_idle: bool = False,
    ) -> None:
        self.settings = settings
        remember_settings(settings)
        self.metrics = PollerMetrics(settings.metrics_sample_seconds, sampler=self._sample)
        self._queue = queue or JobQueue.for_settings(
            open_store(settings, on_error=self.metrics.store_error), settings
        )
        self._running = RunningJobs()
        self.health = Health(max(settings.health_stale_seconds, 3 * settings.poll_interval))
        self.health.watch_leases(self._running.overdue)
        self.executor = Executor(
            settings,
            registry,
            self._queue,
            leases or lease_queue(settings, self.metrics.store_error),
            self._running,
            self.metrics,
        )
        self._registry = registry
        self._max_jobs = max_jobs
        self._exit_when_idle = exit_when_idle
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._signals = 0
        self._log = get_logger(component="poller")
        self._sizes = SizeGate.for_settings(settings, self._log)

    def _sample(self) -> tuple[dict[str, int], datetime | None]:
        return self._queue.depth(SAMPLED_STATUSES)

    def _accepts(self, job: Job) -> bool:
        """A job of a type this poller serves, of a conversation size it takes (INSTANCE_SIZE)."""
        return self._registry.accepts(job.job_type) and (self._sizes is None or self._sizes.accepts(job))

    def _wait_for_dynamodb(self) -> None:
        """The table must exist (TableMissing is raised at once: a configuration problem). An
        unreachable server is waited for, with backoff; with --exit-when-idle only a bounded time."""
        deadline = time.monotonic() + STARTUP_PATIENCE if self._exit_when_idle else None
        delay = 1.0
        while True:
            try:
                self._queue.ping()
                return
            except StoreUnavailable as exc:
                if self._stopping.is_set() or (deadline is not None and time.monotonic() + delay > deadline):
                    raise
                self._log.error("DynamoDB not reachable; waiting", error=str(exc), retry_in=delay)
                self._stopping.wait(delay)
                delay = min(30.0, delay * 2)

    def run(self) -> int:
        """Run until stopped (signal, --max-jobs, --exit-when-idle); returns the exit code."""
        on_stop_signals(self.request_stop)
        settings = self.settings
        faults.arm(settings.fault)
        if settings.metrics_port is not None:
            server = serve(settings.metrics_host, settings.metrics_port, self.metrics, self.health)
            self._log.info(
                "serving /metrics and /healthz", port=server.server_port, host=settings.metrics_host
            )
        self._wait_for_dynamodb()
        for job_type, reason in sorted(self._registry.skipped.items()):
            self._log.warning("not serving a job type", job_type=job_type, reason=reason)
        self._log.info(
            "poller starting",
            workers=settings.max_workers,
            interval=settings.poll_interval,
            lease_seconds=settings.lease_seconds,
            table=settings.jobs_table,
            endpoint=settings.endpoint_url or "aws",
            job_types=self._registry.served,
            instance_size=settings.instance_size,
        )
        slots = Slots([new_worker_id(i) for i in range(settings.max_workers)])
        with ThreadPoolExecutor(settings.max_workers, thread_name_prefix="worker") as pool:

            def dispatch(claim: Claim, slot: Slot) -> None:
                def work() -> None:
                    try:
                        self.executor.run(claim)
                    except Exception as exc:
                        # The job stays PROCESSING without heartbeats: its lease runs out and it is rescued.
                        self._log.error(
                            "could not complete a job run",
                            job_id=claim.job.job_id,
                            error=f"{type(exc).__name__}: {exc}",
                        )
                    finally:
                        slots.give_back(slot)

                pool.submit(work)

            producer = Producer(
                settings,
                self._queue,
                slots,
                dispatch,
                self._stopping,
                self._log,
                accept=self._accepts,
                metrics=self.metrics,
                health=self.health,
                max_jobs=self._max_jobs,
                exit_when_idle=self._exit_when_idle,
            )
            worker = threading.Thread(target=producer.run, name="producer", daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(timeout=0.2)  # short joins keep the main thread responsive to signals
        self._log.info("poller stopped")
        return 0

    def run_one(self, job_id: str) -> RunResult | str:
        """Claim one given job and run it in the foreground; a string says why it could not be."""
        on_stop_signals(self.request_stop)
        faults.arm(self.settings.fault)
        job = self._queue.get(job_id)
        if job is None:
            return f"no job {job_id!r} in {self._queue.table}"
        if not self._registry.accepts(job.job_type):
            return f"job {job_id} is a {job.job_type} job, which this poller cannot run: " + (
                self._registry.skipped.get(job.job_type, "not served")
            )
        try:
            claim = self._queue.claim(job, new_worker_id(0), self.settings.lease_seconds)
        except InvalidStateError:
            claim = Lost(None)
        if isinstance(claim, Lost):
            return (
                f"job {job_id} is not claimable now (status {job.status or '(none)'}; run_after "
                f"{job.run_after}, next_check_at {job.next_check_at}, lease until {job.lock_expires_at})"
            )
        return self.executor.run(claim)

    def request_stop(self) -> None:
        """First call: stop claiming, give running jobs the grace period. Second: hand back now."""
        with self._lock:
            self._signals += 1
            first = self._signals == 1
        self._stopping.set()
        running = len(self._running)
        if first:
            faults.point("shutdown")
            grace = self.settings.shutdown_grace_seconds
            self._log.info("stop requested: no new claims", running=running, grace_seconds=grace)
            timer = threading.Timer(grace, self._hand_back_all)
            timer.daemon = True
            timer.start()
        else:
            self._log.warning("second stop request: handing running jobs back now", running=running)
            self._hand_back_all()

    def _hand_back_all(self) -> None:
        self._running.stop_all(StopReason.SHUTDOWN, "poller shutting down")
