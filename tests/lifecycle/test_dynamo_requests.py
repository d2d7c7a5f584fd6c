"""What the DynamoDB store sends: a bounded number of requests per poll, and never a bare reserved word
(on moto's server and DynamoDB Local, where requests can be observed through botocore's events)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import error_code, make_client
from delphi_jobs.model import Activity, Progress, format_timestamp, utcnow
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import DynamoJobStore


def test_polling_cost_is_bounded(settings: Settings, client: Any) -> None:
    """Defect 1: a poll costs a bounded number of requests however long the backlog is."""
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    queue = JobQueue(DynamoJobStore(client, settings.jobs_table), page_size=10, max_pages=3)
    later = format_timestamp(utcnow() + timedelta(hours=1))
    for i in range(45):
        queue.enqueue({"job_id": f"later-{i:03d}", "conversation_id": "1", "run_after": later})
    queue.enqueue({"job_id": "due-now", "conversation_id": "1"})
    polls = 0
    found: list[str] = []
    while not found:
        calls.clear()
        found = [j.job_id for j in queue.find_candidates()]
        polls += 1
        assert calls.count("Query") <= 3 * 3
        assert polls <= 5, "the due job at the back of the queue must be reached by the rotating cursor"
    assert found == ["due-now"]


def test_every_expression_names_reserved_words(settings: Settings, client: Any) -> None:
    """No request may contain a bare ``status`` or ``timestamp``: DynamoDB Local rejects them."""
    sent: list[str] = []

    def capture(params: dict[str, Any], **_: Any) -> None:
        for key, value in params.items():
            if key.endswith("Expression") and isinstance(value, str):
                sent.append(value)

    client.meta.events.register("provide-client-params.dynamodb.*", capture)
    queue = JobQueue(DynamoJobStore(client, settings.jobs_table))
    queue.enqueue({"job_id": "rw", "conversation_id": "1"})
    [job] = queue.find_candidates()
    claim = queue.claim(job, "w1", 30)
    assert isinstance(claim, Claim)
    queue.heartbeat(claim, 30, logs=(), activity=Activity(Progress(1, 3, 10.0), ("a line",)))
    queue.cancel("rw", "x")
    queue.finish(claim, Status.FAILED, error_message="x")
    queue.retry("rw")
    queue.pause("rw")
    queue.resume("rw")
    queue.list_by_status("PENDING")
    assert len(sent) >= 10
    for expression in sent:
        words = re.findall(r"(?<![#:\w])([A-Za-z_]\w*)", expression)
        bare = {w for w in words if w.lower() in {"status", "timestamp"}}
        assert not bare, expression


def test_dynamodb_local_rejects_a_bare_reserved_word(settings: Settings) -> None:
    """Positive control for the tier: the real DynamoDB grammar refuses what the queue never sends."""
    client = make_client(settings)
    try:
        client.query(
            TableName=settings.jobs_table,
            IndexName="StatusCreatedIndex",
            KeyConditionExpression="status = :s",
            ExpressionAttributeValues={":s": {"S": "PENDING"}},
        )
    except Exception as exc:
        assert error_code(exc) == "ValidationException"
    else:
        pytest.skip("this server (moto) accepts a bare reserved word in a KeyConditionExpression")
