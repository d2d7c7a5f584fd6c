"""JobQueue on real DynamoDB-protocol servers (moto's server and DynamoDB Local): every transition,
fencing after a reclaim, bounded polling, and never a bare reserved word."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import error_code, from_item, make_client, to_item
from delphi_jobs.model import LogEntry, format_timestamp, utcnow
from delphi_jobs.queue import JobExists, JobQueue
from delphi_jobs.states import InvalidStateError, Status


def raw(client: Any, settings: Settings, job_id: str) -> dict[str, Any]:
    item = client.get_item(
        TableName=settings.jobs_table, Key=to_item({"job_id": job_id}), ConsistentRead=True
    )
    return from_item(item["Item"])


def claim_one(queue: JobQueue, worker: str = "w1", lease: float = 30.0) -> Any:
    candidates = queue.find_candidates()
    assert candidates, "expected a claimable job"
    claim = queue.claim(candidates[0], worker, lease)
    assert claim is not None
    return claim


def test_enqueue_writes_a_producer_compatible_record(
    queue: JobQueue, client: Any, settings: Settings
) -> None:
    queue.enqueue({"job_id": "j1", "conversation_id": "5", "job_config": {"include_moderation": True}})
    item = raw(client, settings, "j1")
    assert item["status"] == "PENDING" and item["worker_id"] == "none" and item["version"] == 1
    assert item["started_at"] == "" and json.loads(item["job_config"]) == {"include_moderation": True}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["created_at"])
    with pytest.raises(JobExists):
        queue.enqueue({"job_id": "j1", "conversation_id": "6"})
    assert raw(client, settings, "j1")["conversation_id"] == "5"


def test_claim_sets_ownership_and_second_claim_loses(
    queue: JobQueue, client: Any, settings: Settings
) -> None:
    producer_records.put_raw(client, settings.jobs_table, producer_records.server_full_pipeline(36))
    [job] = queue.find_candidates()
    first = queue.claim(job, "w1", 30)
    assert first is not None and first.version == 2 and first.job.status == "PROCESSING"
    assert queue.claim(job, "w2", 30) is None  # same observation, lost race: quietly None
    item = raw(client, settings, job.job_id)
    assert item["worker_id"] == "w1" and item["version"] == 2
    assert item["lock_expires_at"] > format_timestamp(utcnow())
    assert queue.find_candidates() == []  # live lease: not claimable


def test_claim_record_without_version(queue: JobQueue, client: Any, settings: Settings) -> None:
    producer_records.put_raw(client, settings.jobs_table, producer_records.hand_made("manual-1", 3))
    [job] = queue.find_candidates()
    claim = queue.claim(job, "w1", 30)
    assert claim is not None and claim.version == 1
    assert queue.claim(job, "w2", 30) is None


def test_priority_then_age(queue: JobQueue) -> None:
    for i, priority in enumerate([50, 90, 10, 90]):
        queue.enqueue({"job_id": f"p{i}", "conversation_id": "1", "priority": priority})
        time.sleep(0.005)
    assert [j.job_id for j in queue.find_candidates()] == ["p1", "p3", "p0", "p2"]


def test_heartbeat_extends_lease_flushes_logs_and_sees_requests(
    queue: JobQueue, client: Any, settings: Settings
) -> None:
    queue.enqueue({"job_id": "h1", "conversation_id": "1"})
    claim = claim_one(queue)
    before = raw(client, settings, "h1")["lock_expires_at"]
    logs = tuple(LogEntry(format_timestamp(utcnow()), "INFO", f"line {i}") for i in range(60))
    fresh = queue.heartbeat(claim, 120, logs=logs, progress={"stage": "pca", "percent": 40})
    assert fresh is not None and fresh.cancel_requested is None
    item = raw(client, settings, "h1")
    assert item["lock_expires_at"] > before and item["version"] == claim.version  # no bump
    assert len(json.loads(item["logs"])["entries"]) == 50
    assert json.loads(item["progress"])["stage"] == "pca"
    assert queue.cancel("h1", "operator said so").requested
    fresh = queue.heartbeat(claim, 120)
    assert fresh is not None and fresh.cancel_requested == "operator said so"


def test_finish_completed(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "f1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.COMPLETED, results={"rows": 3})
    item = raw(client, settings, "f1")
    assert item["status"] == "COMPLETED" and "lock_expires_at" not in item
    assert json.loads(item["job_results"])["result_type"] == "SUCCESS"
    assert json.loads(item["job_results"])["rows"] == 3
    assert item["completed_at"] and item["version"] == claim.version + 1
    assert not queue.finish(claim, Status.FAILED, error_message="late")  # version moved on
    with pytest.raises(InvalidStateError):
        queue.retry("f1")


def test_finish_failed_records_error(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "f2", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.FAILED, error_message="exit code 3")
    item = raw(client, settings, "f2")
    assert item["error_message"] == "exit code 3"
    assert json.loads(item["job_results"]) | {"completed_at": "x"} == {
        "result_type": "FAILURE",
        "completed_at": "x",
        "error": "exit code 3",
    }
    assert queue.retry("f2").status == Status.PENDING
    item = raw(client, settings, "f2")
    assert item["status"] == "PENDING" and item["retry_count"] == 0 and "error_message" not in item
    assert item["reclaim_count"] == 0


def test_release_hands_back_without_consuming_an_attempt(
    queue: JobQueue, client: Any, settings: Settings
) -> None:
    queue.enqueue({"job_id": "r1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.release(claim, reason="shutdown")
    item = raw(client, settings, "r1")
    assert item["status"] == "PENDING" and item["worker_id"] == "none" and item["retry_count"] == 0
    assert "lock_expires_at" not in item
    assert [j.job_id for j in queue.find_candidates()] == ["r1"]


def test_retry_later_backs_off_then_gives_up(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "b1", "conversation_id": "1", "max_retries": 1})
    claim = claim_one(queue)
    assert queue.retry_later(claim, error="flaky", delay_seconds=0.3) == Status.PENDING
    item = raw(client, settings, "b1")
    assert item["retry_count"] == 1 and item["run_after"] > format_timestamp(utcnow())
    assert queue.find_candidates() == []  # not due yet
    time.sleep(0.4)
    claim = claim_one(queue)
    assert queue.retry_later(claim, error="flaky again") == Status.FAILED
    item = raw(client, settings, "b1")
    assert item["status"] == "FAILED" and "gave up after 2 attempts" in item["error_message"]


def test_schedule_recheck_then_claim_when_due(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "c1", "conversation_id": "1", "job_type": "AWAITING_NARRATIVE_BATCH"})
    claim = claim_one(queue)
    due = utcnow() + timedelta(seconds=0.3)
    assert queue.schedule_recheck(claim, due, attributes={"batch_status": "in_progress"})
    item = raw(client, settings, "c1")
    assert item["status"] == "AWAITING_RECHECK" and item["batch_status"] == "in_progress"
    assert item["worker_id"] == "none" and "lock_expires_at" not in item
    assert queue.find_candidates() == []
    time.sleep(0.4)
    claim = claim_one(queue, "w2")
    assert claim.job.status == "PROCESSING" and "next_check_at" not in raw(client, settings, "c1")


def test_cancel_each_state(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "x-pending", "conversation_id": "1"})
    result = queue.cancel("x-pending", "not needed")
    assert (result.status, result.requested) == (Status.CANCELLED, False)
    item = raw(client, settings, "x-pending")
    assert item["status"] == "CANCELLED" and item["error_message"] == "not needed"
    with pytest.raises(InvalidStateError):
        queue.cancel("x-pending", "again")
    with pytest.raises(InvalidStateError):
        queue.pause("x-pending")

    queue.enqueue({"job_id": "x-recheck", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.schedule_recheck(claim, utcnow() + timedelta(hours=1))
    assert queue.cancel("x-recheck", "stop the batch").requested
    [due] = queue.find_candidates()  # made due now, so the checker comes and cancels the batch
    checker = queue.claim(due, "w2", 30)
    assert checker is not None and checker.job.cancel_requested == "stop the batch"
    assert queue.finish(checker, Status.CANCELLED, error_message="cancelled: stop the batch")
    item = raw(client, settings, "x-recheck")
    assert item["status"] == "CANCELLED" and "cancel_requested" not in item


def test_pause_and_resume(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "z1", "conversation_id": "1"})
    assert queue.pause("z1").status == Status.PAUSED
    assert queue.find_candidates() == []
    assert queue.resume("z1").status == Status.PENDING
    claim = claim_one(queue)
    assert queue.pause("z1").requested
    fresh = queue.heartbeat(claim, 30)
    assert fresh is not None and fresh.pause_requested
    assert queue.finish(claim, Status.PAUSED)
    assert raw(client, settings, "z1")["status"] == "PAUSED"
    assert queue.resume("z1").status == Status.PENDING
    with pytest.raises(InvalidStateError):
        queue.resume("z1")


def test_fencing_after_reclaim(queue: JobQueue, client: Any, settings: Settings) -> None:
    """A worker whose lease expired and was taken over can change nothing any more."""
    queue.enqueue({"job_id": "fence", "conversation_id": "1"})
    stale = claim_one(queue, "w-old", lease=0.2)
    time.sleep(0.35)
    [abandoned] = queue.find_candidates()
    fresh = queue.claim(abandoned, "w-new", 30)
    assert fresh is not None and fresh.reclaimed and fresh.version == stale.version + 1
    snapshot = raw(client, settings, "fence")

    assert queue.heartbeat(stale, 30, logs=(LogEntry("t", "INFO", "stale"),)) is None
    assert not queue.finish(stale, Status.COMPLETED, results={"stale": True})
    assert not queue.finish(stale, Status.FAILED, error_message="stale")
    assert not queue.release(stale, reason="shutdown")
    assert queue.retry_later(stale, error="stale") is None
    assert not queue.schedule_recheck(stale, utcnow())
    assert raw(client, settings, "fence") == snapshot

    assert queue.finish(fresh, Status.COMPLETED)
    assert raw(client, settings, "fence")["worker_id"] == "w-new"


def test_reclaim_race_has_one_winner(queue: JobQueue) -> None:
    queue.enqueue({"job_id": "rr", "conversation_id": "1"})
    claim_one(queue, "w0", lease=0.1)
    time.sleep(0.25)
    [job] = queue.find_candidates()
    winners = [c for c in (queue.claim(job, f"w{i}", 30) for i in range(1, 4)) if c]
    assert len(winners) == 1


def test_polling_cost_is_bounded(settings: Settings, client: Any) -> None:
    """Defect 1: a poll costs a bounded number of requests however long the backlog is."""
    calls: list[str] = []
    client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    queue = JobQueue(client, settings.jobs_table, page_size=10, max_pages=3)
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
    queue = JobQueue(client, settings.jobs_table)
    queue.enqueue({"job_id": "rw", "conversation_id": "1"})
    claim = claim_one(queue)
    queue.heartbeat(claim, 30, logs=(), progress={"p": 1})
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


def test_gsi_keys_are_never_empty(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "g1", "conversation_id": "1"})
    claim = claim_one(queue)
    queue.release(claim, reason="test")
    claim = claim_one(queue)
    queue.schedule_recheck(claim, utcnow())
    item = raw(client, settings, "g1")
    for key in ("status", "worker_id", "created_at", "conversation_id", "job_type"):
        assert item.get(key, "absent") != "", key


def test_finish_with_child_is_one_transaction(queue: JobQueue, client: Any, settings: Settings) -> None:
    queue.enqueue({"job_id": "parent", "conversation_id": "1"})
    stale = claim_one(queue, "w-old", lease=0.2)
    time.sleep(0.35)
    fresh = claim_one(queue, "w-new")
    child = {"job_id": "child", "conversation_id": "1", "job_type": "AWAITING_NARRATIVE_BATCH"}
    assert not queue.finish(stale, Status.COMPLETED, children=(child,))
    assert queue.get("child") is None, "a fenced-out parent inserts no child"

    queue.enqueue({"job_id": "taken", "conversation_id": "1"})
    with pytest.raises(JobExists):
        queue.finish(fresh, Status.COMPLETED, children=({"job_id": "taken", "conversation_id": "1"},))
    assert raw(client, settings, "parent")["status"] == "PROCESSING", "nothing applied"

    assert queue.finish(fresh, Status.COMPLETED, attributes={"batch_id": "msgbatch_1"}, children=(child,))
    item = raw(client, settings, "child")
    assert item["status"] == "PENDING" and item["version"] == 1 and item["worker_id"] == "none"
    parent = raw(client, settings, "parent")
    assert parent["status"] == "COMPLETED" and parent["batch_id"] == "msgbatch_1"


def test_merge_results_keeps_other_keys(queue: JobQueue) -> None:
    queue.enqueue({"job_id": "m1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.COMPLETED, results={"batch_id": "b"})
    assert queue.merge_results("m1", {"narrative": {"stored": 3}})
    job = queue.get("m1")
    assert job is not None and job.job_results["batch_id"] == "b"
    assert job.job_results["narrative"] == {"stored": 3} and job.status == "COMPLETED"
    assert not queue.merge_results("nope", {"x": 1})
