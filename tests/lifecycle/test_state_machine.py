"""The job state machine as a property (issue 11): Hypothesis drives JobQueue from several simulated
workers and an operator (claim, heartbeat, finish, hand back, retry later, re-check, cancel, pause,
resume, retry, lease expiry through an injected clock, reclaim) and checks after every step that each
call did exactly what the transition table of DESIGN 4 allows from the state read just before it, and
that the invariants hold on every record. Many examples in memory, a few on each DynamoDB server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from delphi_jobs.model import UNCLAIMED_WORKER, Job
from delphi_jobs.queue import Claim, JobQueue, reclaim_delay
from delphi_jobs.states import FINAL, InvalidStateError, Status
from delphi_jobs.store import JobStore, Lost
from delphi_jobs.store.memory import MemoryJobStore

WORKERS = ("w0", "w1", "w2")
OWNER_OUTCOMES = [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.PAUSED]
LEASE = 60.0
EXAMPLES = {"memory": (60, 30), "moto": (4, 15), "ddblocal": (4, 15)}
"""Backend -> (examples, steps per example): the real servers cost a round trip per call."""


def due(job: Job, now: datetime) -> bool:
    """Claimable now, by DESIGN 4 (the table the queue's conditions are derived from)."""
    if job.status == Status.PENDING:
        return job.run_after is None or job.run_after <= now
    if job.status == Status.AWAITING_RECHECK:
        return job.next_check_at is None or job.next_check_at <= now
    if job.status == Status.PROCESSING:
        # A lost worker's job waits out the same backoff as a retry after its lease ran out.
        backoff = timedelta(seconds=reclaim_delay(job.retry_count))
        return job.lock_expires_at is None or job.lock_expires_at + backoff < now
    return False


def holds(claim: Claim, job: Job) -> bool:
    """The fence of every owner write."""
    return (
        job.status == Status.PROCESSING and job.worker_id == claim.worker_id and job.version == claim.version
    )


def landed(claim: Claim, job: Job, target: str) -> bool:
    """This owner's own write already landed (a retried write is acknowledged, never applied twice)."""
    item = job.item
    return (
        item.get("updated_by") == claim.worker_id
        and job.version == claim.version + 1
        and job.status == target
    )


class Lifecycle(RuleBasedStateMachine):
    store: JobStore

    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2030, 1, 1, tzinfo=UTC)
        self.queue = JobQueue(self.store, clock=lambda: self.now, lease_seconds=LEASE)
        self.prefix = uuid.uuid4().hex[:8]
        self.ids: list[str] = []
        self.seen: dict[str, tuple[int, str]] = {}
        """job_id -> (highest version seen, status then): versions never go back; final stays final."""

    jobs = Bundle("jobs")
    claims = Bundle("claims")

    def read(self, job_id: str) -> Job:
        job = self.queue.get(job_id)
        assert job is not None
        return job

    @initialize(target=jobs)
    def first_job(self) -> str:
        return self.enqueue_job()

    @rule(target=jobs)
    def enqueue_job(self) -> str:
        job_id = f"{self.prefix}-{len(self.ids)}"
        self.ids.append(job_id)
        self.queue.enqueue({"job_id": job_id, "conversation_id": "1"})
        return job_id

    @rule(seconds=st.sampled_from([1, 30, 61, 200, 700]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(target=claims, job_id=jobs, worker=st.sampled_from(WORKERS), lease=st.sampled_from([10.0, LEASE]))
    def claim(self, job_id: str, worker: str, lease: float) -> Any:
        before = self.read(job_id)
        try:
            result = self.queue.claim(before, worker, lease)
        except InvalidStateError:
            assert before.status not in (Status.PENDING, Status.AWAITING_RECHECK, Status.PROCESSING)
            return None
        if not due(before, self.now):
            assert isinstance(result, Lost), f"claimed {before.status} that was not due"
            return None
        assert isinstance(result, Claim), f"a due {before.status} job could not be claimed"
        assert result.version == (before.version or 0) + 1
        assert result.reclaimed == (before.status == Status.PROCESSING)
        after = self.read(job_id)
        assert after.status == Status.PROCESSING and after.worker_id == worker
        assert after.lock_expires_at == self.now + timedelta(seconds=lease)
        return result

    def owner_write(self, claim: Claim | None, target: str, write: Any) -> None:
        if claim is None:
            return
        before = self.read(claim.job.job_id)
        result = write(claim)
        if holds(claim, before) or landed(claim, before, target):
            assert result == target, f"the owner's {target} was refused: {result!r}"
            after = self.read(claim.job.job_id)
            assert after.status == target and after.lock_expires_at is None
        else:
            assert isinstance(result, Lost), "a write of a worker that lost the job was applied"
            assert self.read(claim.job.job_id).item == before.item

    @rule(
        claim=claims,
        outcome=st.sampled_from([Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.PAUSED]),
    )
    def finish(self, claim: Claim | None, outcome: Status) -> None:
        self.owner_write(claim, outcome, lambda c: self.queue.finish(c, outcome, error_message="done"))

    @rule(claim=claims)
    def hand_back(self, claim: Claim | None) -> None:
        self.owner_write(claim, Status.PENDING, lambda c: self.queue.release(c, reason="shutdown"))

    @rule(claim=claims)
    def retry_later(self, claim: Claim | None) -> None:
        if claim is None:
            return
        spent = claim.job.retry_count >= claim.job.max_retries
        target = Status.FAILED if spent else Status.PENDING
        self.owner_write(claim, target, lambda c: self.queue.retry_later(c, error="flaky", delay_seconds=45))

    @rule(claim=claims, delay=st.sampled_from([0, 90]))
    def recheck(self, claim: Claim | None, delay: int) -> None:
        at = self.now + timedelta(seconds=delay)
        self.owner_write(claim, Status.AWAITING_RECHECK, lambda c: self.queue.schedule_recheck(c, at))

    @rule(claim=claims)
    def heartbeat(self, claim: Claim | None) -> None:
        if claim is None:
            return
        before = self.read(claim.job.job_id)
        result = self.queue.heartbeat(claim, LEASE)
        if holds(claim, before):
            assert isinstance(result, Job) and result.lock_expires_at == self.now + timedelta(seconds=LEASE)
            assert result.version == before.version, "a heartbeat never bumps the version"
        else:
            assert isinstance(result, Lost) and self.read(claim.job.job_id).item == before.item

    @rule(job_id=jobs, action=st.sampled_from(["cancel", "pause", "resume", "retry"]))
    def operator(self, job_id: str, action: str) -> None:
        before = self.read(job_id)
        allowed = {
            "cancel": {Status.PENDING, Status.PAUSED, Status.PROCESSING, Status.AWAITING_RECHECK},
            "pause": {Status.PENDING, Status.AWAITING_RECHECK, Status.PROCESSING},
            "resume": {Status.PAUSED},
            "retry": {Status.FAILED},
        }[action]
        try:
            result = (
                getattr(self.queue, action)(job_id)
                if action in ("resume", "retry")
                else getattr(self.queue, action)(job_id, "operator")
            )
        except InvalidStateError:
            assert before.status not in allowed, f"{action} refused from {before.status}"
            assert self.read(job_id).item == before.item
            return
        assert before.status in allowed, f"{action} applied from {before.status}"
        after = self.read(job_id)
        if result.requested:
            # A request for the owner or checker: no status change, no version bump.
            assert after.status == before.status and after.version == before.version
            assert after.item.get(f"{action}_requested")
        else:
            assert after.status == result.status and after.version == (before.version or 0) + 1

    @invariant()
    def records_are_consistent(self) -> None:
        for job_id in self.ids:
            job = self.read(job_id)
            version = job.version or 0
            highest, was = self.seen.get(job_id, (0, ""))
            assert version >= highest, "versions never go back"
            if was in FINAL:
                assert job.status == was and version == highest, f"{was} is final"
            self.seen[job_id] = (version, job.status)
            assert job.problems == ()
            if job.status == Status.PROCESSING:
                assert job.lock_expires_at is not None and job.worker_id not in (None, UNCLAIMED_WORKER)
            else:
                assert job.lock_expires_at is None, f"{job.status} with a lease"
            if job.status in (Status.PENDING, Status.AWAITING_RECHECK, Status.PAUSED):
                assert job.worker_id is None, f"{job.status} owned by {job.worker_id}"


def run_lifecycle(store: JobStore, backend: str) -> None:
    examples, steps = EXAMPLES[backend]

    class OnBackend(Lifecycle):
        pass

    OnBackend.store = store
    run_state_machine_as_test(
        OnBackend,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        ),
    )


def test_lifecycle_in_memory() -> None:
    run_lifecycle(MemoryJobStore(), "memory")


@pytest.mark.parametrize("backend", ["moto", "ddblocal"])
def test_lifecycle_on_dynamodb(backend: str, request: pytest.FixtureRequest) -> None:
    from delphi_jobs.dynamo import make_client
    from delphi_jobs.store import open_store
    from delphi_jobs.tables import ensure_tables, table_specs
    from tests.conftest import fresh_settings

    settings_ = fresh_settings(str(request.getfixturevalue(f"{backend}_endpoint")))
    ensure_tables(make_client(settings_), table_specs(settings_))
    run_lifecycle(open_store(settings_), backend)
