"""The poller survives what goes wrong around a job: failing outcome writes, stalled heartbeats,
poison jobs that keep killing their workers. In process, against the moto server."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import (
    Cancellation,
    Completed,
    JobContext,
    Outcome,
    Recheck,
    Stopped,
    StopReason,
)
from delphi_jobs.model import Job, utcnow
from delphi_jobs.poller import Poller
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.store import Change, DynamoJobStore, Lost, StoreUnavailable, Written, open_store
from delphi_jobs.store.memory import MemoryJobStore


class Quick:
    """A handler that completes at once, or waits on its cancellation flag when asked to."""

    job_type = "FULL_PIPELINE"
    state_type = None

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.ran: list[str] = []

    def validate(self, job: Job) -> list[str]:
        return []

    def run(self, ctx: JobContext) -> Outcome:
        self.ran.append(ctx.job.job_id)
        if self.hold and ctx.cancellation.wait(self.hold):
            return Stopped("stopped")
        return Completed({"ran": True})


class FlakyStore(DynamoJobStore):
    """A real store whose first final write (the one that bumps version) fails as an unreachable or
    throttled server would."""

    failures = 1

    def update(self, job_id: str, change: Change) -> Written | Lost:
        if self.failures and "updated_by" in change.set:
            self.failures -= 1
            raise StoreUnavailable("EndpointConnectionError: could not connect", "EndpointConnectionError")
        return super().update(job_id, change)


def claimed(queue: JobQueue, job_id: str, worker: str = "w", lease: float = 30) -> Claim:
    job = queue.get(job_id)
    assert job is not None
    claim = queue.claim(job, worker, lease)
    assert isinstance(claim, Claim)
    return claim


def test_a_finished_job_survives_a_transient_outcome_write_failure(moto_settings: Settings) -> None:
    """The outcome write is retried while the lease holds: the job does not run a second time."""
    settings = dataclasses.replace(moto_settings, poll_interval=0.05, lease_seconds=3)
    queue = JobQueue(FlakyStore(make_client(settings), settings.jobs_table))
    queue.enqueue({"job_id": "a", "conversation_id": "1"})
    queue.enqueue({"job_id": "b", "conversation_id": "1"})
    handler = Quick()
    poller = Poller(settings, Registry([handler]), queue=queue, max_jobs=2)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the poller kept working and reached --max-jobs"
    statuses = {j: queue.get(j).status for j in ("a", "b")}  # type: ignore[union-attr]
    assert statuses == {"a": "COMPLETED", "b": "COMPLETED"}
    assert sorted(handler.ran) == ["a", "b"], "no job ran twice"


def test_poison_job_fails_after_repeated_abandonment(moto_settings: Settings) -> None:
    """Lost workers use the job's retry budget: max_retries 3 means four runs, then FAILED unrun."""
    queue = JobQueue(open_store(moto_settings), retry_base=0.0)
    queue.enqueue({"job_id": "poison", "conversation_id": "1", "max_retries": 3})
    for _ in range(4):  # every owner "dies": its lease runs out
        claimed(queue, "poison", "doomed", 0.05)
        time.sleep(0.1)
    job = queue.get("poison")
    assert job is not None and (job.reclaim_count, job.retry_count) == (3, 3)
    handler = Quick()
    poller = Poller(moto_settings, Registry([handler]), queue=queue)
    claim = claimed(queue, "poison", "survivor", 5)
    assert claim.reclaimed and claim.job.retry_count == 4
    result = poller.executor.run(claim)
    assert result.status == "FAILED" and handler.ran == []
    failed = queue.get("poison")
    assert failed is not None and "after 4 attempts (max_retries 3" in str(failed.error_message)
    assert failed.item["process_exit_confirmed"] is False, "the lost workers' processes are out of sight"


def test_a_deadline_stops_a_job_even_if_nobody_sets_the_flag() -> None:
    cancellation = Cancellation()
    cancellation.expire_at(time.monotonic() + 0.2, StopReason.LEASE_LOST, "no renewal")
    assert not cancellation.is_set()
    started = time.monotonic()
    assert cancellation.wait(5), "the wait ends at the deadline, not after 5 s"
    assert time.monotonic() - started < 1
    assert cancellation.reason == StopReason.LEASE_LOST


def test_stalled_heartbeats_stop_the_job_before_the_lease_runs_out(moto_settings: Settings) -> None:
    """Heartbeats that cannot reach the server (a dead endpoint) stop the job at 2/3 of the lease."""
    settings = dataclasses.replace(moto_settings, lease_seconds=1.5)
    queue = JobQueue(open_store(settings))
    queue.enqueue({"job_id": "stall", "conversation_id": "1"})
    handler = Quick(hold=30)
    dead = dataclasses.replace(settings, endpoint_url="http://127.0.0.1:9")
    poller = Poller(
        settings, Registry([handler]), queue=queue, leases=JobQueue(open_store(dead, max_attempts=1))
    )
    claim = claimed(queue, "stall", lease=settings.lease_seconds)
    started = time.monotonic()
    result = poller.executor.run(claim)
    elapsed = time.monotonic() - started
    assert result.status is None, "a stopped job with a lost lease writes nothing"
    assert elapsed < settings.lease_seconds, f"stopped after {elapsed:.2f}s, before the lease ran out"
    still = queue.get("stall")
    assert still is not None and still.status == "PROCESSING"  # the next owner reclaims it


def test_completed_work_is_written_despite_heartbeat_trouble(moto_settings: Settings) -> None:
    queue = JobQueue(open_store(moto_settings))
    queue.enqueue({"job_id": "done", "conversation_id": "1"})
    claim = claimed(queue, "done")

    class LateFinisher(Quick):
        def run(self, ctx: JobContext) -> Outcome:
            ctx.cancellation.set(StopReason.LEASE_LOST, "heartbeat trouble")
            return Completed({"ran": True})

    result = Poller(moto_settings, Registry([LateFinisher()]), queue=queue).executor.run(claim)
    assert result.status == "COMPLETED", "the fence decides, and the lease was still ours"


class Checker(Quick):
    """Checks once and asks for another check; a pause arrives while it checks."""

    job_type = "AWAITING_NARRATIVE_BATCH"

    def run(self, ctx: JobContext) -> Outcome:
        ctx.request_pause("maintenance (requested by alice)")
        return Recheck(utcnow() + timedelta(minutes=5))


def test_a_checker_pauses_between_checks_with_its_schedule_kept(moto_settings: Settings) -> None:
    queue = JobQueue(MemoryJobStore())
    queue.enqueue({"job_id": "chk", "conversation_id": "1", "job_type": "AWAITING_NARRATIVE_BATCH"})
    poller = Poller(moto_settings, Registry([Checker()]), queue=queue, leases=queue)
    assert poller.executor.run(claimed(queue, "chk")).status == "PAUSED"
    paused = queue.get("chk")
    assert paused is not None and paused.item["paused_from"] == "AWAITING_RECHECK"
    assert paused.next_check_at is not None and paused.next_check_at > utcnow() + timedelta(minutes=4)
    assert queue.resume("chk").status == "AWAITING_RECHECK"
    resumed = queue.get("chk")
    assert resumed is not None and resumed.next_check_at == paused.next_check_at
    assert queue.find_candidates() == [], "it waits for its next check, as before the pause"
