"""The daemon, in parts (River's split): the producer claims, the executor runs one job, the completer
writes its outcome, the lease keeper renews leases and relays requests, the rescuer finds abandoned
jobs, signals handle shutdown. This module wires them together from the settings."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from delphi_jobs.config import Settings
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import StopReason
from delphi_jobs.logs import get_logger
from delphi_jobs.poller.executor import Executor, RunningJobs, RunResult
from delphi_jobs.poller.producer import Producer, Slot, Slots
from delphi_jobs.poller.signals import on_stop_signals
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import InvalidStateError
from delphi_jobs.store import Lost, open_store

__all__ = ["Executor", "Poller", "RunResult", "lease_queue", "new_worker_id"]


def new_worker_id(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}:{uuid.uuid4().hex[:6]}"


def lease_queue(settings: Settings) -> JobQueue:
    """A queue whose calls cannot outlast a sixth of the lease: a heartbeat stuck in retries must not
    let the lease run out while the job keeps running (defect 2)."""
    budget = max(0.5, settings.lease_seconds / 6)
    return JobQueue(open_store(settings, max_attempts=2, read_timeout=budget, connect_timeout=budget))


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
        self._queue = queue or JobQueue(open_store(settings))
        self._running = RunningJobs()
        self.executor = Executor(
            settings, registry, self._queue, leases or lease_queue(settings), self._running
        )
        self._registry = registry
        self._max_jobs = max_jobs
        self._exit_when_idle = exit_when_idle
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._signals = 0
        self._log = get_logger(component="poller")

    def run(self) -> int:
        """Run until stopped (signal, --max-jobs, --exit-when-idle); returns the exit code."""
        on_stop_signals(self.request_stop)
        settings = self.settings
        self._log.info(
            "poller starting",
            workers=settings.max_workers,
            interval=settings.poll_interval,
            lease_seconds=settings.lease_seconds,
            table=settings.jobs_table,
            endpoint=settings.endpoint_url or "aws",
            job_types=self._registry.known,
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
        job = self._queue.get(job_id)
        if job is None:
            return f"no job {job_id!r} in {self._queue.table}"
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
