"""Issue 11: records and faults that used to stop pollers, starve the queue or lose outcomes. Each test
inserts the exact record (as DynamoDB wire values, the way any producer could write it) into a real
DynamoDB-protocol server (moto, and DynamoDB Local where installed) and runs a real poller on it."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import Registry
from delphi_jobs.handlers.awaiting_narrative_batch import AwaitingNarrativeBatchHandler
from delphi_jobs.handlers.base import Completed, JobContext, Outcome
from delphi_jobs.handlers.full_pipeline import FullPipelineHandler
from delphi_jobs.handlers.narrative_services import NarrativeServices
from delphi_jobs.model import (
    MAX_LOGS_BYTES,
    UNCLAIMED_WORKER,
    Job,
    format_timestamp,
    utcnow,
)
from delphi_jobs.poller import Poller
from delphi_jobs.queue import SKEW_ALLOWANCE_SECONDS, JobQueue
from delphi_jobs.store import MAX_ITEM_BYTES, DynamoJobStore, JobStore, item_size

PAST = "2024-01-01T00:00:00.000Z"


class Recorder:
    """A FULL_PIPELINE stand-in that records every job it is given and completes it at once."""

    job_type = "FULL_PIPELINE"
    state_type = None

    def __init__(self) -> None:
        self.ran: Counter[str] = Counter()

    def validate(self, job: Job) -> list[str]:
        return FullPipelineHandler().validate(job)

    def run(self, ctx: JobContext) -> Outcome:
        self.ran[ctx.job.job_id] += 1
        return Completed({"ran": True})


class Requests:
    """Counts the DynamoDB requests of one client, per operation and per job id (a busy loop shows)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        client.meta.events.register("before-send.dynamodb", self._count)

    def _count(self, request: Any, **_: Any) -> None:
        operation = str(request.headers.get("X-Amz-Target", b"")).split(".")[-1].strip("'")
        body = json.loads(request.body or b"{}")
        job_id = body.get("Key", {}).get("job_id", {}).get("S", "")
        self.calls[(operation, job_id)] += 1

    def total(self) -> int:
        return sum(self.calls.values())

    def updates_of(self, job_id: str) -> int:
        return self.calls[("UpdateItem", job_id)]


def wire(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value; ("N", text) and ("NULL",) are written as given."""
    if isinstance(value, tuple):
        return {"NULL": True} if value[0] == "NULL" else {value[0]: value[1]}
    if isinstance(value, int):
        return {"N": str(value)}
    return {"S": value}


def put_wire(client: Any, table: str, record: dict[str, Any]) -> None:
    client.put_item(TableName=table, Item={name: wire(value) for name, value in record.items()})


def pending(job_id: str, **changes: Any) -> dict[str, Any]:
    """A server FULL_PIPELINE record's bookkeeping, due since long ago."""
    record: dict[str, Any] = {
        "job_id": job_id,
        "status": "PENDING",
        "job_type": "FULL_PIPELINE",
        "created_at": PAST,
        "updated_at": PAST,
        "started_at": "",
        "completed_at": "",
        "worker_id": UNCLAIMED_WORKER,
        "conversation_id": "7",
        "priority": 50,
        "version": 1,
        "job_results": "{}",
        "logs": '{"entries": []}',
    }
    record.update(changes)
    return record


def padded_to(client: Any, table: str, record: dict[str, Any], room: int) -> None:
    """Insert ``record`` padded so that only about ``room`` bytes are left under the item limit: the
    largest padding the server accepts up to that, found by bisection (its size rules are only
    approximated here, and each try is a 400 KB request)."""

    def fits(pad: int) -> bool:
        try:
            put_wire(client, table, {**record, "padding": "x" * pad})
        except client.exceptions.ClientError:
            return False
        return True

    high = MAX_ITEM_BYTES - room - item_size({**record, "padding": ""})
    step, low = 1024, high - 1024
    while not fits(low):  # a padding the server accepts, however far its rules are from ours
        high, low, step = low - 1, low - 2 * step, 2 * step
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    assert fits(low)


@pytest.fixture
def dynamo_store(settings: Settings) -> JobStore:
    return DynamoJobStore(make_client(settings), settings.jobs_table)


def poll_until_idle(settings: Settings, queue: JobQueue, handler: Any, timeout: float = 120) -> None:
    """A real poller, in process, until nothing is claimable and nothing runs (--exit-when-idle)."""
    poller = Poller(settings, Registry([handler]), queue=queue, exit_when_idle=True)
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the poller did not reach idle within {timeout}s"


def fast(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(settings, poll_interval=0.05, lease_seconds=10, **changes)


# ---- item 1: no record stops the poll loop ------------------------------------------------------

ONE_RECORD_EACH = {
    # attribute -> the exact value that used to stop every poller, and the field the failure names
    "big_priority": ({"priority": ("N", "1E+38")}, "priority"),
    "version_39_digits": ({"version": ("N", "99999999999999999999999999999999999999")}, "version"),
    "ts_before_year_1": ({"started_at": "0001-01-01T00:00:00+01:00"}, "started_at"),
    "ts_after_9999": ({"run_after": "9999-12-31T23:59:59-01:00"}, "run_after"),
    "deep_config": ({"job_config": "[" * 100_000 + "]" * 100_000}, "job_config"),
    "long_integer": ({"job_config": '{"n": ' + "1" * 5000 + "}"}, "job_config"),
    "version_abc": ({"version": "abc"}, "version"),
    "run_after_soon": ({"run_after": "soon"}, "run_after"),
    "lock_garbage": ({"lock_expires_at": "garbage"}, "lock_expires_at"),
    "zid_underscore": ({"conversation_id": "1_000"}, "conversation_id"),
    "zid_arabic_indic": ({"conversation_id": "\u0661\u0662\u0663"}, "conversation_id"),
    "zid_math_digits": ({"conversation_id": "\U0001d7cf\U0001d7d0\U0001d7d1"}, "conversation_id"),
    "zid_negative": ({"conversation_id": "-1"}, "conversation_id"),
}


def test_no_single_record_stops_the_poller(settings: Settings, dynamo_store: JobStore) -> None:
    """Every trigger of issue 11 items 1 and 8 at once: each record ends FAILED naming its field, no
    handler runs for it, and the good jobs around them complete."""
    client = make_client(settings)
    for job_id, (changes, _) in ONE_RECORD_EACH.items():
        put_wire(client, settings.jobs_table, pending(job_id, **changes))
    put_wire(client, settings.jobs_table, pending("unknown_big_number", extra=("N", "1E+38")))
    put_wire(
        client,
        settings.jobs_table,
        pending(
            "reclaim_39_digits",
            status="PROCESSING",
            worker_id="dead",
            lock_expires_at=PAST,
            reclaim_count=("N", "1E+38"),
        ),
    )
    put_wire(client, settings.jobs_table, pending("good", created_at=format_timestamp(utcnow())))
    handler = Recorder()
    queue = JobQueue(dynamo_store)
    poll_until_idle(fast(settings), queue, handler)

    assert handler.ran == Counter({"good": 1, "unknown_big_number": 1}), "nothing invalid was run"
    expected = {job_id: field for job_id, (_, field) in ONE_RECORD_EACH.items()}
    expected["reclaim_39_digits"] = "reclaim_count"
    for job_id, field in expected.items():
        job = queue.get(job_id)
        assert job is not None and job.status == "FAILED", (job_id, job and job.status)
        assert field in str(job.error_message), (job_id, job.error_message)
        assert "invalid job, not run" in str(job.error_message)


def test_a_record_at_the_item_limit_is_failed_or_quarantined_once(settings: Settings) -> None:
    """Within 80 bytes of 400 KB the claim's UpdateItem is refused. The record is failed with one small
    write or, when even that is refused, set aside and reported; never re-tried in a loop, and the jobs
    behind it (several pages of such records) are still claimed."""
    client = make_client(settings)
    requests = Requests(client)
    store = DynamoJobStore(client, settings.jobs_table)
    heavy = [f"heavy{i}" for i in range(4)]
    for job_id in heavy:
        padded_to(client, settings.jobs_table, pending(job_id), room=60)
    put_wire(client, settings.jobs_table, pending("good", created_at=format_timestamp(utcnow())))
    handler = Recorder()
    queue = JobQueue(store, page_size=2)  # the set-aside head fills whole pages
    poll_until_idle(fast(settings), queue, handler)

    assert handler.ran == Counter({"good": 1})
    for job_id in heavy:
        job = queue.get(job_id)
        assert job is not None and job.status in ("PENDING", "FAILED"), job_id
        assert requests.updates_of(job_id) <= 2, "one claim and one attempt to fail it, no loop"


def test_null_attributes_at_the_head_neither_starve_nor_spin(settings: Settings) -> None:
    """Issue 11 item 2: what JavaScript's DocumentClient writes for null, in version, run_after and
    lock_expires_at, on 30 records at the head of the queue: all are claimed and run once, the good job
    behind them too, within a bounded number of requests, and an idle poller does not spin."""
    client = make_client(settings)
    requests = Requests(client)
    nulls = [("version",), ("run_after",), ("lock_expires_at",)]
    for i in range(30):
        attribute = nulls[i % 3][0]
        put_wire(client, settings.jobs_table, pending(f"null{i:02d}", **{attribute: ("NULL",)}))
    put_wire(client, settings.jobs_table, pending("good", created_at=format_timestamp(utcnow())))
    handler = Recorder()
    queue = JobQueue(DynamoJobStore(client, settings.jobs_table))
    poll_until_idle(fast(settings), queue, handler)
    assert handler.ran["good"] == 1
    assert sorted(handler.ran.values()) == [1] * 31
    assert requests.total() < 31 * 6 + 60, requests.total()

    # Idle: a few requests per poll interval, not thousands.
    before = requests.total()
    idle = dataclasses.replace(settings, poll_interval=0.2, lease_seconds=10)
    poller = Poller(idle, Registry([handler]), queue=queue)
    thread = threading.Thread(target=poller.run, daemon=True)
    cpu = time.process_time()
    thread.start()
    time.sleep(2)
    poller.request_stop()
    thread.join(10)
    assert requests.total() - before < 40, requests.total() - before
    assert time.process_time() - cpu < 1.5, "an idle poller must not burn CPU"


# ---- item 4: what we write stays under the item limit ----------------------------------------------


def test_huge_output_and_a_large_record_still_complete_once(settings: Settings) -> None:
    """A pipeline printing 30 lines of 20 KB, and a record that arrived 330 KB large: heartbeats and
    the final write fit, the job completes once, its logs are cut by size and the cut is marked."""
    printer = (
        f'{sys.executable} -c "import sys, time\n'
        'for i in range(30):\n    print(str(i) * 20000, flush=True); time.sleep(0.05)"'
    )
    job_settings = dataclasses.replace(fast(settings), lease_seconds=2, pipeline_command=printer)
    client = make_client(settings)
    put_wire(client, settings.jobs_table, pending("loud"))
    put_wire(client, settings.jobs_table, pending("large", job_config=json.dumps({"pad": "y" * 330_000})))
    queue = JobQueue(DynamoJobStore(client, settings.jobs_table))
    poll_until_idle(job_settings, queue, FullPipelineHandler())
    for job_id in ("loud", "large"):
        job = queue.get(job_id)
        assert job is not None and job.status == "COMPLETED", (job_id, job and job.error_message)
        assert job.reclaim_count == 0 and job.version == 3, "claimed once, finished once"
        logs = str(job.item["logs"])
        assert len(logs.encode()) <= MAX_LOGS_BYTES
    entries = json.loads(str(queue.get("loud").item["logs"]))["entries"]  # type: ignore[union-attr]
    assert "cut" in entries[0]["message"] and any("…[cut" in e["message"] for e in entries)


# ---- item 6: a lease in the far future ----------------------------------------------------------


def test_cancel_and_retry_act_on_a_job_held_by_an_impossible_lease(dynamo_store: JobStore) -> None:
    store = dynamo_store
    queue = JobQueue(store, lease_seconds=60)
    far = format_timestamp(utcnow() + timedelta(days=365))
    near = format_timestamp(utcnow() + timedelta(seconds=60 + SKEW_ALLOWANCE_SECONDS / 2))
    for job_id, lease in (("stuck1", far), ("stuck2", far), ("live", near), ("batch", far)):
        extra = {"owner_cleanup": True, "batch_id": "msgbatch_1"} if job_id == "batch" else {}
        store.insert(pending(job_id, status="PROCESSING", worker_id="w", lock_expires_at=lease, **extra))

    assert queue.cancel("stuck1", "held for ever").status == "CANCELLED"
    assert queue.retry("stuck2").status == "PENDING"
    again = queue.get("stuck2")
    assert again is not None and again.lock_expires_at is None and again.worker_id is None
    live = queue.cancel("live", "stop")
    assert live.requested, "a plausible lease is a live owner's: only a request"
    # A job holding a paid batch goes back to a worker with the request, so its handler cancels it.
    handed = queue.cancel("batch", "held for ever")
    job = queue.get("batch")
    assert handed.status == "PENDING" and job is not None
    assert job.cancel_requested == "held for ever (requested by operator)"


def test_checker_bookkeeping_is_validated_naming_the_field(settings: Settings) -> None:
    """``check_count: "abc"`` on a checker fails it naming the field; its handler never runs."""
    services = NarrativeServices.from_settings(dataclasses.replace(settings, anthropic_api_key="sk-ant-x"))
    client = make_client(settings)
    put_wire(
        client,
        settings.jobs_table,
        pending(
            "checker",
            job_type="AWAITING_NARRATIVE_BATCH",
            batch_id="msgbatch_1",
            batch_job_id="parent",
            check_count="abc",
        ),
    )
    queue = JobQueue(DynamoJobStore(client, settings.jobs_table))
    poll_until_idle(fast(settings), queue, AwaitingNarrativeBatchHandler(services))
    job = queue.get("checker")
    assert job is not None and job.status == "FAILED"
    assert "check_count" in str(job.error_message) and "not run" in str(job.error_message)


def test_a_report_id_holding_a_placeholder_is_not_expanded_again() -> None:
    job = Job.from_item(pending("j1", report_id="r{job_id}{zid}"))
    argv = FullPipelineHandler().command(job, "/app", "run --job {job_id} --report {report_id}")
    assert argv == ["run", "--job", "j1", "--report", "r{job_id}{zid}"]
