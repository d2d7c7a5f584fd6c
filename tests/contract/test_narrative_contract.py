"""Narrative records exactly as the Polis server, the original narrative script and the Delphi CLI
write them, run by a real poller against real servers (moto, embedded PostgreSQL, the Anthropic fake
through the real SDK); the results read back the way the Polis server reads them."""

from __future__ import annotations

import dataclasses
from typing import Any

import anthropic

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import Job, format_timestamp
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.store import open_store
from delphi_jobs.topic_tables import TopicStore
from tests.narrative_env import GLOBALS, checker_of, drain, narrative_fixtures

ZID = 5150
REPORT = "r4tykwac8thvzv35jrn53"
OPERATOR_MODEL = "claude-sonnet-4-5-20250929"
PIPELINE_JOB = "0f8c2b1e-5d7a-4c3b-9e2f-1a2b3c4d5e6f"


analysed_db, env = narrative_fixtures(ZID, REPORT, model=OPERATOR_MODEL, pipeline_job=PIPELINE_JOB, seed=11)


def queue_for(settings: Settings) -> JobQueue:
    return JobQueue.for_settings(open_store(settings), settings)


def submit(settings: Settings, record: dict[str, Any]) -> str:
    producer_records.put_raw(make_client(settings), settings.jobs_table, record)
    return str(record["job_id"])


def narrate(settings: Settings, record: dict[str, Any]) -> tuple[Job, Job]:
    """Run a CREATE record and then its checker to the end; returns (parent, checker) as stored."""
    queue = queue_for(settings)
    parent_id = submit(settings, record)
    drain(settings, queue, [parent_id])
    checker = checker_of(queue, parent_id)
    drain(settings, queue, [checker.job_id])
    parent, checker_now = queue.get(parent_id), queue.get(checker.job_id)
    assert parent is not None and checker_now is not None
    return parent, checker_now


def requested_models(fake: FakeAnthropic) -> set[str]:
    return {str(r.params["model"]) for batch in fake.batches.values() for r in batch.requests}


def test_ui_narrative_runs_on_the_operators_model(env: Settings, fake: FakeAnthropic) -> None:
    """The report client always asks for claude-opus-4-20250514; ANTHROPIC_MODEL decides (and pays)."""
    parent, checker = narrate(env, producer_records.server_narrative(REPORT, ZID))
    assert parent.status == "COMPLETED" and checker.status == "COMPLETED", checker.error_message
    assert requested_models(fake) == {OPERATOR_MODEL} and parent.model == OPERATOR_MODEL
    assert any(
        e.message == f"model {producer_records.UI_MODEL} is not allowed (DELPHI_ALLOWED_MODELS); "
        f"using {OPERATOR_MODEL}"
        for e in parent.logs
    )
    # The Polis server's read path, and the names the report client looks sections up by.
    sections = NarrativeReportStore(make_client(env), env.reports_table).latest_run(REPORT)
    topics = TopicStore(make_client(env), env).load(str(ZID)).names
    assert topics and all(t.topic_key.startswith(f"{PIPELINE_JOB}#") for t in topics)
    client_topic_keys = {t.topic_key.replace("#", "_") for t in topics}
    assert set(sections) - GLOBALS <= client_topic_keys and set(sections) >= GLOBALS
    [batch] = fake.batches.values()
    assert batch.ended_at is not None
    for item in sections.values():
        assert item["model"] == OPERATOR_MODEL and item["job_id"] == parent.job_id
        assert item["timestamp"] == format_timestamp(batch.ended_at), "Generated: when the batch ended"
        assert "errors" not in item, "an item with errors shows as 'not enough data'"
    assert parent.job_results["result_type"] == "SUCCESS" and parent.error_message is None
    assert parent.job_results["narrative"]["stored"] == len(sections)


def test_an_allowed_model_is_honoured(env: Settings, fake: FakeAnthropic) -> None:
    allowed = dataclasses.replace(env, allowed_models=(producer_records.UI_MODEL,))
    parent, checker = narrate(allowed, producer_records.server_narrative(REPORT, ZID))
    assert checker.status == "COMPLETED" and parent.model == producer_records.UI_MODEL
    assert requested_models(fake) == {producer_records.UI_MODEL}


def test_no_usable_model_fails_before_anything_is_submitted(env: Settings, fake: FakeAnthropic) -> None:
    nothing = dataclasses.replace(env, anthropic_model=None)
    queue = queue_for(nothing)
    job_id = submit(nothing, producer_records.server_narrative(REPORT, ZID))
    drain(nothing, queue, [job_id])
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED"
    assert job.error_message == (
        f"invalid job, not run: job_config.model: '{producer_records.UI_MODEL}' is not in "
        "DELPHI_ALLOWED_MODELS and ANTHROPIC_MODEL is not set; nothing was submitted"
    )
    assert fake.create_calls == 0 and job.item["process_exit_confirmed"] is True


def test_the_parent_alone_tells_the_narratives_outcome(env: Settings, fake: FakeAnthropic) -> None:
    """The parent stays COMPLETED (the hand-off); job_results and error_message say what came of it."""
    fake.result_outcome(lambda cid: True, "errored", error_type="invalid_request_error")
    parent, checker = narrate(env, producer_records.server_narrative(REPORT, ZID))
    total = int(checker.job_results["errored"])
    assert checker.status == "FAILED" and total > 0
    assert parent.status == "COMPLETED" and parent.job_results["result_type"] == "FAILURE"
    assert parent.error_message == f"{total} of {total} batch requests failed ({total} errored)"
    assert parent.job_results["narrative"]["outcome"] == "failure"
    assert NarrativeReportStore(make_client(env), env.reports_table).latest_run(REPORT) == {}

    fake.clear_faults()
    fake.result_outcome(lambda cid: cid.endswith("_global_uncertainty"), "expired")
    parent, checker = narrate(env, producer_records.server_narrative(REPORT, ZID))
    assert checker.status == "COMPLETED" and parent.job_results["result_type"] == "PARTIAL"
    assert parent.error_message is None and parent.job_results["narrative"]["expired"] == 1


def test_the_original_checker_row_is_processed(env: Settings, fake: FakeAnthropic) -> None:
    """A batch submitted by the original narrative script: its checker row (no worker_id, naive
    timestamps, no section map) and its parent as the original poller left it."""
    parent = producer_records.server_narrative(REPORT, ZID, status="COMPLETED", model=OPERATOR_MODEL)
    parent_id = submit(env, parent)
    sdk = anthropic.Anthropic(api_key="test-key", base_url=fake.base_url)
    params = {"model": OPERATOR_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    sections = ["batch_re_global_groups", f"{PIPELINE_JOB}_0_1"]
    batch = sdk.messages.batches.create(
        requests=[{"custom_id": f"{ZID}_{s}", "params": params} for s in sections]  # type: ignore[misc]
    )
    checker = producer_records.original_checker(parent_id, batch.id, ZID, REPORT)
    assert "worker_id" not in checker and "T" in checker["created_at"] and "Z" not in checker["created_at"]
    queue = queue_for(env)
    drain(env, queue, [submit(env, checker)])
    done = queue.get(checker["job_id"])
    assert done is not None and done.status == "COMPLETED", done.error_message
    stored = NarrativeReportStore(make_client(env), env.reports_table).latest_run(REPORT)
    assert set(stored) == set(sections) and all(i["job_id"] == parent_id for i in stored.values())
    told = queue.get(parent_id)
    assert told is not None and told.job_results["result_type"] == "SUCCESS"


def test_a_cli_narrative_without_a_top_level_report_id_stores_under_its_nested_one(
    env: Settings, fake: FakeAnthropic
) -> None:
    record = producer_records.cli_job(ZID, "CREATE_NARRATIVE_BATCH", model=OPERATOR_MODEL, report_id=REPORT)
    assert "report_id" not in record
    parent, checker = narrate(env, record)
    assert checker.status == "COMPLETED" and checker.item["report_id"] == REPORT
    stored = NarrativeReportStore(make_client(env), env.reports_table).latest_run(REPORT)
    assert stored and all(i["job_id"] == parent.job_id for i in stored.values())


def test_legacy_statuses_cancel_a_waiting_checker_as_failed(env: Settings, fake: FakeAnthropic) -> None:
    """Under DELPHI_LEGACY_STATUSES no row is left CANCELLED: the guard releases the scope only once
    every descendant is COMPLETED or FAILED and a FAILED root confirms its process exit."""
    legacy = dataclasses.replace(env, legacy_statuses=True)
    fake.end_after_seconds = 60
    queue = queue_for(legacy)
    parent_id = submit(legacy, producer_records.server_narrative(REPORT, ZID))
    drain(legacy, queue, [parent_id])
    checker = checker_of(queue, parent_id)
    assert queue.cancel(checker.job_id, "report withdrawn").requested
    drain(legacy, queue, [checker.job_id])
    cancelled = queue.get(checker.job_id)
    assert cancelled is not None and cancelled.status == "FAILED"
    assert cancelled.job_results["result_type"] == "CANCELLED"
    assert cancelled.item["process_exit_confirmed"] is True
    [batch] = fake.batches.values()
    assert batch.cancel_initiated_at is not None, "the paid batch was cancelled too"
    told = queue.get(parent_id)
    assert told is not None and told.status == "COMPLETED" and told.job_results["result_type"] == "CANCELLED"
    assert told.error_message is not None and told.error_message.startswith(
        "narrative cancelled: report withdrawn"
    )
