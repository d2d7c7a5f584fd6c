"""DynamoDB goes away under load and comes back on the same data: DynamoDB Local with ``-dbPath``,
stopped for 20 s while two real pollers run jobs, then started again on the same port. The pollers
are never restarted; jobs that were running or finishing during the outage end COMPLETED; no job runs
twice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.dynamodb_local import DynamoDBLocal
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.states import TERMINAL
from delphi_jobs.store import open_store
from delphi_jobs.tables import ensure_tables, table_specs
from tests.chaos.ledger import account, record_history
from tests.conftest import fresh_settings, require_ddblocal
from tests.pollers import poller_env, start_poller, wait_for

pytestmark = pytest.mark.chaos

OUTAGE_SECONDS = 20.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DynamoDBLocal]:
    """A DynamoDB Local of this test's own, keeping its data on disk so it can be restarted."""
    require_ddblocal()
    folder = tmp_path / "dynamodb"
    folder.mkdir()
    with DynamoDBLocal(db_path=folder) as running:
        yield running


def statuses(queue: JobQueue, job_ids: list[str]) -> list[str | None]:
    return [job.status if (job := queue.get(j)) else None for j in job_ids]


def test_pollers_ride_out_a_dynamodb_outage(server: DynamoDBLocal, tmp_path: Path) -> None:
    settings: Settings = fresh_settings(server.endpoint_url)
    ensure_tables(make_client(settings), table_specs(settings))
    record_history(settings)
    queue = JobQueue(open_store(settings))
    client = make_client(settings)
    # Long jobs are running when the server goes, short ones finish during the outage.
    records = [producer_records.server_full_pipeline(5 if n % 3 == 0 else 1) for n in range(24)]
    for record in records:
        producer_records.put_raw(client, settings.jobs_table, record)
    job_ids = [str(r["job_id"]) for r in records]
    env = poller_env(settings, tmp_path, FAKE_PIPELINE_SLEEP="8")
    flags = ("--max-workers", "3", "--interval", "0.2")  # the default 60 s lease
    logs = [tmp_path / f"poller{i}.log" for i in range(2)]
    pollers = [start_poller(env, *flags, log=log) for log in logs]
    try:
        wait_for(lambda: statuses(queue, job_ids).count("COMPLETED") >= 3, 120, "work under way")
        wait_for(lambda: statuses(queue, job_ids).count("PROCESSING") >= 3, 60, "jobs in flight")
        in_flight = statuses(queue, job_ids).count("PROCESSING")
        stopped = time.monotonic()
        with server.down():  # stopped, then started again on the same port and data
            time.sleep(OUTAGE_SECONDS)
        back = time.monotonic()
        done_before = statuses(queue, job_ids).count("COMPLETED")
        wait_for(lambda: statuses(queue, job_ids).count("COMPLETED") > done_before, 120, "progress")
        recovered = time.monotonic() - back
        late = producer_records.server_full_pipeline(1)
        producer_records.put_raw(client, settings.jobs_table, late)
        job_ids.append(str(late["job_id"]))
        wait_for(lambda: all(s in TERMINAL for s in statuses(queue, job_ids)), 180, "every job to end")
        assert all(p.poll() is None for p in pollers), "no poller died or had to be restarted"
    finally:
        for proc in pollers:
            proc.terminate()
        codes = [proc.wait(timeout=60) for proc in pollers]
    assert codes == [0, 0]
    ledger = account(settings, tmp_path, dict.fromkeys(job_ids, "COMPLETED"), killed=())
    assert ledger.problems == []
    assert all(len(job.runs) == 1 for job in ledger.jobs.values()), "no job ran twice"
    output = "".join(log.read_text() for log in logs)
    numbers = {
        "outage_seconds": round(back - stopped, 1),
        "jobs_in_flight_at_outage": in_flight,
        "first_completion_after_restart_seconds": round(recovered, 1),
        "failed_polls": output.count("poll failed; backing off"),
        "failed_heartbeats": output.count("heartbeat failed"),
        "retried_outcome_writes": output.count("outcome write failed; retrying"),
        "reruns": ledger.summary()["extra_side_effects"],
    }
    print(json.dumps(numbers))  # for docs/reliability.md
