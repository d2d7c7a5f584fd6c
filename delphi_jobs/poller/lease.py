"""The lease keeper: renews a running job's lease, flushes its logs and progress, relays requests.

It renews every third of the lease. Each renewal lets the job run until 2/3 of a lease after the
attempt; the remaining third covers the kill grace, so the job is stopped before another worker can
reclaim it, even while a heartbeat call hangs (defect 2). A heartbeat that loses its fence means the job
belongs to another worker now: the job is stopped and writes nothing.

A renewal that fails (throttling, a DynamoDB blip) is tried again after a twelfth of the lease, not a
third: waiting a full third would reach the 2/3 deadline before the next attempt, so one failed
renewal would stop a healthy job and run it again (tests/chaos/test_throttling.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from delphi_jobs import faults
from delphi_jobs.handlers.base import Cancellation, JobContext, LeaseLost, StopReason
from delphi_jobs.model import MAX_LIVE_LINES, Activity
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.store import InvalidRequest, Lost, StoreError

RETRY_DIVISOR = 12
"""A failed renewal is tried again after lease / RETRY_DIVISOR (5 s of the default 60 s lease)."""


def activity_of(ctx: JobContext) -> Activity:
    """The run's progress and its last console lines, as heartbeats and the final write show them."""
    return Activity(ctx.progress_snapshot(), tuple(ctx.log.tail(MAX_LIVE_LINES)))


class LeaseKeeper:
    def __init__(self, queue: JobQueue, claim: Claim, lease_seconds: float, log: Any) -> None:
        self._queue = queue
        self._claim = claim
        self._lease = lease_seconds
        self._log = log
        self._stop = threading.Event()
        self._ctx: JobContext | None = None
        self._renewed_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{claim.job.short_id}", daemon=True)
        self.cancellation = Cancellation()

    def overdue(self) -> bool:
        """Running, and no renewal for longer than 2/3 of the lease (health)."""
        return self._thread.is_alive() and time.monotonic() > self._renewed_at + self._lease * 2 / 3

    def _renewed(self, attempted: float) -> None:
        self._renewed_at = attempted
        self.cancellation.expire_at(
            attempted + self._lease * 2 / 3, StopReason.LEASE_LOST, "no lease renewal for 2/3 of the lease"
        )

    def start(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._renewed(time.monotonic())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._lease)

    def checkpoint(self, state: Any) -> None:
        """Write the handler's state on the job now, fenced; LeaseLost when the job is not ours."""
        attempted = time.monotonic()
        fresh = self._queue.heartbeat(self._claim, self._lease, state=state)
        self._log.debug("checkpoint written", state=type(state).__name__, written=not isinstance(fresh, Lost))
        if isinstance(fresh, Lost):
            self.cancellation.set(StopReason.LEASE_LOST, "checkpoint write lost its fence")
            raise LeaseLost(self._claim.job.job_id)
        self._renewed(attempted)

    def _loop(self) -> None:
        assert self._ctx is not None
        wait = self._lease / 3
        while not self._stop.wait(wait):
            attempted = time.monotonic()
            faults.point("heartbeat")
            try:
                try:
                    fresh = self._queue.heartbeat(
                        self._claim,
                        self._lease,
                        logs=self._ctx.log.snapshot(),
                        activity=activity_of(self._ctx),
                    )
                except InvalidRequest as exc:
                    # The logs or progress cannot be written (the item is at its size limit): the lease
                    # must still be renewed, or a job that is fine would be stopped as "lease lost".
                    self._log.warning("heartbeat refused; renewing the lease alone", error=str(exc))
                    fresh = self._queue.heartbeat(self._claim, self._lease)
            except StoreError as exc:
                wait = self._lease / RETRY_DIVISOR
                self._log.warning("heartbeat failed", error=f"{type(exc).__name__}: {exc}", retry_in=wait)
                continue
            wait = self._lease / 3
            if isinstance(fresh, Lost):
                self._log.warning("heartbeat lost its fence: another worker owns the job now")
                self.cancellation.set(StopReason.LEASE_LOST, "heartbeat lost its fence")
                return
            self._renewed(attempted)
            self._log.debug("lease renewed", until=fresh.item.get("lock_expires_at"))
            if fresh.cancel_requested:
                self.cancellation.set(StopReason.CANCEL, fresh.cancel_requested)
            elif fresh.pause_requested:
                self._ctx.request_pause(fresh.pause_requested)
