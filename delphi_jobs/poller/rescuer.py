"""The rescuer: finds jobs whose owner stopped renewing its lease, and decides when to stop rescuing.

Abandoned PROCESSING jobs are rare, so they are looked for on their own cadence (half a lease, at most
30 s) rather than on every poll: a job can only be rescued once its lease has run out, so looking more
often would buy nothing. A lost worker's run counts as an attempt, like a retry, under the job's one
budget (``max_retries``), and the job is rescued only after the same backoff (queue.reclaim_delay). A
job whose budget is spent is failed instead of run again (it probably kills its poller, e.g. by running
out of memory): docs/compatibility.md, "Retries".
"""

from __future__ import annotations

import time
from collections.abc import Callable

from delphi_jobs.config import DEFAULT_PAUSE_TIMEOUT
from delphi_jobs.logs import get_logger
from delphi_jobs.model import Job
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status

MAX_RESCUE_INTERVAL = 30.0
_log = get_logger(component="rescuer")


def poison_reason(claim: Claim) -> str | None:
    """Why a reclaimed job must not run again: its attempts are used up (the reclaim counted one)."""
    job = claim.job
    if claim.reclaimed and job.retry_count > job.max_retries:
        return (
            f"abandoned by a worker that died or stalled while running it, after {job.retry_count} "
            f"attempts (max_retries {job.max_retries}; {job.reclaim_count} lost workers): not run again "
            "(a job that kills its poller, e.g. by running out of memory?)"
        )
    return None


class Rescuer:
    def __init__(
        self,
        queue: JobQueue,
        lease_seconds: float,
        accept: Callable[[Job], bool],
        clock: Callable[[], float] = time.monotonic,
        pause_timeout: float = DEFAULT_PAUSE_TIMEOUT,
    ) -> None:
        self._queue = queue
        self._accept = accept
        self._pause_timeout = pause_timeout
        self.interval = min(MAX_RESCUE_INTERVAL, lease_seconds / 2)
        self._clock = clock
        self._next = 0.0

    def abandoned(self) -> list[Job]:
        """Jobs to reclaim, when a look is due; [] between looks. The same pass cancels jobs PAUSED
        for longer than the pause timeout (they are as rare, and as little in a hurry)."""
        now = self._clock()
        if now < self._next:
            return []
        self._next = now + self.interval
        for expired in self._queue.expire_pauses(self._pause_timeout):
            _log.warning("paused too long: cancelled", job_id=expired.job_id, status=expired.status)
        return self._queue.find_due(Status.PROCESSING, accept=self._accept)
