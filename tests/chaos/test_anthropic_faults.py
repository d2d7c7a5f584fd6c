"""Anthropic faults through the loopback fake, against DynamoDB Local and embedded PostgreSQL, with the
real SDK: 429/529/500 storms, slow responses, a results stream cut mid-body, expired batches. Each has
a documented outcome (docs/reliability.md, docs/narrative.md); none loses a result, pays for a second
batch, or fails a report that could still succeed. Two reports of one conversation recovering at once
are in test_crash_narrative.py."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools.fake_anthropic import BATCHES_PATH, FakeAnthropic
from delphi_jobs.model import Job
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests import narrative_env
from tests.chaos.ledger import report_problem
from tests.narrative_env import checker_of, drain, due_now, narrative_fixtures, run_once

pytestmark = pytest.mark.chaos

ZID = 4444
REPORT = "r_faults_report"
MODEL = "claude-faults-model"
DAY = 24 * 3600

analysed_db, env = narrative_fixtures(
    ZID, REPORT, model=MODEL, pipeline_job="2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", tables="ddb"
)


def submit_narrative(settings: Settings, **changes: Any) -> str:
    return narrative_env.submit_narrative(settings, ZID, REPORT, MODEL, **changes)


def assert_whole(settings: Settings, parent: Job) -> None:
    """Every planned section stored exactly once."""
    assert report_problem(settings, str(parent.report_id), parent.item["section_map"]) is None


def finished_report(settings: Settings, queue: JobQueue, parent_id: str) -> tuple[Job, Job]:
    """Run the parent and then its checker to the end; both as they ended."""
    drain(settings, queue, [parent_id])
    checker_id = checker_of(queue, parent_id).job_id
    drain(settings, queue, [checker_id])
    parent, checker = queue.get(parent_id), queue.get(checker_id)
    assert parent is not None and checker is not None
    return parent, checker


def test_a_storm_of_refused_creates_is_waited_out_in_the_same_run(env: Settings, fake: FakeAnthropic) -> None:
    """429 and 529 mean the API refused the create: nothing was made, so it is safe to send again. The
    run waits them out (retry-after honoured) instead of spending the job's attempts and backoff."""
    queue = JobQueue(open_store(env))
    fake.fail_next(429, count=3, retry_after=0.05, path_contains=BATCHES_PATH)
    fake.fail_next(529, count=2, path_contains=BATCHES_PATH)
    parent_id = submit_narrative(env)
    run_once(env, queue, parent_id)
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED", parent.error_message
    assert parent.retry_count == 0, "no attempt spent on a refusal"
    assert fake.create_calls == 6 and len(fake.batches) == 1
    _, checker = finished_report(env, queue, parent_id)
    assert checker.status == "COMPLETED"
    assert_whole(env, parent)


def test_an_ambiguous_500_on_create_is_retried_by_the_job_and_pays_once(
    env: Settings, fake: FakeAnthropic
) -> None:
    """A 500 may come after the batch was made, so the run does not send the create again: the job is
    retried with backoff, and its next run looks for the batch before submitting (here: none)."""
    queue = JobQueue(open_store(env))
    fake.fail_next(500, count=1, path_contains=BATCHES_PATH)
    parent_id = submit_narrative(env)
    run_once(env, queue, parent_id)
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "PENDING" and parent.retry_count == 1
    assert len(fake.batches) == 0
    fake.fail_next(500, count=2, path_contains=BATCHES_PATH)  # the recovery's listing, retried by the SDK
    due_now(env, parent_id)
    parent, checker = finished_report(env, queue, parent_id)
    assert (parent.status, checker.status) == ("COMPLETED", "COMPLETED")
    assert len(fake.batches) == 1 and parent.batch_id == next(iter(fake.batches))
    assert_whole(env, parent)


def test_a_checker_weathers_storms_and_a_cut_stream(env: Settings, fake: FakeAnthropic) -> None:
    """529s on retrieve, 500s on the results download, then the download cut mid-body after some
    sections were stored: the checker re-checks each time (no attempt spent, no failure) and in the
    end every section is stored exactly once."""
    queue = JobQueue(open_store(env))
    parent_id = submit_narrative(env)
    drain(env, queue, [parent_id])
    parent = queue.get(parent_id)
    assert parent is not None
    batch = str(parent.batch_id)
    fake.fail_next(529, count=4, path_contains=f"{BATCHES_PATH}/{batch}")
    fake.fail_next(500, count=3, path_contains="/results")
    fake.cut_results(batch)
    checker_id = checker_of(queue, parent_id).job_id
    drain(env, queue, [checker_id])
    checker = queue.get(checker_id)
    assert checker is not None and checker.status == "COMPLETED", checker.error_message
    assert int(checker.item["check_count"]) >= 2, "it re-checked"
    assert any("stream broken" in entry.message for entry in checker.logs)
    assert fake.create_calls == 1 and len(fake.batches) == 1
    assert_whole(env, parent)


def test_slow_responses_keep_the_lease(env: Settings, fake: FakeAnthropic) -> None:
    """A create answered after 1.5 lease renewals' worth of time: the lease is renewed meanwhile, the
    batch is recorded once, nothing is run twice."""
    queue = JobQueue(open_store(env))
    fake.slow_next_create(env.lease_seconds * 0.6)
    parent_id = submit_narrative(env)
    started = time.monotonic()
    run_once(env, queue, parent_id)
    assert time.monotonic() - started >= env.lease_seconds * 0.6
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED" and parent.reclaim_count == 0
    _, checker = finished_report(env, queue, parent_id)
    assert checker.status == "COMPLETED" and fake.create_calls == 1
    assert_whole(env, parent)


def test_an_expired_batch_fails_its_checker_saying_so(env: Settings) -> None:
    """A batch that Anthropic ended after 24 hours with every request expired: nothing to store, the
    checker ends FAILED naming the count, and the parent's summary says the same. No new batch is paid
    for behind the operator's back: retrying the report is their decision."""
    later = [0.0]
    with FakeAnthropic(end_after_seconds=DAY, clock=lambda: time.time() + later[0]) as fake:
        fake.result_outcome(lambda custom_id: True, "expired")
        aged = dataclasses.replace(env, anthropic_base_url=fake.base_url)
        queue = JobQueue(open_store(aged))
        parent_id = submit_narrative(aged)
        drain(aged, queue, [parent_id])
        later[0] = DAY + 60  # a day passes at Anthropic
        checker_id = checker_of(queue, parent_id).job_id
        drain(aged, queue, [checker_id])
        assert fake.create_calls == 1 and len(fake.batches) == 1
    parent, checker = queue.get(parent_id), queue.get(checker_id)
    assert parent is not None and checker is not None
    requests = len(json.loads(str(parent.item["section_map"])))
    assert checker.status == "FAILED"
    expected = f"batch {parent.batch_id} ended with no section stored ({requests} expired)"
    assert checker.error_message == expected
    assert parent.status == "COMPLETED" and parent.job_results["narrative"]["expired"] == requests
    assert report_problem(aged, REPORT, "{}") is None, "nothing stored"
