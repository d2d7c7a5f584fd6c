"""Narrative reports end to end on real servers: moto's DynamoDB server, embedded PostgreSQL seeded
with a generated Polis conversation and analysed by the built-in pipeline, and the loopback Anthropic
fake driven by the real SDK. Faults, crashes and re-runs never lose a result or pay for a second batch."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from datetime import timedelta
from typing import Any

import anthropic
import psycopg2

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.fake_anthropic import BATCHES_PATH, FakeAnthropic
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import create_narrative_batch
from delphi_jobs.handlers.narrative_services import NarrativeServices, Submission
from delphi_jobs.model import Job, format_timestamp, utcnow
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import Status
from delphi_jobs.store import Lost, open_store
from tests import narrative_env
from tests.narrative_env import (
    GLOBALS,
    checker_of,
    drain,
    due_now,
    narrative_fixtures,
    poller_extra,
    run_once,
)
from tests.pollers import poller_env, start_poller, wait_for

ZID = 4242
REPORT = "r_e2e_report"
MODEL = "claude-test-model"
PIPELINE_JOB = "5b0e4a52-8c1d-4f3e-a6b7-0c9d8e7f6a5b"


analysed_db, env = narrative_fixtures(ZID, REPORT, model=MODEL, pipeline_job=PIPELINE_JOB)


def submit_narrative(settings: Settings, **changes: Any) -> str:
    return narrative_env.submit_narrative(settings, ZID, REPORT, MODEL, **changes)


def probe_report(env: Settings, queue: JobQueue) -> tuple[Job, int]:
    """One report of the sample conversation run to the end, and how many batch requests it made (a
    recovery recognises a batch by that size)."""
    probe_id = submit_narrative(env)
    drain(env, queue, [probe_id])
    probe = queue.get(probe_id)
    assert probe is not None
    return probe, len(json.loads(str(probe.item["section_map"])))


def narrate(env: Settings, queue: JobQueue) -> tuple[str, Job]:
    """Submit a server narrative record, run it and its checker to the end; (parent id, checker)."""
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    checker_id = checker_of(queue, parent_id).job_id
    drain(env, queue, [checker_id])
    checker = queue.get(checker_id)
    assert checker is not None
    return parent_id, checker


def test_server_narrative_record_end_to_end(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED"
    assert parent.batch_id and parent.batch_id.startswith("msgbatch_") and parent.model == MODEL
    checker_id = str(parent.job_results["checker_job_id"])
    assert checker_id.startswith(f"batch_check_{parent_id}_")
    drain(env, queue, [checker_id])
    checker = queue.get(checker_id)
    assert checker is not None and checker.status == "COMPLETED", checker.error_message
    assert checker.batch_job_id == parent_id and checker.batch_id == parent.batch_id
    assert fake.create_calls == 1

    # The Polis server's read path: query by report_id, newest run, split rid_section_model on '#'.
    sections = NarrativeReportStore(make_client(env), env.reports_table).latest_run(REPORT)
    assert any(
        e.message.startswith(f"stored {len(sections)} sections for report {REPORT}") for e in checker.logs
    )
    assert set(sections) >= GLOBALS
    topic_sections = set(sections) - GLOBALS
    assert topic_sections, "one section per topic"
    section_map = json.loads(str(parent.item["section_map"]))
    assert set(sections) == set(section_map.values())
    for name, item in sections.items():
        assert item["model"] == MODEL and item["job_id"] == parent_id and item["batch_id"] == parent.batch_id
        narrative = json.loads(item["report_data"])
        assert narrative["paragraphs"] and narrative["title"]
        assert item["rid_section_model"] == f"{REPORT}#{name}#{MODEL}"
    parent_after = queue.get(parent_id)
    assert parent_after is not None
    summary = parent_after.job_results["narrative"]
    assert summary["stored"] == len(sections) and summary["errored"] == 0


def test_reprocessing_overwrites_instead_of_duplicating(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    _, checker = narrate(env, queue)
    checker_id = checker.job_id
    store = NarrativeReportStore(make_client(env), env.reports_table)
    before = sorted(i["rid_section_model"] + i["timestamp"] for i in store.items_for_report(REPORT))
    assert before
    # Re-run the same checker's work as a reclaimed run would: a fresh checker on the same batch.
    record = dict(checker.item)
    record.update(job_id=f"{checker_id}_again", status="PENDING", version=1, worker_id="none")
    record.pop("run_after", None)
    producer_records.put_raw(make_client(env), env.jobs_table, record)
    drain(env, queue, [f"{checker_id}_again"])
    after = sorted(i["rid_section_model"] + i["timestamp"] for i in store.items_for_report(REPORT))
    assert after == before


def test_results_faults_are_counted_not_lost(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.result_outcome(
        lambda cid: cid.endswith("global_uncertainty"), "errored", error_type="overloaded_error"
    )
    fake.result_outcome(lambda cid: cid.endswith("global_groups"), "expired")
    fake.refuse(lambda cid: cid.endswith(f"{PIPELINE_JOB}_0_0"))
    _, checker = narrate(env, queue)
    assert checker.status == "COMPLETED"
    results = checker.job_results
    assert (results["errored"], results["expired"], results["refused"], results["missing"]) == (1, 1, 1, 0)
    assert results["errors"] == {
        "batch_re_global_uncertainty": "overloaded_error",
        "batch_re_global_groups": "expired",
        f"{PIPELINE_JOB}_0_0": "refusal",
    }
    total = len(json.loads(str(checker.item["section_map"])))
    assert results["stored"] == total - 3 and set(results["errors"]).isdisjoint(results["sections"])


def test_malformed_line_is_counted_and_its_request_reported_missing(
    env: Settings, fake: FakeAnthropic
) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.malformed_line()
    _, checker = narrate(env, queue)
    assert checker.status == "COMPLETED"
    results = checker.job_results
    total = len(json.loads(str(checker.item["section_map"])))
    # the malformed line hid one result: it is reported missing, never silently dropped
    assert (results["malformed"], results["missing"], results["stored"]) == (1, 1, total - 1)
    assert any(e.message.startswith("malformed result line skipped") for e in checker.logs)


def test_everything_errored_fails_the_checker(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.result_outcome(lambda cid: True, "errored", error_type="invalid_request_error")
    parent_id, checker = narrate(env, queue)
    assert checker.status == "FAILED"
    assert checker.error_message and "no section stored" in checker.error_message
    parent = queue.get(parent_id)
    assert parent is not None and parent.job_results["narrative"]["stored"] == 0


def test_in_progress_batch_is_rechecked_with_growing_delay(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.end_after_seconds = 3.0  # long enough for a first check on a loaded machine
    _, checker = narrate(env, queue)
    assert checker.status == "COMPLETED"
    checks = int(checker.item["check_count"])
    assert checks >= 2, "checked while in progress, then again"
    assert checks <= 7, "delays grow: 0.1, 0.2, 0.4, 0.8, 1.6 ... not a busy loop"


def test_rate_limits_and_overload_are_retried(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.fail_next(429, retry_after=0.1, path_contains="/v1/messages/batches/msgbatch")
    fake.fail_next(529, path_contains="/v1/messages/batches/msgbatch")
    _, checker = narrate(env, queue)
    assert checker.status == "COMPLETED"


def test_create_rejected_with_500_is_retried_without_duplicate(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.fail_next(500, path_contains="/v1/messages/batches")
    parent_id = submit_narrative(env)
    run_once(env, queue, parent_id)
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "PENDING" and parent.retry_count == 1
    assert parent.error_message and "500" in parent.error_message
    assert len(fake.batches) == 0
    due_now(env, parent_id)
    drain(env, queue, [parent_id])
    assert queue.get(parent_id).status == "COMPLETED"  # type: ignore[union-attr]
    assert len(fake.batches) == 1


def test_lost_create_response_adopts_the_batch(env: Settings, fake: FakeAnthropic) -> None:
    """The create is applied but its response is lost: the next run adopts it, no second batch."""
    queue = JobQueue.for_settings(open_store(env), env)
    fake.fail_next(500, path_contains="/v1/messages/batches", after_processing=True)
    parent_id = submit_narrative(env)
    run_once(env, queue, parent_id)
    assert len(fake.batches) == 1
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "PENDING" and parent.batch_id is None
    assert parent.item.get("batch_submission")
    due_now(env, parent_id)
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED"
    assert len(fake.batches) == 1 and parent.batch_id == next(iter(fake.batches))
    assert any("adopting batch" in e.message for e in parent.logs)


def sdk_batch(fake: FakeAnthropic, requests: int) -> str:
    sdk = anthropic.Anthropic(api_key="test-key", base_url=fake.base_url)
    params = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": f"c{i}", "params": params} for i in range(requests)]
    )
    return batch.id


def _crash_with(env: Settings, queue: JobQueue, parent_id: str, state: Submission) -> None:
    """A poller that claimed the job, wrote ``state`` and died: its lease simply runs out."""
    job = queue.get(parent_id)
    assert job is not None
    claim = queue.claim(job, "dead-worker", 0.2)
    assert isinstance(claim, Claim)
    assert not isinstance(queue.heartbeat(claim, 0.2, state=state), Lost)
    time.sleep(0.4)


def test_crash_before_submit_submits_once(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    parent_id = submit_narrative(env)
    marker = {"started_at": format_timestamp(utcnow()), "requests": 99}
    _crash_with(env, queue, parent_id, Submission(batch_submission=marker))
    drain(env, queue, [parent_id])
    assert queue.get(parent_id).status == "COMPLETED"  # type: ignore[union-attr]
    assert fake.create_calls == 1


def test_crash_after_submit_hands_over_without_second_batch(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    parent_id = submit_narrative(env)
    batch_id = sdk_batch(fake, 3)
    _crash_with(env, queue, parent_id, Submission(batch_id=batch_id, model=MODEL))
    calls = fake.create_calls
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED" and parent.batch_id == batch_id
    assert fake.create_calls == calls


def test_ambiguous_interrupted_submission_fails_without_paying(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    _, requests = probe_report(env, queue)
    parent_id = submit_narrative(env)
    marker = {"started_at": format_timestamp(utcnow()), "requests": requests}
    first, second = sdk_batch(fake, requests), sdk_batch(fake, requests)
    _crash_with(env, queue, parent_id, Submission(batch_submission=marker))
    calls = fake.create_calls
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "FAILED"
    assert "not submitting another" in str(parent.error_message)
    assert first in str(parent.error_message) and second in str(parent.error_message)
    assert fake.create_calls == calls


def test_recovery_is_not_fooled_by_a_second_report_of_the_conversation(
    env: Settings, fake: FakeAnthropic
) -> None:
    """Issue 11 item 7: our poller died between creating batch X and recording it; meanwhile another
    report of the same conversation was submitted (batch Y, same size). Recovery adopts X, leaves Y to
    its job, fails nobody and pays for nothing more."""
    queue = JobQueue(open_store(env))
    _, requests = probe_report(env, queue)
    marker = {"started_at": format_timestamp(utcnow()), "requests": requests}
    lost = sdk_batch(fake, requests)  # our create, whose response never came back
    other = submit_narrative(env)
    drain(env, queue, [other])  # the second report: its batch is recorded on its job
    second = queue.get(other)
    assert second is not None and second.status == "COMPLETED" and second.batch_id
    ours = submit_narrative(env)
    _crash_with(env, queue, ours, Submission(batch_submission=marker))
    calls = fake.create_calls
    drain(env, queue, [ours])
    parent = queue.get(ours)
    assert parent is not None and parent.status == "COMPLETED", parent.error_message
    assert parent.batch_id == lost
    assert fake.create_calls == calls
    second_after = queue.get(other)
    assert second_after is not None and second_after.status == "COMPLETED"
    assert second_after.batch_id == second.batch_id


def test_a_report_waits_for_the_conversations_unrecorded_batch_and_never_adopts_it(
    env: Settings, fake: FakeAnthropic
) -> None:
    """Issue 11 item 7, the rest: report B's poller died between creating batch Y and recording it;
    report A's earlier run died while waiting in line for its turn (nothing created). A's next run
    neither adopts Y (it was the only unrecorded batch of its size: the old recovery took it) nor
    creates while Y is unrecorded: it stays in line and looks again later, spending no attempt. B's
    recovery adopts Y; then A submits its own batch. Nobody fails, nothing is paid twice."""
    queue = JobQueue.for_settings(open_store(env), env)
    probe, requests = probe_report(env, queue)
    now = format_timestamp(utcnow())
    theirs_id = submit_narrative(env)
    theirs = sdk_batch(fake, requests)
    _crash_with(env, queue, theirs_id, Submission(batch_submission={"started_at": now, "requests": requests}))
    ours_id = submit_narrative(env)
    _crash_with(env, queue, ours_id, Submission(batch_submission={"queued_at": now, "ticket": now}))
    calls = fake.create_calls

    run_once(env, queue, ours_id)
    waiting = queue.get(ours_id)
    assert waiting is not None and waiting.status == "AWAITING_RECHECK" and waiting.batch_id is None
    marker = json.loads(str(waiting.item["batch_submission"]))
    assert "started_at" not in marker and marker["ticket"] == now, "in line, with its first ticket"
    spent = waiting.retry_count  # by the dead worker's run: waiting spends no attempt
    assert spent == 1 and waiting.next_check_at is not None
    assert any(theirs_id in e.message and "waiting" in e.message for e in waiting.logs)
    assert fake.create_calls == calls

    drain(env, queue, [theirs_id])
    recovered = queue.get(theirs_id)
    assert recovered is not None and recovered.status == "COMPLETED" and recovered.batch_id == theirs
    drain(env, queue, [ours_id])
    ours = queue.get(ours_id)
    assert ours is not None and ours.status == "COMPLETED", ours.error_message
    assert ours.batch_id not in (theirs, probe.batch_id) and ours.batch_id in fake.batches
    assert fake.create_calls == calls + 1
    assert ours.retry_count == spent


def test_a_refused_create_gives_the_conversations_turn_back(env: Settings, fake: FakeAnthropic) -> None:
    """A create refused more often than the run waits out (429 six times) made no batch: the job is
    retried later with its marker removed, so another report of the conversation does not wait for it
    and its own next run does not look for a batch."""
    queue = JobQueue.for_settings(open_store(env), env)
    fake.fail_next(429, count=6, retry_after=0.01, path_contains=BATCHES_PATH)
    refused_id = submit_narrative(env)
    run_once(env, queue, refused_id)
    refused = queue.get(refused_id)
    assert refused is not None and refused.status == "PENDING" and refused.retry_count == 1
    assert "batch_submission" not in refused.item and fake.create_calls == 6 and not fake.batches
    other_id = submit_narrative(env)
    run_once(env, queue, other_id)
    other = queue.get(other_id)
    assert other is not None and other.status == "COMPLETED" and len(fake.batches) == 1


def test_who_holds_a_conversations_turn_and_who_waits_in_line(env: Settings) -> None:
    """What another report of the conversation sees: a started marker without a batch id holds the
    turn whatever its job's status, until TURN_HORIZON; a queued marker is a place in line while its
    job waits (AWAITING_RECHECK, or PROCESSING under a live lease) and for QUEUE_HORIZON; the ticket
    orders the line. The index's view and the consistent reads agree."""
    services = NarrativeServices.from_settings(env)
    client = make_client(env)
    now = utcnow()

    def at(minutes: float) -> str:
        return format_timestamp(now - timedelta(minutes=minutes))

    def put(status: str, marker: dict[str, Any] | None, **changes: Any) -> str:
        if marker:
            changes["batch_submission"] = json.dumps(marker)
        record = producer_records.server_narrative(REPORT, ZID, model=MODEL, status=status, **changes)
        producer_records.put_raw(client, env.jobs_table, record)
        return str(record["job_id"])

    live, dead = {"lock_expires_at": at(-1)}, {"lock_expires_at": at(1)}
    ours = put("PROCESSING", {"queued_at": at(0), "ticket": at(0)}, **live)
    holding = {
        put("PROCESSING", {"started_at": at(0), "requests": 7, "ticket": at(1)}, **live),
        put("PENDING", {"started_at": at(0), "requests": 7}),  # died after starting its create
        put("FAILED", {"started_at": at(6), "requests": 7}),  # its batch may exist, unrecorded
    }
    first = put("AWAITING_RECHECK", {"queued_at": at(0.5), "ticket": at(20)})
    waiting = {first, put("PROCESSING", {"queued_at": at(0), "ticket": at(0.1)}, **live)}
    put("PROCESSING", {"queued_at": at(0), "ticket": at(0)}, **dead)  # its poller died
    put("FAILED", {"queued_at": at(0)})
    put("PAUSED", {"queued_at": at(0)})
    put("AWAITING_RECHECK", {"queued_at": at(3), "ticket": at(3)})  # stopped looking
    put("PENDING", {"started_at": at(8), "requests": 7})  # beyond the horizon
    put("COMPLETED", {"started_at": at(0), "requests": 7}, batch_id="msgbatch_recorded")
    put("PROCESSING", {"started_at": at(0), "requests": 7}, batch_id="msgbatch_recorded_too", **live)
    put("PENDING", None)
    put("PROCESSING", {"started_at": at(0), "requests": 7}, conversation_id=str(ZID + 1), **live)
    job = JobQueue(open_store(env)).get(ours)
    assert job is not None
    for consistent in (False, True):
        found = services.contenders(
            job,
            started_since=now - create_narrative_batch.TURN_HORIZON,
            queued_since=now - create_narrative_batch.QUEUE_HORIZON,
            now=now,
            consistent=consistent,
        )
        assert {c.job_id for c in found if c.started_at is not None} == holding
        assert {c.job_id for c in found if c.started_at is None} == waiting
        assert min(found, key=lambda c: c.ticket).job_id == first


def test_kill_9_during_create_then_recovery_pays_once(
    env: Settings, fake: FakeAnthropic, tmp_path: Any
) -> None:
    """A real poller dies (kill -9) while its create is in flight; the next poller adopts the batch."""
    queue = JobQueue.for_settings(open_store(env), env)
    fake.slow_next_create(3.0)
    parent_id = submit_narrative(env)
    # DELPHI_RETRY_BASE_SECONDS: the lost worker's job is rescued soon after its lease
    env_vars = poller_env(env, tmp_path, **poller_extra(env), DELPHI_RETRY_BASE_SECONDS="0.2")
    first = start_poller(env_vars, "--lease-seconds", "1.5", log=tmp_path / "first.log")
    wait_for(lambda: fake.create_calls == 1, 30, "the create to reach the API")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    time.sleep(3.5)  # the slow create completes server-side: a paid batch nobody recorded
    assert len(fake.batches) == 1
    second = start_poller(env_vars, "--lease-seconds", "1.5", "--max-jobs", "2", log=tmp_path / "second.log")
    assert second.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()[-3000:]
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED"
    checker = checker_of(queue, parent_id)
    assert checker.status == "COMPLETED", checker.error_message
    assert fake.create_calls == 1 and len(fake.batches) == 1


def test_missing_api_key_or_model_or_math_fails_unsubmitted(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    no_key = dataclasses.replace(env, anthropic_api_key=None)
    job_id = submit_narrative(env)
    drain(no_key, queue, [job_id])
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED" and "ANTHROPIC_API_KEY" in str(job.error_message)

    record = producer_records.server_narrative(REPORT, ZID, model="")
    producer_records.put_raw(make_client(env), env.jobs_table, record)
    drain(dataclasses.replace(env, anthropic_model=None), queue, [record["job_id"]])
    job = queue.get(record["job_id"])
    assert job is not None and job.status == "FAILED" and "ANTHROPIC_MODEL" in str(job.error_message)

    conn = psycopg2.connect(str(env.database_url))
    with conn.cursor() as cur:  # a conversation the math worker has not analysed yet
        cur.execute("INSERT INTO conversations (zid, topic) VALUES (999, 'new') ON CONFLICT DO NOTHING")
    conn.commit()
    conn.close()
    record = producer_records.server_narrative("r_other", 999, model=MODEL)
    producer_records.put_raw(make_client(env), env.jobs_table, record)
    drain(env, queue, [record["job_id"]])
    job = queue.get(record["job_id"])
    assert job is not None and job.status == "FAILED"
    assert job.error_message == "no math results for conversation 999"
    assert fake.create_calls == 0


def test_cancel_waiting_checker_cancels_the_batch(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.end_after_seconds = 60
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    checker_id = checker_of(queue, parent_id).job_id
    wait_for(lambda: queue.find_candidates(), 10, "the checker to become due")
    run_once(env, queue, checker_id)
    assert queue.get(checker_id).status == Status.AWAITING_RECHECK  # type: ignore[union-attr]
    assert queue.cancel(checker_id, "report withdrawn").requested
    drain(env, queue, [checker_id])
    checker = queue.get(checker_id)
    assert checker is not None and checker.status == "CANCELLED"
    batch = fake.batches[str(checker.batch_id)]
    assert batch.processing_status in ("canceling", "ended")


def test_stream_cut_between_results_is_finished_later_without_duplicates(
    env: Settings, fake: FakeAnthropic
) -> None:
    """The results stream breaks halfway (as if the checker died between results): the checker
    re-checks, processes the batch again, and every section is stored exactly once."""
    queue = JobQueue.for_settings(open_store(env), env)
    fake.cut_results()
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    checker = checker_of(queue, parent_id)
    wait_for(lambda: queue.find_candidates(), 10, "the checker to become due")
    run_once(env, queue, checker.job_id)
    after_cut = queue.get(checker.job_id)
    assert after_cut is not None and after_cut.status == Status.AWAITING_RECHECK
    assert any("stream broken" in e.message for e in after_cut.logs)
    drain(env, queue, [checker.job_id])
    done = queue.get(checker.job_id)
    assert done is not None and done.status == "COMPLETED"
    items = list(NarrativeReportStore(make_client(env), env.reports_table).items_for_report(REPORT))
    keys = [i["rid_section_model"] for i in items]
    assert len(keys) == len(set(keys)) == done.job_results["stored"]


def test_adopted_foreign_batch_is_never_stored_under_our_report(env: Settings, fake: FakeAnthropic) -> None:
    """Recovery adopted a batch of the same size that was someone else's: its results do not match our
    section map, so nothing is stored under our report and the checker fails, saying why."""
    queue = JobQueue.for_settings(open_store(env), env)
    probe_id, _ = narrate(env, queue)
    probe = queue.get(probe_id)
    assert probe is not None
    requests = len(json.loads(str(probe.item["section_map"])))
    anthropic.Anthropic(api_key="test-key", base_url=fake.base_url).messages.batches.delete(
        str(probe.batch_id)
    )
    store = NarrativeReportStore(make_client(env), env.reports_table)
    before = len(list(store.items_for_report(REPORT)))

    parent_id = submit_narrative(env)
    marker = {"started_at": format_timestamp(utcnow()), "requests": requests}
    foreign = sdk_batch(fake, requests)
    _crash_with(env, queue, parent_id, Submission(batch_submission=marker))
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None and parent.batch_id == foreign
    checker = checker_of(queue, parent_id)
    drain(env, queue, [checker.job_id])
    checker = checker_of(queue, parent_id)
    assert checker.status == "FAILED" and checker.job_results["foreign"] == requests
    assert len(list(store.items_for_report(REPORT))) == before


def test_cancel_pending_checker_cancels_its_batch(env: Settings, fake: FakeAnthropic) -> None:
    queue = JobQueue.for_settings(open_store(env), env)
    fake.end_after_seconds = 60
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    checker = checker_of(queue, parent_id)
    assert checker.status == "PENDING"
    assert queue.cancel(checker.job_id, "wrong report").requested
    drain(env, queue, [checker.job_id])
    done = queue.get(checker.job_id)
    assert done is not None and done.status == "CANCELLED"
    assert fake.batches[str(checker.batch_id)].processing_status in ("canceling", "ended")


def test_checker_gives_up_after_30_hours(env: Settings) -> None:
    """A batch still in progress 31 hours after its creation ends the checker FAILED."""
    day_and_more = 31 * 3600
    with FakeAnthropic(end_after_seconds=48 * 3600, clock=lambda: time.time() - day_and_more) as old:
        settings = dataclasses.replace(env, anthropic_base_url=old.base_url)
        queue = JobQueue(open_store(settings))
        _, checker = narrate(settings, queue)
    assert checker.status == "FAILED"
    assert "gave up" in str(checker.error_message) and "in_progress" in str(checker.error_message)


def test_recheck_delay_grows_to_ten_minutes(env: Settings) -> None:
    services = NarrativeServices.from_settings(dataclasses.replace(env, batch_recheck_seconds=60))
    assert [services.recheck_delay(n) for n in range(6)] == [60, 120, 240, 480, 600, 600]
