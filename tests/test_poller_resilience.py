"""The poller survives what goes wrong around a job: failing outcome writes, stalled heartbeats,
poison jobs that keep killing their workers. In process, against the moto server."""

from __future__ import annotations

import threading
import time
from typing import Any

from botocore.exceptions import ClientError

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import Cancellation, Completed, JobContext, Outcome, Stopped, StopReason
from delphi_jobs.model import Job
from delphi_jobs.poller import MAX_RECLAIMS, Poller
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status


class Quick:
    """A handler that completes at once, or waits on its cancellation flag when asked to."""

    job_type = "FULL_PIPELINE"

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


class FlakyQueue(JobQueue):
    """A real queue whose first owner write raises, as a throttled or dropped request would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 1

    def finish(self, claim: Claim, status: Status, **kwargs: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem"
            )
        return super().finish(claim, status, **kwargs)


def test_worker_survives_a_failing_outcome_write(moto_settings: Settings) -> None:
    settings = Settings(**{**moto_settings.__dict__, "poll_interval": 0.05, "lease_seconds": 0.6})
    queue = FlakyQueue(make_client(settings), settings.jobs_table)
    queue.enqueue({"job_id": "a", "conversation_id": "1"})
    queue.enqueue({"job_id": "b", "conversation_id": "1"})
    handler = Quick()
    poller = Poller(settings, Registry([handler]), queue_factory=lambda: queue, max_jobs=3)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the poller kept working and reached --max-jobs"
    statuses = {j: queue.get(j).status for j in ("a", "b")}  # type: ignore[union-attr]
    assert statuses == {"a": "COMPLETED", "b": "COMPLETED"}, "the failed write's job was reclaimed and done"
    assert len(handler.ran) == 3 and set(handler.ran) == {"a", "b"}, "one job ran again after the failure"


def test_poison_job_fails_after_repeated_abandonment(moto_settings: Settings) -> None:
    queue = JobQueue(make_client(moto_settings), moto_settings.jobs_table)
    queue.enqueue({"job_id": "poison", "conversation_id": "1"})
    job = queue.get("poison")
    for _ in range(MAX_RECLAIMS + 1):  # every owner "dies": its lease runs out
        assert job is not None
        assert queue.claim(job, "doomed", 0.05) is not None
        time.sleep(0.1)
        job = queue.get("poison")
    assert job is not None and job.reclaim_count == MAX_RECLAIMS
    handler = Quick()
    poller = Poller(moto_settings, Registry([handler]))
    claim = queue.claim(job, "survivor", 5)
    assert claim is not None and claim.reclaimed and claim.job.reclaim_count == MAX_RECLAIMS + 1
    result = poller.process(queue, claim)
    assert result.status == "FAILED" and handler.ran == []
    failed = queue.get("poison")
    assert failed is not None and "abandoned 4 times" in str(failed.error_message)


def test_lease_deadline_stops_a_job_even_if_heartbeats_hang() -> None:
    cancellation = Cancellation()
    cancellation.renewed(time.monotonic() + 0.2)
    assert not cancellation.is_set()
    started = time.monotonic()
    assert cancellation.wait(5), "the wait ends at the lease deadline, not after 5 s"
    assert time.monotonic() - started < 1
    assert cancellation.reason == StopReason.LEASE_LOST


def test_stalled_heartbeats_stop_the_job_before_the_lease_runs_out(moto_settings: Settings) -> None:
    """Heartbeats that cannot reach the server (a dead endpoint) stop the job at 2/3 of the lease."""
    settings = Settings(**{**moto_settings.__dict__, "lease_seconds": 1.5})
    queue = JobQueue(make_client(settings), settings.jobs_table)
    queue.enqueue({"job_id": "stall", "conversation_id": "1"})
    handler = Quick(hold=30)
    poller = Poller(settings, Registry([handler]))
    # The heartbeat client points at a port where nothing listens.
    poller._beats.queue = JobQueue(
        make_client(
            Settings(endpoint_url="http://127.0.0.1:9", table_prefix=settings.table_prefix), max_attempts=1
        ),
        settings.jobs_table,
    )
    job = queue.get("stall")
    assert job is not None
    claim = queue.claim(job, "w", settings.lease_seconds)
    assert claim is not None
    started = time.monotonic()
    result = poller.process(queue, claim)
    elapsed = time.monotonic() - started
    assert result.status is None, "a stopped job with a lost lease writes nothing"
    assert elapsed < settings.lease_seconds, f"stopped after {elapsed:.2f}s, before the lease ran out"
    still = queue.get("stall")
    assert still is not None and still.status == "PROCESSING"  # the next owner reclaims it


def test_completed_work_is_written_despite_heartbeat_trouble(moto_settings: Settings) -> None:
    queue = JobQueue(make_client(moto_settings), moto_settings.jobs_table)
    queue.enqueue({"job_id": "done", "conversation_id": "1"})
    job = queue.get("done")
    assert job is not None
    claim = queue.claim(job, "w", 30)
    assert claim is not None

    class LateFinisher(Quick):
        def run(self, ctx: JobContext) -> Outcome:
            ctx.cancellation.set(StopReason.LEASE_LOST, "heartbeat trouble")
            return Completed({"ran": True})

    result = Poller(moto_settings, Registry([LateFinisher()])).process(queue, claim)
    assert result.status == "COMPLETED", "the fence decides, and the lease was still ours"
