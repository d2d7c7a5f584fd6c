"""Narrative jobs on real servers, in process: a conversation analysed by the stand-in pipeline, the
settings that point a poller at the Anthropic fake, and a loop that runs a real poller's executor until
given jobs are terminal. Shared by the end-to-end and the contract tests."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg2
import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.devtools.pipeline.run import run_pipeline
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres
from delphi_jobs.devtools.sample_conversation import generate_sample, load_sample
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


def narrative_fixtures(
    zid: int, report_id: str, *, model: str, pipeline_job: str, seed: int = 7
) -> tuple[Any, Any]:
    """A narrative test module's fixtures, ``analysed_db, env = narrative_fixtures(...)``:

    - ``analysed_db`` (per module): a database of its own holding one generated conversation;
    - ``env`` (per test): settings for the Anthropic fake with ANTHROPIC_MODEL ``model``, after the
      stand-in pipeline wrote the conversation's topics into the test's tables, keyed with
      ``pipeline_job`` like the real pipeline's (and math_main: no Polis math worker runs here).
    """

    @pytest.fixture(scope="module")
    def analysed_db(postgres_server: EmbeddedPostgres) -> str:
        url = new_polis_database(postgres_server)
        conn = psycopg2.connect(url)
        sample = generate_sample(seed=seed, zid=zid, participants=80, comments=30)
        load_sample(conn, sample, report_id=report_id)
        conn.commit()
        conn.close()
        return url

    @pytest.fixture
    def env(moto_settings: Settings, analysed_db: str, fake: FakeAnthropic) -> Settings:
        settings = dataclasses.replace(
            moto_settings,
            database_url=analysed_db,
            anthropic_api_key="test-key",
            anthropic_model=model,
            anthropic_base_url=fake.base_url,
            batch_recheck_seconds=0.1,
            lease_seconds=5,
            retry_base_seconds=0.0,  # a crashed run's job is reclaimable as soon as its lease runs out
        )
        pipeline = dataclasses.replace(settings, pipeline_job_id=pipeline_job)
        run_pipeline(pipeline, zid, report_id, write_math_main=True)
        return settings

    return analysed_db, env


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
