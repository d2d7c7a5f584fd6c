"""Issue 11 item 3: DynamoDB is unreachable (DynamoDB Local really stopped, then started again on the
same port with the same data) while a job finishes. The outcome write is retried within the lease
while the heartbeat keeps it: the job ends COMPLETED and never runs a second time."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delphi_jobs.devtools import dynamodb_local
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.base import Completed, JobContext, Outcome
from delphi_jobs.model import Job
from delphi_jobs.poller import Poller
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from delphi_jobs.tables import ensure_tables, table_specs
from tests.conftest import fresh_settings

OUTAGE_SECONDS = 3.0


class Gate:
    """Runs until the test opens the gate (while the server is down), then completes."""

    job_type = "FULL_PIPELINE"
    state_type = None

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.runs = 0

    def validate(self, job: Job) -> list[str]:
        return []

    def run(self, ctx: JobContext) -> Outcome:
        self.runs += 1
        self.started.set()
        self.release.wait(60)
        return Completed({"ran": True})


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[dynamodb_local.DynamoDBLocal]:
    reason = dynamodb_local.unavailable_reason()
    if reason:
        pytest.skip(f"DynamoDB Local tier: {reason}")
    with dynamodb_local.DynamoDBLocal(db_path=tmp_path) as server:
        yield server


def test_outcome_survives_a_dynamodb_outage_at_the_end_of_a_job(
    persistent: dynamodb_local.DynamoDBLocal,
) -> None:
    settings = dataclasses.replace(
        fresh_settings(persistent.endpoint_url), poll_interval=0.1, lease_seconds=90
    )
    ensure_tables(make_client(settings), table_specs(settings))
    queue = JobQueue(open_store(settings))
    queue.enqueue({"job_id": "long", "conversation_id": "1"})
    handler = Gate()
    poller = Poller(settings, Registry([handler]), queue=queue, max_jobs=1)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    assert handler.started.wait(60), "the job started"

    down_at = time.monotonic()
    with persistent.down():
        handler.release.set()  # the job finishes while nothing answers
        time.sleep(OUTAGE_SECONDS)
    unreachable = time.monotonic() - down_at
    thread.join(60)
    assert not thread.is_alive(), "the poller finished its one job"
    job = queue.get("long")
    assert job is not None and job.status == "COMPLETED", job and job.error_message
    assert handler.runs == 1, "a finished job never runs again"
    assert unreachable >= OUTAGE_SECONDS
