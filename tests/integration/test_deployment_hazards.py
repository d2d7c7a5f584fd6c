"""Issue 11 items 5 and 9: malformed database settings must not leak the password anywhere, and the
default shutdown fits a container engine's default stop timeout. Real pollers as subprocesses."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from delphi_jobs.config import (
    CONTAINER_STOP_TIMEOUT,
    HAND_BACK_BUDGET,
    Settings,
)
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import pids, poller_env, run_command, start_poller, wait_for

SECRET = "pw-SECRET-4711"

MALFORMED = {
    # libpq echoes the bad token, or the whole URL, into its error message
    "bad percent escape": {"DATABASE_URL": f"postgresql://delphi:{SECRET}%zz@127.0.0.1:9/polis"},
    "unbalanced bracket": {"DATABASE_URL": f"postgresql://delphi:{SECRET}@[::1:9/polis"},
    "parts with ::1": {"DATABASE_HOST": "::1", "DATABASE_PORT": "9", "DATABASE_PASSWORD": SECRET},
}


@pytest.mark.parametrize("database", sorted(MALFORMED))
def test_a_malformed_database_setting_never_leaks_the_password(
    database: str, moto_settings: Settings, tmp_path: Path
) -> None:
    client = make_client(moto_settings)
    narrative = producer_records.server_narrative("r1", 5, model="claude-test")
    pipeline = producer_records.server_full_pipeline(5, max_retries=0)
    for record in (narrative, pipeline):
        producer_records.put_raw(client, moto_settings.jobs_table, record)
    env = poller_env(
        moto_settings,
        tmp_path,
        ANTHROPIC_API_KEY="sk-ant-test",
        ANTHROPIC_MODEL="claude-test",
        DELPHI_PIPELINE_COMMAND=f"{sys.executable} -m delphi_jobs pipeline --zid {{zid}}",
        **MALFORMED[database],
    )
    log = tmp_path / "poller.log"
    proc = start_poller(env, "--exit-when-idle", log=log)
    assert proc.wait(timeout=90) == 0, log.read_text()[-2000:]
    output = log.read_text()
    queue = JobQueue(open_store(moto_settings))
    for record in (narrative, pipeline):
        job = queue.get(str(record["job_id"]))
        assert job is not None and job.status == "FAILED", job and job.status
        written = json.dumps(dict(job.item), default=str)
        assert SECRET not in written, (database, job.error_message)
    assert SECRET not in output
    # The built-in pipeline on its own: its stderr is scrubbed too.
    alone = run_command(env, sys.executable, "-m", "delphi_jobs", "pipeline", "--zid", "5")
    assert alone.returncode != 0 and "pipeline failed" in alone.stderr
    assert SECRET not in alone.stderr + alone.stdout


def test_ipv6_database_host_is_bracketed() -> None:
    settings = Settings.from_env({"DATABASE_HOST": "::1", "DATABASE_PASSWORD": "p w"})
    assert settings.database_url == "postgresql://postgres:p%20w@[::1]:5432/polis?sslmode=require"


def test_default_shutdown_hands_jobs_back_within_a_container_stop_timeout(
    moto_settings: Settings, tmp_path: Path
) -> None:
    """With no grace settings at all, SIGTERM to a poller running a long job: the job's processes are
    stopped, it is handed back PENDING, and the poller exits before an engine's 10 s SIGKILL."""
    settings = Settings()
    assert settings.shutdown_grace_seconds + settings.kill_grace_seconds + HAND_BACK_BUDGET <= (
        CONTAINER_STOP_TIMEOUT
    )
    client = make_client(moto_settings)
    record = producer_records.server_full_pipeline(5)
    producer_records.put_raw(client, moto_settings.jobs_table, record)
    job_id = str(record["job_id"])
    env = poller_env(moto_settings, tmp_path, FAKE_PIPELINE_SLEEP="60")
    env.pop("DELPHI_KILL_GRACE_SECONDS")
    proc = start_poller(env, log=tmp_path / "poller.log")
    wait_for(lambda: len(pids(tmp_path, job_id)) == 2, 60, "the job to start")
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    took = time.monotonic() - stopped_at
    job = JobQueue(open_store(moto_settings)).get(job_id)
    assert job is not None and job.status == "PENDING", job and job.status
    assert took < CONTAINER_STOP_TIMEOUT, f"exited after {took:.1f}s"
