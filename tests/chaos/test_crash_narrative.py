"""The crash-consistency kit, narrative reports: real pollers on DynamoDB Local kill themselves at each
step of a report (before the paid submit, after it, between result writes) with the loopback Anthropic
fake counting creates. After restarts: one batch paid for, every section stored exactly once, every
job terminal once and never overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import TERMINAL
from delphi_jobs.store import open_store
from tests import narrative_env
from tests.chaos.ledger import account, report_problem
from tests.narrative_env import checker_of, narrative_fixtures, poller_extra
from tests.pollers import crash_at, poller_env, run_until_terminal, start_poller, wait_for

pytestmark = pytest.mark.chaos

ZID = 4343
REPORT = "r_chaos_report"
MODEL = "claude-chaos-model"
LEASE = ("--lease-seconds", "3")

analysed_db, env = narrative_fixtures(
    ZID, REPORT, model=MODEL, pipeline_job="7a1c0b2d-3e4f-4a5b-8c6d-9e0f1a2b3c4d", tables="ddb"
)


def submit_narrative(settings: Settings, report_id: str = REPORT, **changes: Any) -> str:
    return narrative_env.submit_narrative(settings, ZID, report_id, MODEL, **changes)


def terminal(queue: JobQueue, *job_ids: str) -> bool:
    return all((job := queue.get(j)) is not None and job.status in TERMINAL for j in job_ids)


def test_a_report_survives_a_kill_at_every_step(env: Settings, fake: FakeAnthropic, tmp_path: Path) -> None:
    """One report, three crashes in a row (before submit, after submit, after the third stored
    section), then a clean poller: exactly one batch created, every section stored once."""
    queue = JobQueue(open_store(env))
    parent_id = submit_narrative(env)
    pollers = poller_env(env, tmp_path, **poller_extra(env))
    killed = [crash_at(pollers, "before_submit:1", *LEASE, log=tmp_path / "before_submit.log")]
    parent = queue.get(parent_id)
    assert parent is not None and parent.item.get("batch_submission") and fake.create_calls == 0

    killed.append(crash_at(pollers, "after_submit:1", *LEASE, log=tmp_path / "after_submit.log"))
    parent = queue.get(parent_id)
    assert parent is not None and parent.batch_id is None, "died before recording the batch"
    assert fake.create_calls == 1 and len(fake.batches) == 1

    killed.append(crash_at(pollers, "between_results:3", *LEASE, log=tmp_path / "between_results.log"))
    parent = queue.get(parent_id)
    assert parent is not None and parent.status == "COMPLETED"
    assert parent.batch_id == next(iter(fake.batches)), "the paid batch was adopted, not paid again"
    checker_id = checker_of(queue, parent_id).job_id
    store = NarrativeReportStore(make_client(env), env.reports_table)
    assert len(list(store.items_for_report(parent.report_id or ""))) == 3

    run_until_terminal(pollers, lambda: terminal(queue, checker_id), *LEASE, log=tmp_path / "clean.log")
    assert fake.create_calls == 1 and len(fake.batches) == 1
    ledger = account(env, tmp_path, {parent_id: "COMPLETED", checker_id: "COMPLETED"}, killed)
    assert ledger.problems == []
    assert len(ledger.jobs[parent_id].claims) == 3 and len(ledger.jobs[checker_id].claims) == 2
    assert report_problem(env, str(parent.report_id), parent.item["section_map"]) is None
    section_map = json.loads(str(parent.item["section_map"]))
    checker = queue.get(checker_id)
    assert checker is not None and checker.job_results["stored"] == len(section_map)


def test_two_reports_of_one_conversation_die_after_submitting(
    env: Settings, fake: FakeAnthropic, tmp_path: Path
) -> None:
    """Issue 11 item 7: two pollers armed to die right after a create take two reports of one
    conversation at once. The reports take turns (the second waits while the first's batch is not
    recorded), so each dies after its own create and each recovery adopts its own batch: no report
    fails, no batch is stranded or paid twice, both reports are whole."""
    queue = JobQueue(open_store(env))
    pollers = poller_env(env, tmp_path, **poller_extra(env))
    crashing = {**pollers, "DELPHI_FAULT": "after_submit:1"}
    logs = [tmp_path / f"crash{i}.log" for i in range(2)]
    procs = [start_poller(crashing, *LEASE, log=log) for log in logs]
    try:
        for log in logs:
            wait_for(lambda log=log: log.exists() and "poller starting" in log.read_text(), 60, "a poller")
        parents = [submit_narrative(env, report_id=f"r_twin_{i}") for i in range(2)]
        for proc in procs:
            proc.wait(timeout=90)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [-9, -9]
    assert fake.create_calls == 2 and len(fake.batches) == 2
    waited = "".join(log.read_text() for log in logs)
    assert "waiting for the conversation's turn to submit" in waited, "the second report waited"

    run_until_terminal(pollers, lambda: terminal(queue, *parents), *LEASE, log=tmp_path / "recover.log")
    done = [queue.get(p) for p in parents]
    assert [job.status if job else None for job in done] == ["COMPLETED", "COMPLETED"], [
        job.error_message for job in done if job
    ]
    assert {job.batch_id for job in done if job} == set(fake.batches), "each adopted its own batch"
    checkers = [checker_of(queue, p).job_id for p in parents]
    run_until_terminal(pollers, lambda: terminal(queue, *checkers), *LEASE, log=tmp_path / "checkers.log")
    assert fake.create_calls == 2
    for parent in done:
        assert parent is not None
        assert report_problem(env, str(parent.report_id), parent.item["section_map"]) is None


def test_many_reports_of_one_conversation_each_get_their_turn(
    env: Settings, fake: FakeAnthropic, tmp_path: Path
) -> None:
    """Twelve reports of one conversation at once on two pollers of four workers: the line keeps them
    from contending for ever (a first version of the turns, without a line, livelocked in the full
    soak); each report ends COMPLETED with a batch of its own, one create each."""
    queue = JobQueue(open_store(env))
    pollers = poller_env(env, tmp_path, **poller_extra(env))
    parents = [submit_narrative(env, report_id=f"r_crowd_{i}") for i in range(12)]
    logs = [tmp_path / f"crowd{i}.log" for i in range(2)]
    procs = [start_poller(pollers, "--max-workers", "4", log=log) for log in logs]
    try:
        wait_for(lambda: terminal(queue, *parents), 120, "every report to be submitted")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    done = [queue.get(p) for p in parents]
    assert all(job is not None and job.status == "COMPLETED" for job in done), [
        job.error_message for job in done if job
    ]
    assert len({job.batch_id for job in done if job}) == 12 and fake.create_calls == 12
