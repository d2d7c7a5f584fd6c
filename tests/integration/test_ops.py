"""The operator actions (delphi_jobs.ops) on real DynamoDB-protocol servers, both tiers: what each
action reads and writes, refusals, the reset guard, and what doctor finds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from delphi_jobs import records as shapes
from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.dynamo import from_item, to_item
from delphi_jobs.model import format_timestamp, utcnow
from delphi_jobs.narrative.batch_client import BatchClient
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.doctor import DoctorOptions, doctor
from delphi_jobs.ops.errors import Invalid, NotFound, Refused
from delphi_jobs.ops.jobs import ListQuery, SubmitRequest, act, list_jobs, show, submit
from delphi_jobs.ops.repair import ResetRequest, anthropic_canceller, reset_stuck, stop_batch_cycle
from delphi_jobs.ops.reports import show_report
from delphi_jobs.ops.stats import stats
from delphi_jobs.queue import Claim
from delphi_jobs.reports import ReportSection
from delphi_jobs.states import Status
from delphi_jobs.store import Lost


@pytest.fixture
def ctx(settings: Settings) -> OpsContext:
    return OpsContext.connect(settings)


def put(ctx: OpsContext, record: dict[str, Any]) -> str:
    records.put_raw(ctx.client, ctx.settings.jobs_table, record)
    return str(record["job_id"])


def raw(ctx: OpsContext, job_id: str) -> dict[str, Any]:
    item = ctx.client.get_item(
        TableName=ctx.settings.jobs_table, Key=to_item({"job_id": job_id}), ConsistentRead=True
    )
    return from_item(item["Item"])


def ago(seconds: float) -> str:
    return format_timestamp(utcnow() - timedelta(seconds=seconds))


def processing(job_id: str, *, lease_in: float, started_ago: float = 600, **changes: Any) -> dict[str, Any]:
    """A claimed job as a poller leaves it, with its lease ending ``lease_in`` seconds from now."""
    return records.server_full_pipeline(
        1,
        job_id=job_id,
        status="PROCESSING",
        worker_id="host:1:0:abc",
        version=2,
        created_at=ago(started_ago + 10),
        started_at=ago(started_ago),
        lock_expires_at=ago(-lease_in),
        **changes,
    )


def checker_of(parent: str, batch_id: str, **changes: Any) -> dict[str, Any]:
    """A waiting batch checker of ``parent`` (conversation 4), as the CREATE handler leaves it."""
    return records.hand_made(
        f"batch_check_{parent}_1",
        4,
        job_type="AWAITING_NARRATIVE_BATCH",
        batch_job_id=parent,
        batch_id=batch_id,
        status="AWAITING_RECHECK",
        **changes,
    )


def test_submit_writes_the_server_shape(ctx: OpsContext) -> None:
    job = submit(ctx, SubmitRequest(zid=12, report_id="r12", priority=70, config={"x": 1}, by="alice"))
    item = raw(ctx, job.job_id)
    assert set(item) == set(shapes.full_pipeline(12, "r12")) | {"history"}
    assert (item["created_by"], item["priority"], item["report_id"]) == ("alice", 70, "r12")
    assert '"x":1' in item["job_config"] and item["timeout_seconds"] == 14400

    narrative = submit(ctx, SubmitRequest(zid=3, job_type="CREATE_NARRATIVE_BATCH", report_id="r3", by="bob"))
    item = raw(ctx, narrative.job_id)
    # enqueue writes the attempt counters' defaults (0 of 3) that the server's narrative shape leaves out
    assert set(item) == set(shapes.narrative("r3", 3)) | {
        "created_by",
        "retry_count",
        "max_retries",
        "history",
    }
    assert narrative.job_id.startswith("batch_report_r3_")
    with pytest.raises(Invalid, match="report_id"):
        submit(ctx, SubmitRequest(zid=3, job_type="CREATE_NARRATIVE_BATCH"))
    with pytest.raises(Invalid, match="job_type"):
        submit(ctx, SubmitRequest(zid=3, job_type="AWAITING_NARRATIVE_BATCH", report_id="r"))


def test_list_picks_an_index_and_pages_without_gaps(ctx: OpsContext) -> None:
    ids = []
    for i, status in enumerate(["PENDING", "PENDING", "FAILED", "COMPLETED", "PAUSED", "PENDING"]):
        ids.append(put(ctx, records.server_full_pipeline(i % 2, status=status, created_at=ago(100 - i))))
    put(ctx, records.server_narrative("r9", 1, created_at=ago(50)))

    pending = list_jobs(ctx, ListQuery(status="pending"))
    assert pending.index == "StatusCreatedIndex"
    assert [j.job_id for j in pending.jobs][1:] == [ids[5], ids[1], ids[0]]
    assert list_jobs(ctx, ListQuery(conversation="1")).index == "ConversationIndex"
    assert [j.job_id for j in list_jobs(ctx, ListQuery(conversation="0", status="PENDING")).jobs] == [ids[0]]
    narratives = list_jobs(ctx, ListQuery(job_type="CREATE_NARRATIVE_BATCH"))
    assert narratives.index == "JobTypeIndex" and len(narratives.jobs) == 1
    assert len(list_jobs(ctx, ListQuery(worker="none", status="PENDING")).jobs) == 4

    seen: list[str] = []
    cursor = None
    for _ in range(10):  # the merged listing, two at a time
        page = list_jobs(ctx, ListQuery(limit=2, cursor=cursor))
        seen += [j.job_id for j in page.jobs]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen[0] == next(j for j in list_jobs(ctx, ListQuery(limit=1)).jobs).job_id
    with pytest.raises(Invalid, match="status"):
        list_jobs(ctx, ListQuery(status="DONE"))


def test_show_links_parent_and_checkers(ctx: OpsContext) -> None:
    parent = put(ctx, records.server_narrative("r1", 4, status="COMPLETED", batch_id="msgbatch_1"))
    checker = put(ctx, checker_of(parent, "msgbatch_1", progress='{"percent": 40}'))
    detail = show(ctx, parent)
    assert [(link.relation, link.job_id) for link in detail.links] == [("checker", checker)]
    assert detail.allowed_actions == ()
    detail = show(ctx, checker)
    assert [(link.relation, link.job_id) for link in detail.links] == [("parent", parent)]
    assert detail.progress == {"percent": 40} and detail.allowed_actions == ("cancel", "pause")
    with pytest.raises(NotFound):
        show(ctx, "nope")


def test_refusals_say_the_state_and_what_is_allowed(ctx: OpsContext) -> None:
    job_id = put(ctx, records.server_full_pipeline(1))
    assert act(ctx, "pause", job_id, by="alice").status == "PAUSED"
    assert json.loads(raw(ctx, job_id)["history"])[-1]["by"] == "alice"
    with pytest.raises(Refused) as refused:
        act(ctx, "retry", job_id, by="alice")
    assert refused.value.status == "PAUSED" and refused.value.allowed == ("cancel", "resume")
    assert act(ctx, "cancel", job_id, by="bob").status == "CANCELLED"
    item = raw(ctx, job_id)
    assert item["error_message"] == "cancelled by bob"
    assert [(e["to"], e["by"]) for e in json.loads(item["history"])][-2:] == [
        ("PAUSED", "alice"),
        ("CANCELLED", "bob"),
    ]
    with pytest.raises(Refused, match="it is CANCELLED"):
        act(ctx, "resume", job_id, by="alice")


def test_reset_stuck_takes_only_expired_leases_unless_forced(ctx: OpsContext) -> None:
    expired = put(ctx, processing("expired", lease_in=-30))
    live = put(ctx, processing("live", lease_in=300))
    young = put(ctx, processing("young", lease_in=-30, started_ago=5))
    before = {j: raw(ctx, j) for j in (expired, live, young)}

    dry = reset_stuck(ctx, ResetRequest(by="alice", dry_run=True, older_than=timedelta(minutes=1)))
    assert {i.job.job_id: i.outcome for i in dry.items} == {
        expired: "would reset",
        live: "skipped: lease alive",
    }
    assert {j: raw(ctx, j) for j in before} == before  # a dry run changes nothing

    report = reset_stuck(ctx, ResetRequest(by="alice", reason="host died", older_than=timedelta(minutes=1)))
    assert report.changed == 1
    item = raw(ctx, expired)
    assert item["status"] == "FAILED" and item["version"] == 3 and item["worker_id"] == "none"
    assert (item["reset_by"], item["reset_reason"]) == ("alice", "host died")
    assert json.loads(item["history"])[-1] == {
        "at": item["updated_at"],
        "from": "PROCESSING",
        "to": "FAILED",
        "by": "alice",
        "reason": "reset: host died",
    }
    assert "reset to FAILED by alice" in item["error_message"] and "lock_expires_at" not in item
    assert item["process_exit_confirmed"] is False, "nothing proved the old owner's processes gone"
    assert raw(ctx, live) == before[live]

    forced = reset_stuck(
        ctx, ResetRequest(by="bob", to=Status.PENDING, force=True, older_than=timedelta(minutes=1))
    )
    assert [(i.job.job_id, i.outcome) for i in forced.items] == [(live, "reset")]
    item = raw(ctx, live)
    assert item["status"] == "PENDING" and item["started_at"] == "" and item["reset_by"] == "bob"
    assert raw(ctx, young) == before[young]  # younger than --older-than
    with pytest.raises(Invalid, match="older_than"):
        reset_stuck(ctx, ResetRequest(by="bob", force=True))


def test_reset_loses_to_a_heartbeat_in_between(ctx: OpsContext) -> None:
    """The guard is the lease and version as read: an owner that renewed since then keeps its job."""
    ctx.queue.enqueue({"job_id": "beat", "conversation_id": "1"})
    [job] = ctx.queue.find_candidates()
    claim = ctx.queue.claim(job, "w1", 0.2)
    assert isinstance(claim, Claim)
    time.sleep(0.3)
    observed = ctx.queue.get("beat")
    assert observed is not None and not isinstance(ctx.queue.heartbeat(claim, 30), Lost)
    assert not ctx.queue.reset(observed, Status.FAILED, by="alice", reason="stuck")
    fresh = ctx.queue.get("beat")
    assert fresh is not None and ctx.queue.reset(fresh, Status.FAILED, by="alice", reason="x", force=True)
    assert isinstance(ctx.queue.heartbeat(claim, 30), Lost)  # the old owner's fence now fails


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(end_after_seconds=3600, cancel_delay_seconds=3600) as server:
        yield server


def test_stop_batch_cycle_cancels_checkers_and_the_batch(
    ctx: OpsContext, fake_anthropic: FakeAnthropic
) -> None:
    client = BatchClient("test-key", fake_anthropic.base_url)
    params = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    batch = client.create([{"custom_id": "a", "params": params}])
    parent = put(ctx, records.server_narrative("r1", 4, status="COMPLETED", batch_id=batch.id))
    checker = put(ctx, checker_of(parent, batch.id, next_check_at=ago(-600)))
    dry = stop_batch_cycle(ctx, checker, by="alice", dry_run=True)
    assert [(s.role, s.outcome) for s in dry.jobs] == [
        ("parent", "already COMPLETED"),
        ("checker", "would cancel"),
    ]
    assert raw(ctx, checker)["status"] == "AWAITING_RECHECK"

    canceller = anthropic_canceller("test-key", fake_anthropic.base_url)
    report = stop_batch_cycle(ctx, parent, by="alice", cancel_batch=canceller)
    assert report.parent_id == parent
    assert "cancel requested" in report.jobs[1].outcome
    assert [(b.batch_id, b.outcome) for b in report.batches] == [
        (batch.id, "cancel sent; the batch is canceling")
    ]
    item = raw(ctx, checker)
    assert item["cancel_requested"] == "batch check cycle stopped (requested by alice)"
    assert item["next_check_at"] <= format_timestamp(utcnow())  # due now: the checker comes and ends it
    with pytest.raises(Invalid, match="FULL_PIPELINE"):
        stop_batch_cycle(ctx, put(ctx, records.server_full_pipeline(1)), by="alice")


def test_reports_show_serves_the_newest_run(ctx: OpsContext) -> None:
    def section(job_id: str, name: str, stamp: str) -> ReportSection:
        data = '{"id": "s", "title": "T ' + job_id + '", "paragraphs": [{}, {}]}'
        return ReportSection("r1", name, "claude-x", stamp, data, job_id, "msgbatch_1")

    ctx.reports.put(section("old", "groups", "2026-01-01T00:00:00.000Z"))
    ctx.reports.put(section("new", "groups", "2026-01-02T00:00:00.000Z"))
    ctx.reports.put(section("new", "layer0_0", "2026-01-02T00:00:00.000Z"))
    view = show_report(ctx, "r1")
    assert view.run == "new" and [r.job_id for r in view.runs] == ["new", "old"]
    assert [(s.section, s.title, s.paragraphs) for s in view.sections] == [
        ("groups", "T new", 2),
        ("layer0_0", "T new", 2),
    ]
    assert show_report(ctx, "r1", run="old").sections[0].title == "T old"
    with pytest.raises(NotFound):
        show_report(ctx, "r2")


def test_doctor_finds_every_broken_invariant(ctx: OpsContext) -> None:
    assert doctor(ctx).problems == 0
    put(ctx, processing("stuck", lease_in=-60))
    put(ctx, records.server_full_pipeline(1, job_id="late", created_at=ago(7200)))
    put(ctx, records.server_full_pipeline(1, job_id="lower", status="pending"))
    put(ctx, records.server_full_pipeline(1, job_id="spaced", status=" PENDING"))
    undated = records.server_full_pipeline(1, job_id="undated")
    del undated["created_at"]
    put(ctx, undated)
    put(ctx, records.server_full_pipeline(1, job_id="retries", retry_count=5, max_retries=3))
    put(
        ctx,
        records.hand_made(
            "orphan", 1, job_type="AWAITING_NARRATIVE_BATCH", batch_job_id="gone", batch_id="msgbatch_x"
        ),
    )
    put(ctx, records.server_narrative("r5", 5, job_id="lonely", status="COMPLETED"))
    nameless = records.server_full_pipeline(1, job_id="nameless", status="Failed")
    del nameless["worker_id"]
    put(ctx, nameless)

    report = doctor(ctx, DoctorOptions(pending_sla=timedelta(hours=1)))
    found = {(f.check, f.job_id) for f in report.findings if f.severity == "problem"}
    assert found == {
        ("leases", "stuck"),
        ("pending-sla", "late"),
        ("invisible", "lower"),
        ("invisible", "spaced"),
        ("invisible", "undated"),
        ("records", "retries"),
        ("checkers", "orphan"),
        ("parents", "lonely"),
    }
    scanned = doctor(ctx, DoctorOptions(scan=True))
    assert {f.job_id for f in scanned.findings if f.check == "scan"} == {
        "lower",
        "spaced",
        "undated",
        "nameless",
    }


def test_stats_counts_per_status_and_type(ctx: OpsContext) -> None:
    put(ctx, records.server_full_pipeline(1, created_at=ago(300)))
    put(ctx, records.server_narrative("r", 1, created_at=ago(60)))
    put(ctx, records.server_full_pipeline(1, status="COMPLETED", completed_at=ago(30)))
    put(ctx, records.server_full_pipeline(1, status="FAILED", completed_at=ago(3600), created_at=ago(4000)))
    put(ctx, records.server_full_pipeline(1, status="COMPLETED", created_at=ago(3 * 86400)))
    result = stats(ctx, window=timedelta(minutes=10))
    counts = {c.status: (c.count, c.by_type) for c in result.statuses}
    assert counts["PENDING"] == (2, {"FULL_PIPELINE": 1, "CREATE_NARRATIVE_BATCH": 1})
    assert counts["COMPLETED"] == (1, {"FULL_PIPELINE": 1})  # the 3-day-old one is outside the lookback
    assert counts["FAILED"][0] == 1
    assert result.finished_in_window == {"COMPLETED": 1, "FAILED": 0, "CANCELLED": 0}
    assert result.throughput_per_minute == pytest.approx(0.1)
    assert result.oldest_pending_age_seconds is not None and result.oldest_pending_age_seconds >= 299
    sampled = stats(ctx, max_items=1)
    pending = next(c for c in sampled.statuses if c.status == "PENDING")
    assert pending.sampled and pending.count == 2
