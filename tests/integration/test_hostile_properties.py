"""Hostile input as a property (issue 11): Hypothesis writes records whose every attribute may be
missing, empty, of the wrong type, huge, unicode, NULL, deeply nested or near the item limit, straight
into a live table, and a real poller runs on them. Whatever the records, the poller reaches idle (it
never crashes or stalls), every record ends terminal, an invalid one FAILED with a message naming one
of its bad attributes, and the handler runs exactly for the valid ones."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import MAX_ITEM_BYTES, DynamoJobStore, item_size
from tests.integration.test_hostile_records import PAST, Recorder, poll_until_idle

Choice = tuple[Any, bool]
"""(wire value, or None for "absent"; whether it makes the record invalid)"""

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


def ok(*values: Any) -> st.SearchStrategy[Choice]:
    return st.sampled_from([(v, False) for v in values])


def bad(*values: Any) -> st.SearchStrategy[Choice]:
    return st.sampled_from([(v, True) for v in values])


NULL = ("NULL",)
DEEP = "[" * 50_000 + "]" * 50_000
ATTRIBUTES: dict[str, st.SearchStrategy[Choice]] = {
    # Index keys may only be absent or of their declared type (DynamoDB refuses anything else).
    "conversation_id": ok("7", "00042")
    | bad(None, "1_000", "-1", "+1", " 1", "\u0661\u0662", "x")
    | TEXT.filter(lambda t: not t.isascii() or not t.isdigit()).filter(bool).map(lambda t: (t, True)),
    "job_type": ok(None, "FULL_PIPELINE") | bad("UNKNOWN", "full_pipeline"),
    "priority": ok(None, 0, 50, ("N", "-3")) | bad(("N", "1E+38"), ("N", "0.5")),
    "version": ok(None, 1, NULL, ("N", "0"))
    | bad("abc", ("N", "99999999999999999999999999999999999999"), [1]),
    "run_after": ok(None, "", NULL, PAST, ("N", "1700000000000"))
    | bad("soon", "0001-01-01T00:00:00+01:00", True),
    "lock_expires_at": ok(None, "", NULL) | bad("garbage", {"M": 1}),
    "started_at": ok(None, "", NULL) | bad("2024-13-45T99:00:00Z", ("N", "1E+100")),
    "completed_at": ok(None, "") | bad("yesterday"),
    "timeout_seconds": ok(None, 14400) | bad(0, "long", ("N", "NaN") if False else ("N", "-5")),
    "retry_count": ok(None, 0, 2) | bad("two"),
    "max_retries": ok(None, 3) | bad([3]),
    "job_config": ok(None, "", "{}", '{"stages": [{"config": {"include_moderation": "false"}}]}', {"k": "v"})
    | bad("[", "[1]", DEEP, '{"n": ' + "9" * 5000 + "}", '{"include_moderation": "maybe"}', [1, 2]),
    "logs": ok(None, '{"entries": []}', '{"entries": [{"message": "\u2603"}]}') | bad("{", '{"entries": 5}'),
    "job_results": ok(None, "{}", "") | bad("[", 5),
    "note": TEXT.map(lambda t: (t, False)) | ok(NULL, True, {"a": [1, {"b": None}]}, "\u202e" * 50),
}
NEAR_LIMIT_ROOM = 3000
"""A padded record keeps this much room: our writes are sized to fit it (logs shrink first)."""


def to_wire(value: Any) -> dict[str, Any]:
    if value is None or value == NULL:
        return {"NULL": True}
    if isinstance(value, tuple):
        return {"NULL": True} if value == NULL else {value[0]: value[1]}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, list):
        return {"L": [to_wire(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {k: to_wire(v) for k, v in value.items()}}
    return {"S": value}


@st.composite
def hostile_record(draw: st.DrawFn) -> tuple[dict[str, Any], set[str], bool]:
    """A PENDING record (it must be claimable to be tested), its invalid attributes, and whether it
    was padded to near the item limit."""
    record: dict[str, Any] = {"status": "PENDING", "created_at": PAST, "worker_id": "none"}
    invalid: set[str] = set()
    for name, choices in ATTRIBUTES.items():
        value, wrong = draw(choices)
        if value is not None:
            record[name] = value
        if wrong:
            invalid.add(name)
    return record, invalid, draw(st.booleans())


def insert(client: Any, table: str, job_id: str, record: dict[str, Any], near_limit: bool) -> None:
    item = {"job_id": {"S": job_id}, **{name: to_wire(value) for name, value in record.items()}}
    room = MAX_ITEM_BYTES - item_size({**record, "job_id": job_id, "padding": ""}) - NEAR_LIMIT_ROOM
    while True:
        if near_limit:
            # ASCII: moto measures strings in characters, DynamoDB in UTF-8 bytes
            item["padding"] = {"S": "x" * room}
        try:
            client.put_item(TableName=table, Item=item)
            return
        except client.exceptions.ClientError:
            if not near_limit or room < 8192:
                raise
            room -= 2048  # the server counts a little differently: a little less padding


def check_hostile_records(settings_: Settings, examples: int) -> None:
    client = make_client(settings_)
    queue = JobQueue(DynamoJobStore(client, settings_.jobs_table))
    fast = dataclasses.replace(settings_, poll_interval=0.05, lease_seconds=10)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(hostile_record(), min_size=1, max_size=4))
    def property_(records: list[tuple[dict[str, Any], set[str], bool]]) -> None:
        ids = [f"h{uuid.uuid4().hex[:10]}" for _ in records]
        for job_id, (record, _, near) in zip(ids, records, strict=True):
            insert(client, settings_.jobs_table, job_id, record, near)
        handler = Recorder()
        poll_until_idle(fast, queue, handler, timeout=60)
        for job_id, (_, invalid, _) in zip(ids, records, strict=True):
            job = queue.get(job_id)
            assert job is not None
            if invalid:
                assert handler.ran[job_id] == 0, f"ran an invalid record ({sorted(invalid)})"
                assert job.status == "FAILED", (sorted(invalid), job.status)
                assert any(name in str(job.error_message) for name in invalid), (
                    sorted(invalid),
                    job.error_message,
                )
            else:
                assert handler.ran == handler.ran | Counter({job_id: 1}) and handler.ran[job_id] == 1
                assert job.status == "COMPLETED", job.error_message

    property_()


def test_hostile_records_on_moto(moto_settings: Settings) -> None:
    check_hostile_records(moto_settings, examples=4)


def test_hostile_records_on_dynamodb_local(ddblocal_endpoint: str) -> None:
    from delphi_jobs.tables import ensure_tables, table_specs
    from tests.conftest import fresh_settings

    settings_ = fresh_settings(ddblocal_endpoint)
    ensure_tables(make_client(settings_), table_specs(settings_))
    check_hostile_records(settings_, examples=2)


pytestmark = pytest.mark.timeout(600)
