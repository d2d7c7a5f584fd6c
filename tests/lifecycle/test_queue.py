"""The job lifecycle (JobQueue) on every JobStore backend: memory, moto's server and DynamoDB Local.
Every transition, fencing after a reclaim, bounded polling, operator actions."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from delphi_jobs.devtools import producer_records
from delphi_jobs.model import Activity, ChildJob, LogEntry, Progress, format_timestamp, text_field, utcnow
from delphi_jobs.poller.rescuer import poison_reason
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import InvalidStateError, Status
from delphi_jobs.store import JobExists, JobStore, Lost


@dataclass(frozen=True)
class Note:
    """A handler state for tests: one attribute a handler keeps on its job."""

    batch_status: str | None = text_field()
    batch_id: str | None = text_field(external=True)


@pytest.fixture
def queue(store: JobStore) -> JobQueue:
    """Lost workers' jobs are reclaimable as soon as their lease runs out here; the backoff (and the
    other settings) have tests of their own below."""
    return JobQueue(store, retry_base=0.0)


def raw(store: JobStore, job_id: str) -> dict[str, Any]:
    item = store.get(job_id)
    assert item is not None
    return item


def claim_one(queue: JobQueue, worker: str = "w1", lease: float = 30.0) -> Claim:
    candidates = queue.find_candidates()
    assert candidates, "expected a claimable job"
    claim = queue.claim(candidates[0], worker, lease)
    assert isinstance(claim, Claim)
    return claim


def test_enqueue_writes_a_producer_compatible_record(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "j1", "conversation_id": "5", "job_config": {"include_moderation": True}})
    item = raw(store, "j1")
    assert item["status"] == "PENDING" and item["worker_id"] == "none" and item["version"] == 1
    assert item["started_at"] == "" and json.loads(item["job_config"]) == {"include_moderation": True}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["created_at"])
    with pytest.raises(JobExists):
        queue.enqueue({"job_id": "j1", "conversation_id": "6"})
    assert raw(store, "j1")["conversation_id"] == "5"


def test_claim_sets_ownership_and_second_claim_loses(queue: JobQueue, store: JobStore) -> None:
    store.insert(producer_records.server_full_pipeline(36))
    [job] = queue.find_candidates()
    first = queue.claim(job, "w1", 30)
    assert isinstance(first, Claim) and first.version == 2 and first.job.status == "PROCESSING"
    assert isinstance(queue.claim(job, "w2", 30), Lost)  # same observation, lost race: quietly Lost
    item = raw(store, job.job_id)
    assert item["worker_id"] == "w1" and item["version"] == 2
    assert item["lock_expires_at"] > format_timestamp(utcnow())
    assert queue.find_candidates() == []  # live lease: not claimable


def test_claim_record_without_version(queue: JobQueue, store: JobStore) -> None:
    store.insert(producer_records.hand_made("manual-1", 3))
    [job] = queue.find_candidates()
    claim = queue.claim(job, "w1", 30)
    assert isinstance(claim, Claim) and claim.version == 1
    assert isinstance(queue.claim(job, "w2", 30), Lost)


def test_priority_then_age(queue: JobQueue) -> None:
    for i, priority in enumerate([50, 90, 10, 90]):
        queue.enqueue({"job_id": f"p{i}", "conversation_id": "1", "priority": priority})
        time.sleep(0.005)
    assert [j.job_id for j in queue.find_candidates()] == ["p1", "p3", "p0", "p2"]


def test_heartbeat_extends_lease_flushes_logs_and_sees_requests(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "h1", "conversation_id": "1"})
    claim = claim_one(queue)
    before = raw(store, "h1")["lock_expires_at"]
    logs = tuple(LogEntry(format_timestamp(utcnow()), "INFO", f"line {i}") for i in range(60))
    fresh = queue.heartbeat(
        claim, 120, logs=logs, activity=Activity(Progress(2, 3, 40.0, step="PCA"), ("x",))
    )
    assert not isinstance(fresh, Lost) and fresh.cancel_requested is None
    item = raw(store, "h1")
    assert item["lock_expires_at"] > before and item["version"] == claim.version  # no bump
    assert len(json.loads(item["logs"])["entries"]) == 50
    progress = json.loads(item["progress"])
    assert progress["step"] == "PCA" and progress["current_step"] == 2 and progress["total_steps"] == 3
    assert progress["percent"] == 40.0 and progress["is_paused"] is False
    assert json.loads(item["live_output"]) == ["x"]
    assert queue.cancel("h1", "operator said so", by="alice").requested
    fresh = queue.heartbeat(claim, 120)
    assert fresh is not None and fresh.cancel_requested == "operator said so (requested by alice)"


def test_finish_completed(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "f1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.COMPLETED, results={"rows": 3}) == Status.COMPLETED
    item = raw(store, "f1")
    assert item["status"] == "COMPLETED" and "lock_expires_at" not in item
    assert json.loads(item["job_results"])["result_type"] == "SUCCESS"
    assert json.loads(item["job_results"])["rows"] == 3
    assert item["completed_at"] and item["version"] == claim.version + 1
    assert isinstance(queue.finish(claim, Status.FAILED, error_message="late"), Lost)  # version moved on
    with pytest.raises(InvalidStateError):
        queue.retry("f1")


def test_finish_failed_records_error(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "f2", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.FAILED, error_message="exit code 3") == Status.FAILED
    item = raw(store, "f2")
    assert item["error_message"] == "exit code 3"
    assert json.loads(item["job_results"]) | {"completed_at": "x"} == {
        "result_type": "FAILURE",
        "completed_at": "x",
        "error": "exit code 3",
    }
    assert queue.retry("f2").status == Status.PENDING
    item = raw(store, "f2")
    assert item["status"] == "PENDING" and item["retry_count"] == 0 and "error_message" not in item
    assert item["reclaim_count"] == 0


def test_release_hands_back_without_consuming_an_attempt(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "r1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.release(claim, reason="shutdown") == Status.PENDING
    item = raw(store, "r1")
    assert item["status"] == "PENDING" and item["worker_id"] == "none" and item["retry_count"] == 0
    assert "lock_expires_at" not in item
    assert [j.job_id for j in queue.find_candidates()] == ["r1"]


def test_retry_later_backs_off_then_gives_up(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "b1", "conversation_id": "1", "max_retries": 1})
    claim = claim_one(queue)
    assert queue.retry_later(claim, error="flaky", delay_seconds=0.3) == Status.PENDING
    item = raw(store, "b1")
    assert item["retry_count"] == 1 and item["run_after"] > format_timestamp(utcnow())
    assert queue.find_candidates() == []  # not due yet
    time.sleep(0.4)
    claim = claim_one(queue)
    assert queue.retry_later(claim, error="flaky again") == Status.FAILED
    item = raw(store, "b1")
    assert item["status"] == "FAILED" and "gave up after 2 attempts" in item["error_message"]


def test_schedule_recheck_then_claim_when_due(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "c1", "conversation_id": "1", "job_type": "AWAITING_NARRATIVE_BATCH"})
    claim = claim_one(queue)
    due = utcnow() + timedelta(seconds=0.3)
    assert (
        queue.schedule_recheck(claim, due, state=Note(batch_status="in_progress")) == Status.AWAITING_RECHECK
    )
    item = raw(store, "c1")
    assert item["status"] == "AWAITING_RECHECK" and item["batch_status"] == "in_progress"
    assert item["worker_id"] == "none" and "lock_expires_at" not in item
    assert queue.find_candidates() == []
    time.sleep(0.4)
    claim = claim_one(queue, "w2")
    assert claim.job.status == "PROCESSING" and "next_check_at" not in raw(store, "c1")


def test_cancel_each_state(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "x-pending", "conversation_id": "1"})
    result = queue.cancel("x-pending", "not needed")
    assert (result.status, result.requested) == (Status.CANCELLED, False)
    item = raw(store, "x-pending")
    assert item["status"] == "CANCELLED" and item["error_message"] == "not needed"
    with pytest.raises(InvalidStateError):
        queue.cancel("x-pending", "again")
    with pytest.raises(InvalidStateError):
        queue.pause("x-pending")

    queue.enqueue({"job_id": "x-recheck", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.schedule_recheck(claim, utcnow() + timedelta(hours=1)) == Status.AWAITING_RECHECK
    assert queue.cancel("x-recheck", "stop the batch").requested
    [due] = queue.find_candidates()  # made due now, so the checker comes and cancels the batch
    checker = queue.claim(due, "w2", 30)
    assert (
        isinstance(checker, Claim)
        and checker.job.cancel_requested == "stop the batch (requested by operator)"
    )
    assert (
        queue.finish(checker, Status.CANCELLED, error_message="cancelled: stop the batch") == Status.CANCELLED
    )
    item = raw(store, "x-recheck")
    assert item["status"] == "CANCELLED" and "cancel_requested" not in item


def test_pause_and_resume(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "z1", "conversation_id": "1"})
    assert queue.pause("z1").status == Status.PAUSED
    assert queue.find_candidates() == []
    assert queue.resume("z1").status == Status.PENDING
    claim = claim_one(queue)
    assert queue.pause("z1").requested
    fresh = queue.heartbeat(claim, 30)
    assert not isinstance(fresh, Lost) and fresh.pause_requested
    assert queue.finish(claim, Status.PAUSED) == Status.PAUSED
    assert raw(store, "z1")["status"] == "PAUSED"
    assert queue.resume("z1").status == Status.PENDING
    with pytest.raises(InvalidStateError):
        queue.resume("z1")


def test_fencing_after_reclaim(queue: JobQueue, store: JobStore) -> None:
    """A worker whose lease expired and was taken over can change nothing any more."""
    queue.enqueue({"job_id": "fence", "conversation_id": "1"})
    stale = claim_one(queue, "w-old", lease=0.2)
    time.sleep(0.35)
    [abandoned] = queue.find_candidates()
    fresh = queue.claim(abandoned, "w-new", 30)
    assert isinstance(fresh, Claim) and fresh.reclaimed and fresh.version == stale.version + 1
    snapshot = raw(store, "fence")

    assert isinstance(queue.heartbeat(stale, 30, logs=(LogEntry("t", "INFO", "stale"),)), Lost)
    assert isinstance(queue.heartbeat(stale, 30, state=Note(batch_status="stale")), Lost)
    assert isinstance(queue.finish(stale, Status.COMPLETED, results={"stale": True}), Lost)
    assert isinstance(queue.finish(stale, Status.FAILED, error_message="stale"), Lost)
    assert isinstance(queue.release(stale, reason="shutdown"), Lost)
    assert isinstance(queue.retry_later(stale, error="stale"), Lost)
    assert isinstance(queue.schedule_recheck(stale, utcnow()), Lost)
    assert raw(store, "fence") == snapshot

    assert queue.finish(fresh, Status.COMPLETED) == Status.COMPLETED
    assert raw(store, "fence")["worker_id"] == "w-new"


def test_reclaim_race_has_one_winner(queue: JobQueue) -> None:
    queue.enqueue({"job_id": "rr", "conversation_id": "1"})
    claim_one(queue, "w0", lease=0.1)
    time.sleep(0.25)
    [job] = queue.find_candidates()
    winners = [c for c in (queue.claim(job, f"w{i}", 30) for i in range(1, 4)) if isinstance(c, Claim)]
    assert len(winners) == 1


def test_gsi_keys_are_never_empty(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "g1", "conversation_id": "1"})
    claim = claim_one(queue)
    queue.release(claim, reason="test")
    claim = claim_one(queue)
    queue.schedule_recheck(claim, utcnow())
    item = raw(store, "g1")
    for key in ("status", "worker_id", "created_at", "conversation_id", "job_type"):
        assert item.get(key, "absent") != "", key


def test_finish_with_child_is_one_transaction(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "parent", "conversation_id": "1"})
    stale = claim_one(queue, "w-old", lease=0.2)
    time.sleep(0.35)
    fresh = claim_one(queue, "w-new")
    child = ChildJob("child", "AWAITING_NARRATIVE_BATCH", utcnow(), Note(), {"conversation_id": "1"})
    assert isinstance(queue.finish(stale, Status.COMPLETED, children=(child,)), Lost)
    assert queue.get("child") is None, "a fenced-out parent inserts no child"

    queue.enqueue({"job_id": "taken", "conversation_id": "1"})
    with pytest.raises(JobExists):
        queue.finish(
            fresh, Status.COMPLETED, children=(ChildJob("taken", "FULL_PIPELINE", utcnow(), Note()),)
        )
    assert raw(store, "parent")["status"] == "PROCESSING", "nothing applied"

    done = queue.finish(fresh, Status.COMPLETED, state=Note(batch_id="msgbatch_1"), children=(child,))
    assert done == Status.COMPLETED
    item = raw(store, "child")
    assert item["status"] == "PENDING" and item["version"] == 1 and item["worker_id"] == "none"
    parent = raw(store, "parent")
    assert parent["status"] == "COMPLETED" and parent["batch_id"] == "msgbatch_1"


def test_merge_results_keeps_other_keys(queue: JobQueue) -> None:
    queue.enqueue({"job_id": "m1", "conversation_id": "1"})
    claim = claim_one(queue)
    assert queue.finish(claim, Status.COMPLETED, results={"batch_id": "b"}) == Status.COMPLETED
    assert queue.merge_results("m1", {"narrative": {"stored": 3}})
    job = queue.get("m1")
    assert job is not None and job.job_results["batch_id"] == "b"
    assert job.job_results["narrative"] == {"stored": 3} and job.status == "COMPLETED"
    assert not queue.merge_results("nope", {"x": 1})


def test_history_holds_every_transition_in_order(queue: JobQueue) -> None:
    """Each transition appends its event in the same conditional write: who, from, to and why."""
    queue.enqueue({"job_id": "hist", "conversation_id": "1", "created_by": "api"})
    assert queue.pause("hist", "maintenance", by="alice").status == Status.PAUSED
    assert queue.resume("hist", by="bob").status == Status.PENDING
    claim = claim_one(queue, "w1")
    assert queue.finish(claim, Status.FAILED, error_message="exit code 1") == Status.FAILED
    assert queue.retry("hist", by="carol").status == Status.PENDING
    stale = claim_one(queue, "w2", lease=0.1)
    time.sleep(0.2)
    fresh = claim_one(queue, "w3")
    assert isinstance(queue.finish(stale, Status.COMPLETED), Lost)
    assert queue.finish(fresh, Status.COMPLETED) == Status.COMPLETED
    job = queue.get("hist")
    assert job is not None
    steps = [(e.source, e.to, e.by) for e in job.history]
    assert steps == [
        (None, "PENDING", "api"),
        ("PENDING", "PAUSED", "alice"),
        ("PAUSED", "PENDING", "bob"),
        ("PENDING", "PROCESSING", "w1"),
        ("PROCESSING", "FAILED", "w1"),
        ("FAILED", "PENDING", "carol"),
        ("PENDING", "PROCESSING", "w2"),
        ("PROCESSING", "PROCESSING", "w3"),
        ("PROCESSING", "COMPLETED", "w3"),
    ]
    assert job.history[1].reason == "maintenance" and job.history[4].reason == "exit code 1"
    assert "lease of w2 expired" in job.history[7].reason
    assert [e.at for e in job.history] == sorted(e.at for e in job.history)


def test_history_keeps_the_newest_hundred(queue: JobQueue) -> None:
    queue.enqueue({"job_id": "long", "conversation_id": "1"})
    for _ in range(60):
        queue.pause("long")
        queue.resume("long")
    job = queue.get("long")
    assert job is not None and len(job.history) == 100
    assert (job.history[-1].source, job.history[-1].to) == ("PAUSED", "PENDING")


def test_lost_worker_consumes_an_attempt_after_a_backoff(store: JobStore) -> None:
    """One budget for retries and lost workers: a reclaim counts as an attempt and waits the backoff."""
    clock = [datetime(2030, 1, 1, tzinfo=UTC)]

    def later(seconds: float) -> None:
        clock[0] += timedelta(seconds=seconds)

    # The first reclaim waits 0.5 s after the lease ran out.
    queue = JobQueue(store, retry_base=1.0, clock=lambda: clock[0])
    queue.enqueue({"job_id": "lost", "conversation_id": "1", "max_retries": 1})
    claim_one(queue, "w-dead", lease=0.1)
    later(0.25)
    [job] = queue.list_by_status("PROCESSING")
    assert queue.find_candidates() == [] and isinstance(queue.claim(job, "w-early", 30), Lost)
    later(0.5)
    again = claim_one(queue, "w-2", lease=0.1)
    assert again.reclaimed and (again.job.retry_count, again.job.reclaim_count) == (1, 1)
    assert poison_reason(again) is None
    later(0.2 + 1.0)  # the second reclaim waits a full base
    last = claim_one(queue, "w-3")
    assert last.job.retry_count == 2 and poison_reason(last), "max_retries 1: no third run"


def test_terminal_writes_confirm_the_process_exit(queue: JobQueue, store: JobStore) -> None:
    for job_id, confirmed in (("pe1", True), ("pe2", False)):
        queue.enqueue({"job_id": job_id, "conversation_id": "1"})
        claim = claim_one(queue)
        assert queue.finish(claim, Status.FAILED, process_exit_confirmed=confirmed) == Status.FAILED
        assert raw(store, job_id)["process_exit_confirmed"] is confirmed
    queue.enqueue({"job_id": "pe3", "conversation_id": "1"})
    assert queue.cancel("pe3", "not needed").status == Status.CANCELLED
    assert raw(store, "pe3")["process_exit_confirmed"] is True


def test_legacy_statuses_write_a_cancel_as_failed_and_refuse_pausing(store: JobStore) -> None:
    queue = JobQueue(store, legacy_statuses=True)
    queue.enqueue({"job_id": "lc1", "conversation_id": "1"})
    assert queue.cancel("lc1", "operator: wrong conversation").status == Status.FAILED
    item = raw(store, "lc1")
    assert item["status"] == "FAILED" and item["process_exit_confirmed"] is True
    assert json.loads(item["job_results"])["result_type"] == "CANCELLED"
    assert item["error_message"] == "operator: wrong conversation"

    queue.enqueue({"job_id": "lc2", "conversation_id": "1"})
    with pytest.raises(InvalidStateError, match=r"pausing is disabled .*DELPHI_LEGACY_STATUSES"):
        queue.pause("lc2")
    assert "pause" not in queue.allowed_actions("PENDING"), "offered to operators only where it works"
    assert "pause" in JobQueue(store).allowed_actions("PENDING")
    claim = claim_one(queue)
    assert queue.cancel("lc2", "stop it").requested
    assert queue.finish(claim, Status.CANCELLED, error_message="cancelled: stop it") == Status.FAILED
    item = raw(store, "lc2")
    assert item["status"] == "FAILED" and json.loads(item["job_results"])["result_type"] == "CANCELLED"
    assert "cancel_requested" not in item and item["process_exit_confirmed"] is True


def test_legacy_statuses_hand_back_a_pause_requested_before(store: JobStore) -> None:
    JobQueue(store).enqueue({"job_id": "lp", "conversation_id": "1"})
    claim = claim_one(JobQueue(store))
    assert JobQueue(store).pause("lp").requested  # asked before the setting was turned on
    assert JobQueue(store, legacy_statuses=True).finish(claim, Status.PAUSED) == Status.PENDING
    item = raw(store, "lp")
    assert item["status"] == "PENDING" and "pause_requested" not in item
    assert "DELPHI_LEGACY_STATUSES" in item["handed_back_reason"]


def test_merge_results_sets_or_keeps_the_error_message(queue: JobQueue, store: JobStore) -> None:
    queue.enqueue({"job_id": "me", "conversation_id": "1"})
    assert queue.finish(claim_one(queue), Status.COMPLETED) == Status.COMPLETED
    assert queue.merge_results("me", {"result_type": "FAILURE"}, error_message="3 of 3 failed")
    assert raw(store, "me")["error_message"] == "3 of 3 failed"
    assert queue.merge_results("me", {"more": 1})  # KEEP by default
    assert raw(store, "me")["error_message"] == "3 of 3 failed"
    assert queue.merge_results("me", {"result_type": "SUCCESS"}, error_message=None)
    item = raw(store, "me")
    assert "error_message" not in item and item["status"] == "COMPLETED"
    assert json.loads(item["job_results"])["result_type"] == "SUCCESS"
