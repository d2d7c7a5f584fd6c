"""The producer: the one poll loop of a poller process, feeding its worker slots.

One loop per process (River's producer) keeps idle cost independent of ``--max-workers`` and stops the
workers of one process from racing each other. A candidate page serves several claims: it is consumed
until it runs dry or grows older than the poll interval. PENDING jobs are looked for on every poll;
checkers waiting for a re-check on a slower cadence; abandoned jobs by the rescuer.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.model import Job
from delphi_jobs.poller.metrics import Health, PollerMetrics
from delphi_jobs.poller.rescuer import Rescuer
from delphi_jobs.queue import CLAIMABLE, Claim, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import InvalidRequest, Lost, StoreError

MIN_IDLE_WAIT = 0.05
"""Even ``--interval 0`` never spins."""
MAX_BACKOFF = 30.0
MAX_RECHECK_LOOK = 10.0
UNCLAIMABLE_SECONDS = 600.0
"""How long a record this process cannot claim or fail is left aside before it is looked at again
(an operator may have repaired it); one attempt per record per 10 minutes, never a loop."""


@dataclass(frozen=True)
class Slot:
    index: int
    worker_id: str


class Slots:
    """The worker slots of this process; a slot's worker_id names it on the jobs it runs."""

    def __init__(self, worker_ids: list[str]) -> None:
        self._free = [Slot(i, w) for i, w in enumerate(worker_ids)]
        self._size = len(worker_ids)
        self._changed = threading.Condition()

    def take(self, timeout: float) -> Slot | None:
        with self._changed:
            if not self._free:
                self._changed.wait(timeout)
            return self._free.pop(0) if self._free else None

    def give_back(self, slot: Slot) -> None:
        with self._changed:
            self._free.append(slot)
            self._changed.notify_all()

    @property
    def busy(self) -> int:
        with self._changed:
            return self._size - len(self._free)

    def wait_all_free(self) -> None:
        with self._changed:
            while len(self._free) < self._size:
                self._changed.wait(0.2)


class Producer:
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        slots: Slots,
        dispatch: Callable[[Claim, Slot], None],
        stopping: threading.Event,
        log: Any,
        *,
        accept: Callable[[Job], bool],
        metrics: PollerMetrics,
        health: Health,
        max_jobs: int | None = None,
        exit_when_idle: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._slots = slots
        self._dispatch = dispatch
        self._stopping = stopping
        self._log = log
        self._max_jobs = max_jobs
        self._exit_when_idle = exit_when_idle
        self._monotonic = monotonic
        self._accept = accept
        self._metrics = metrics
        self._health = health
        self._rescuer = Rescuer(
            queue, settings.lease_seconds, self._wanted, monotonic, settings.pause_timeout_seconds
        )
        self._recheck_every = max(
            settings.poll_interval, min(MAX_RECHECK_LOOK, settings.batch_recheck_seconds)
        )
        self._next_recheck_look = 0.0
        self._candidates: list[Job] = []
        self._fetched_at = 0.0
        self._unclaimable: dict[str, float] = {}
        self._dispatched = 0

    def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._health.loop_turned()
            slot = self._slots.take(timeout=0.2)
            if slot is None:
                continue
            if self._max_jobs is not None and self._dispatched >= self._max_jobs:
                self._slots.give_back(slot)
                self._stopping.set()  # --max-jobs reached: finish in-flight work and exit
                break
            try:
                claim, saw_candidates = self._next_claim(slot.worker_id)
                failures = 0
            except Exception as exc:
                # A store failure, or a bug met by one odd record: either way the loop goes on (issue
                # 11: no single record may stop a poller), with backoff so that nothing spins.
                self._slots.give_back(slot)
                failures += 1
                delay = min(MAX_BACKOFF, max(self._settings.poll_interval, 0.5) * 2**failures)
                log = self._log.error if isinstance(exc, StoreError) else self._log.exception
                log("poll failed; backing off", error=f"{type(exc).__name__}: {exc}", retry_in=delay)
                self._candidates = []
                self._stopping.wait(delay)
                continue
            if claim is not None:
                self._dispatched += 1
                self._dispatch(claim, slot)
                continue
            self._slots.give_back(slot)
            if saw_candidates:
                continue  # others won the race for what we saw: look again at once
            if self._exit_when_idle and self._slots.busy == 0 and not self._anything_due():
                self._log.info("nothing claimable and nothing in flight: exiting (--exit-when-idle)")
                self._stopping.set()
                break
            self._stopping.wait(max(MIN_IDLE_WAIT, self._settings.poll_interval))
        self._slots.wait_all_free()

    def _anything_due(self) -> bool:
        """Before --exit-when-idle exits: every lane, whatever its cadence."""
        return any(self._queue.find_due(status, accept=self._wanted) for status in CLAIMABLE)

    def _next_claim(self, worker_id: str) -> tuple[Claim | None, bool]:
        now = self._monotonic()
        if not self._candidates or now - self._fetched_at > self._settings.poll_interval:
            self._candidates = self._fetch(now)
            self._fetched_at = now
        saw = bool(self._candidates)
        while self._candidates and not self._stopping.is_set():
            job = self._candidates.pop(0)
            try:
                claim = self._queue.claim(job, worker_id, self._settings.lease_seconds)
            except InvalidRequest as exc:
                self._refused(job, exc)
                continue
            except StoreError:
                raise
            except Exception as exc:  # a bug met by this record: set it aside, keep polling the rest
                self._set_aside(job, f"claim raised {type(exc).__name__}: {exc}")
                continue
            if isinstance(claim, Claim):
                return claim, True
            self._metrics.races_lost.inc()
            self._note_lost(job, claim)
        return None, saw

    def _wanted(self, job: Job) -> bool:
        """A job this poller serves and has not set aside. Applied inside the look, so that a head of
        the queue made of set-aside records makes it read further instead of hiding the jobs behind."""
        return self._accept(job) and self._unclaimable.get(job.job_id, 0.0) <= self._monotonic()

    def _fetch(self, now: float) -> list[Job]:
        started = self._monotonic()
        found = self._queue.find_due(Status.PENDING, accept=self._wanted)
        if now >= self._next_recheck_look:
            self._next_recheck_look = now + self._recheck_every
            found += self._queue.find_due(Status.AWAITING_RECHECK, accept=self._wanted)
        found += self._rescuer.abandoned()
        self._metrics.poll_seconds.observe(self._monotonic() - started)
        self._log.debug("candidates", found=len(found), seconds=round(self._monotonic() - started, 4))
        found.sort(key=lambda job: -job.priority)  # stable: age order kept within a priority
        # Several pollers see the same page: shuffle the best few so they spread out instead of all
        # racing for the first one; only among equals, so a higher priority still goes first.
        best = [job for job in found[: self._settings.max_workers] if job.priority == found[0].priority]
        return random.sample(best, len(best)) + found[len(best) :]

    def _note_lost(self, job: Job, lost: Lost) -> None:
        """A lost claim is normal (someone else won) unless the record did not change at all: then our
        condition can never hold for it, and it is left aside instead of being retried in a loop."""
        if lost.current is not None and lost.current == dict(job.item):
            self._set_aside(job, "the claim's condition fails although nobody changed the record")

    def _refused(self, job: Job, exc: InvalidRequest) -> None:
        """DynamoDB refuses the claim itself (the item is at the size limit, a value cannot be stored):
        fail the record once with one small write; when even that is refused, set it aside."""
        reason = f"record: cannot be claimed, not run ({exc.code}: {str(exc)[:100]})"
        try:
            failed = self._queue.reject(job, reason)
        except InvalidRequest as again:
            self._set_aside(job, f"{reason}; failing it was refused too ({again.code})")
            return
        if isinstance(failed, Lost):
            self._note_lost(job, failed)
            return
        self._log.error("job record failed: DynamoDB refuses its claim", job_id=job.job_id, reason=reason)

    def _set_aside(self, job: Job, reason: str) -> None:
        """Quarantine: not looked at by this process for UNCLAIMABLE_SECONDS, reported with its id so
        that an operator (``delphi-jobs doctor``) can repair or remove it."""
        self._unclaimable[job.job_id] = self._monotonic() + UNCLAIMABLE_SECONDS
        self._log.error(
            "job record quarantined: it cannot be claimed or failed; left aside",
            job_id=job.job_id,
            status=job.status,
            reason=reason,
            retry_in=UNCLAIMABLE_SECONDS,
        )
