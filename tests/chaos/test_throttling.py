"""DynamoDB throttling, for real: pollers talk to DynamoDB Local through a proxy that answers some
requests with DynamoDB's own ThrottlingException (tests/chaos/throttle.py). botocore retries them with
backoff; what still fails reaches our own retries (poll backoff, outcome-write retries, heartbeat
retries). No job is lost, none runs twice."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.states import TERMINAL
from delphi_jobs.store import open_store
from tests.chaos.ledger import account
from tests.chaos.throttle import Request, ThrottlingProxy
from tests.pollers import poller_env, run_until_terminal, start_poller

pytestmark = pytest.mark.chaos


@pytest.fixture
def proxy(ddblocal_endpoint: str) -> Iterator[ThrottlingProxy]:
    with ThrottlingProxy(ddblocal_endpoint) as running:
        yield running


@pytest.fixture
def behind_proxy(proxy: ThrottlingProxy, ddb: Settings) -> Settings:
    """The test's tables as the pollers see them: through the throttling proxy (the test itself reads
    them straight from DynamoDB Local, never throttled)."""
    return dataclasses.replace(ddb, endpoint_url=proxy.endpoint_url)


def terminal(queue: JobQueue, job_ids: list[str]) -> bool:
    return all((job := queue.get(j)) is not None and job.status in TERMINAL for j in job_ids)


def test_throttled_requests_are_retried_with_backoff(
    proxy: ThrottlingProxy, ddb: Settings, behind_proxy: Settings, tmp_path: Path
) -> None:
    """A third of all requests throttled, and every request for two seconds once work is under way."""
    rng = random.Random(3)
    storm: list[float] = []
    lock = threading.Lock()

    def decide(request: Request) -> bool:
        with lock:
            in_storm = bool(storm) and storm[0] <= time.monotonic() < storm[0] + 2
            return in_storm or rng.random() < 0.35

    client = make_client(ddb)
    queue = JobQueue(open_store(ddb))
    records = [producer_records.server_full_pipeline(1) for _ in range(24)]
    for record in records:
        producer_records.put_raw(client, ddb.jobs_table, record)
    job_ids = [str(r["job_id"]) for r in records]
    env = poller_env(behind_proxy, tmp_path)
    # Outcome writes are retried for 2/3 of the lease: 20 s here, well beyond what this throttling
    # costs even on a loaded machine (a 12 s lease's 8 s has been seen to run out).
    flags = ("--max-workers", "2", "--lease-seconds", "30")
    proxy.decide = decide
    second = start_poller(env, *flags, log=tmp_path / "second.log")
    try:

        def done_or_storm() -> bool:
            with lock:
                if not storm and len(proxy.seen) > 60:
                    storm.append(time.monotonic())
            return terminal(queue, job_ids)

        run_until_terminal(env, done_or_storm, *flags, log=tmp_path / "first.log", timeout=240)
    finally:
        second.terminate()
        assert second.wait(timeout=60) == 0
    ledger = account(ddb, tmp_path, dict.fromkeys(job_ids, "COMPLETED"), killed=())
    assert ledger.problems == []
    assert all(len(job.runs) == 1 for job in ledger.jobs.values()), "no job ran twice"

    attempts: dict[str, list[tuple[int, float, bool]]] = defaultdict(list)
    for seen in proxy.seen:
        attempts[seen.request.invocation].append((seen.request.attempt, seen.request.at, seen.throttled))
    throttled = [calls for calls in attempts.values() if any(t for _, _, t in calls)]
    assert len(throttled) >= 25, "the proxy throttled many calls"
    gaps = [
        later[1] - earlier[1]
        for calls in throttled
        for earlier, later in itertools.pairwise(calls)
        if earlier[2] and later[0] == earlier[0] + 1
    ]
    assert len(gaps) >= 20, "throttled calls were retried by botocore"
    assert sum(gaps) / len(gaps) >= 0.05, "with backoff, not at once"
    recovered = sum(1 for calls in throttled if not calls[-1][2])
    assert recovered >= len(throttled) / 2, "most throttled calls succeeded on a later attempt"
    numbers = {
        "requests": len(proxy.seen),
        "throttled_requests": sum(1 for seen in proxy.seen if seen.throttled),
        "throttled_calls": len(throttled),
        "recovered_by_botocore_retries": recovered,
        "mean_backoff_seconds": round(sum(gaps) / len(gaps), 2),
    }
    print(json.dumps(numbers))  # for docs/reliability.md


def test_a_throttled_heartbeat_does_not_cost_the_job(
    proxy: ThrottlingProxy, ddb: Settings, behind_proxy: Settings, tmp_path: Path
) -> None:
    """Every attempt of a long job's first lease renewal is throttled, so the renewal fails: it is
    tried again soon, well before the lease deadline, and the job is neither stopped nor run twice."""
    record = producer_records.server_full_pipeline(5)
    producer_records.put_raw(make_client(ddb), ddb.jobs_table, record)
    job_id = str(record["job_id"])
    queue = JobQueue(open_store(ddb))
    renewals: list[str] = []

    def decide(request: Request) -> bool:
        body = request.body
        renewal = (
            request.operation == "UpdateItem"
            and b'"lock_expires_at"' in body
            and b'"started_at"' not in body  # a claim
            and b'"updated_by"' not in body  # an outcome
        )
        if renewal and not renewals:
            renewals.append(request.invocation)
        return bool(renewals) and request.invocation == renewals[0]

    proxy.decide = decide
    env = poller_env(behind_proxy, tmp_path, FAKE_PIPELINE_SLEEP="14")
    log = tmp_path / "poller.log"
    # Renewals every 6 s; without one, the job must stop 12 s after the last.
    run_until_terminal(env, lambda: terminal(queue, [job_id]), "--lease-seconds", "18", log=log, timeout=120)
    assert renewals, "the job renewed its lease"
    assert "heartbeat failed" in log.read_text()
    ledger = account(ddb, tmp_path, {job_id: "COMPLETED"}, killed=())
    assert ledger.problems == []
    assert len(ledger.jobs[job_id].runs) == 1 and not ledger.jobs[job_id].rescued
