"""Narrative jobs on real servers, in process: a conversation analysed by the stand-in pipeline, the
settings that point a poller at the Anthropic fake, and a loop that runs a real poller's executor until
given jobs are terminal. Shared by the end-to-end, the contract and the chaos tests."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg2
import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.devtools.pipeline.run import run_pipeline
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres
from delphi_jobs.devtools.sample_conversation import generate_sample, load_sample
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import default_registry
from delphi_jobs.model import Job
from delphi_jobs.poller import Poller
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import TERMINAL
from tests.conftest import new_polis_database

GLOBALS = {
    "batch_re_global_groups",
    "batch_re_global_group_informed_consensus",
    "batch_re_global_uncertainty",
}
"""The global sections of a server-made narrative job (``batch_report_…``): what the report client
looks up."""


def analysed_database(server: EmbeddedPostgres, zid: int, report_id: str, seed: int = 7) -> str:
    """A database of its own on ``server`` holding one generated conversation; returns its URL."""
    url = new_polis_database(server)
    conn = psycopg2.connect(url)
    sample = generate_sample(seed=seed, zid=zid, participants=80, comments=30)
    load_sample(conn, sample, report_id=report_id)
    conn.commit()
    conn.close()
    return url


def narrative_settings(
    settings: Settings,
    database_url: str,
    fake: FakeAnthropic,
    *,
    zid: int,
    report_id: str,
    model: str,
    pipeline_job: str,
    **changes: Any,
) -> Settings:
    """``settings`` for the Anthropic fake with ANTHROPIC_MODEL ``model``, after the stand-in pipeline
    wrote the conversation's topics into its tables, keyed with ``pipeline_job`` like the real
    pipeline's (and math_main: no Polis math worker runs here)."""
    ready = dataclasses.replace(
        settings,
        database_url=database_url,
        anthropic_api_key="test-key",
        anthropic_model=model,
        anthropic_base_url=fake.base_url,
        batch_recheck_seconds=0.1,
        lease_seconds=5,
        retry_base_seconds=0.0,  # a crashed run's job is reclaimable as soon as its lease runs out
        **changes,
    )
    pipeline = dataclasses.replace(ready, pipeline_job_id=pipeline_job)
    run_pipeline(pipeline, zid, report_id, write_math_main=True)
    return ready


def narrative_fixtures(
    zid: int, report_id: str, *, model: str, pipeline_job: str, seed: int = 7, tables: str = "moto_settings"
) -> tuple[Any, Any]:
    """A narrative test module's fixtures, ``analysed_db, env = narrative_fixtures(...)``:

    - ``analysed_db`` (per module): a database of its own holding one generated conversation;
    - ``env`` (per test): ``narrative_settings`` on the test's tables from the fixture ``tables``
      (moto's server; the chaos tests use DynamoDB Local).
    """

    @pytest.fixture(scope="module")
    def analysed_db(postgres_server: EmbeddedPostgres) -> str:
        return analysed_database(postgres_server, zid, report_id, seed)

    @pytest.fixture
    def env(request: pytest.FixtureRequest, analysed_db: str, fake: FakeAnthropic) -> Settings:
        settings: Settings = request.getfixturevalue(tables)
        return narrative_settings(
            settings, analysed_db, fake, zid=zid, report_id=report_id, model=model, pipeline_job=pipeline_job
        )

    return analysed_db, env


def submit_narrative(settings: Settings, zid: int, report_id: str, model: str, **changes: Any) -> str:
    """Insert the Polis server's CREATE_NARRATIVE_BATCH record; returns its job id."""
    record = producer_records.server_narrative(report_id, zid, model=model, **changes)
    producer_records.put_raw(make_client(settings), settings.jobs_table, record)
    return str(record["job_id"])


def poller_extra(settings: Settings) -> dict[str, str]:
    """What a poller subprocess needs in its environment to run narrative jobs as ``settings`` does."""
    return {
        "DATABASE_URL": str(settings.database_url),
        "ANTHROPIC_API_KEY": str(settings.anthropic_api_key),
        "ANTHROPIC_MODEL": str(settings.anthropic_model),
        "ANTHROPIC_BASE_URL": str(settings.anthropic_base_url),
        "DELPHI_BATCH_RECHECK_SECONDS": str(settings.batch_recheck_seconds),
    }


def run_once(env: Settings, queue: JobQueue, job_id: str) -> None:
    """Claim one given job and run it in process, as a poller's worker would."""
    job = queue.get(job_id)
    assert job is not None
    claim = queue.claim(job, "test-worker", env.lease_seconds)
    assert isinstance(claim, Claim)
    Poller(env, default_registry(env), queue=queue).executor.run(claim)


def due_now(env: Settings, job_id: str) -> None:
    """Skip a retry's backoff (what an operator's retry does, without resetting attempts)."""
    make_client(env).update_item(
        TableName=env.jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="REMOVE #r",
        ExpressionAttributeNames={"#r": "run_after"},
    )


def drain(settings: Settings, queue: JobQueue, job_ids: list[str], timeout: float = 60) -> None:
    """Run a poller's workers in process until every given job is terminal."""
    poller = Poller(settings, default_registry(settings))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [queue.get(j) for j in job_ids]
        if all(j is not None and j.status in TERMINAL for j in jobs):
            return
        claimed = False
        for job in queue.find_candidates():
            claim = queue.claim(job, "test-worker", settings.lease_seconds)
            if isinstance(claim, Claim):
                poller.executor.run(claim)
                claimed = True
                break
        if not claimed:
            time.sleep(0.05)
    raise AssertionError(f"jobs not terminal in {timeout}s: {[(j.job_id, j.status) for j in jobs if j]}")


def checker_of(queue: JobQueue, parent_id: str) -> Job:
    parent = queue.get(parent_id)
    assert parent is not None
    checker = queue.get(str(parent.job_results["checker_job_id"]))
    assert checker is not None
    return checker
