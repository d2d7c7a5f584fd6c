"""FULL_PIPELINE records exactly as the Polis server and the Delphi CLI write them, run by real pollers
(subprocesses) through the original command mapping: ``python run_delphi.py ...`` with ``python`` from
PATH, in DELPHI_APP_PATH. What a retry is worth, what readers of the record see, what the report client
waits for in the log."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.states import InvalidStateError
from delphi_jobs.store import open_store
from tests.pollers import alive, poller_env, start_poller, wait_for

APP = Path(__file__).parent / "app"
REPORT = "r4tykwac8thvzv35jrn53"


@pytest.fixture
def env(moto_settings: Settings, tmp_path: Path) -> dict[str, str]:
    """A poller's environment with the original command mapping and an app ``python`` first on PATH."""
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "python"
    shim.write_text(f'#!/bin/sh\nVIA_PATH_SHIM=1 exec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    variables = poller_env(
        moto_settings,
        tmp_path,
        DELPHI_APP_PATH=str(APP),
        FAKE_APP_STATE=str(tmp_path),
        PATH=f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
        DELPHI_RETRY_BASE_SECONDS="0.2",
    )
    del variables["DELPHI_PIPELINE_COMMAND"]
    return variables


def insert(settings: Settings, record: dict[str, Any]) -> str:
    producer_records.put_raw(make_client(settings), settings.jobs_table, record)
    return str(record["job_id"])


def app_runs(folder: Path, job_id: str) -> list[dict[str, Any]]:
    path = folder / job_id
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def exit_confirmed(settings: Settings, job_id: str) -> Any:
    """``process_exit_confirmed`` as DynamoDB holds it: the guard compares it with ``=== true``."""
    item = make_client(settings).get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}})
    return item["Item"].get("process_exit_confirmed")


def run_until_idle(env: dict[str, str], tmp_path: Path, *flags: str) -> str:
    log = tmp_path / "poller.log"
    proc = start_poller(env, "--exit-when-idle", *flags, log=log)
    try:
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text()


def test_every_producer_shape_runs_the_original_command(
    moto_settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    edge = insert(moto_settings, producer_records.server_full_pipeline(1, REPORT))
    guarded = insert(moto_settings, producer_records.server_full_pipeline_guarded(1, REPORT))
    cli = insert(moto_settings, producer_records.cli_job(1))
    output = run_until_idle(env, tmp_path)
    queue = JobQueue(open_store(moto_settings))
    for job_id in (edge, guarded, cli):
        job = queue.get(job_id)
        assert job is not None and job.status == "COMPLETED", output[-2000:]
        [run] = app_runs(tmp_path, job_id)
        assert run["cwd"] == str(APP), "run_delphi.py's own steps use paths relative to the app"
        assert run["via_path"], "python is the first one on PATH (the app's), not the poller's"
        rid = [f"--rid={REPORT}"] if job_id != cli else []
        assert run["argv"] == [
            "--zid=1",
            "--include_moderation=False",
            "--exclude_comment_selections=True",
            *rid,
        ]
        assert run["report_id"] == (REPORT if job_id != cli else "1")
        # The report client reloads when the pipeline job's own shipped lines contain this phrase.
        assert f"[DELPHI JOB {job_id[:8]}] INFO: Results stored in DynamoDB for conversation 1" in output
        stderr_line = [e for e in job.logs if e.message == "INFO:umap_narrative:computed 3 layers"]
        assert [e.level for e in stderr_line] == ["INFO"], "child stderr is logged at INFO, not ERROR"
        assert exit_confirmed(moto_settings, job_id) == {"BOOL": True}
        assert job.job_results["result_type"] == "SUCCESS"


def test_own_exit_is_final_outside_kill_is_retried_timeout_is_final(
    moto_settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    exits = insert(moto_settings, producer_records.server_full_pipeline(3, REPORT))
    killed = insert(moto_settings, producer_records.server_full_pipeline(5, REPORT))
    slow = insert(moto_settings, producer_records.server_full_pipeline(4, REPORT, timeout_seconds=2))
    queue = JobQueue(open_store(moto_settings))
    proc = start_poller(env, "--max-workers", "3", log=tmp_path / "poller.log")
    try:
        [first] = wait_for(lambda: app_runs(tmp_path, killed), 30, "the pipeline to start")
        os.kill(first["pid"], signal.SIGKILL)  # as the kernel's OOM killer would
        done = {"COMPLETED", "FAILED"}
        wait_for(
            lambda: all(queue.get(j).status in done for j in (exits, killed, slow)), 60, "the jobs to end"
        )  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    job = queue.get(exits)
    assert job is not None and job.status == "FAILED" and job.retry_count == 0
    assert len(app_runs(tmp_path, exits)) == 1, "a script's own non-zero exit runs once"
    assert job.error_message is not None and job.error_message.startswith("pipeline exited with code 1")

    job = queue.get(killed)
    assert job is not None and job.status == "COMPLETED", job.error_message
    assert len(app_runs(tmp_path, killed)) == 2 and job.retry_count == 1
    assert any("killed by signal 9 (SIGKILL), not sent by this poller" in e.message for e in job.logs)

    job = queue.get(slow)
    assert job is not None and job.status == "FAILED" and job.retry_count == 0
    assert len(app_runs(tmp_path, slow)) == 1 and "timed out after 2s" in str(job.error_message)
    assert not alive(app_runs(tmp_path, slow)[0]["pid"])
    for job_id in (exits, killed, slow):
        assert exit_confirmed(moto_settings, job_id) == {"BOOL": True}


def test_legacy_statuses_cancel_as_failed_with_the_marker(
    moto_settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    """For Polis readers that know only the original statuses (the admission guard)."""
    job_id = insert(moto_settings, producer_records.server_full_pipeline(4, REPORT))
    queue = JobQueue(open_store(moto_settings), legacy_statuses=True)
    proc = start_poller({**env, "DELPHI_LEGACY_STATUSES": "1"}, "--max-jobs", "1", log=tmp_path / "p.log")
    try:
        [run] = wait_for(lambda: app_runs(tmp_path, job_id), 30, "the pipeline to start")
        with pytest.raises(InvalidStateError, match="pausing is disabled"):
            queue.pause(job_id)
        assert queue.cancel(job_id, "wrong conversation").requested
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED"
    assert job.job_results["result_type"] == "CANCELLED"
    assert exit_confirmed(moto_settings, job_id) == {"BOOL": True}
    assert not alive(run["pid"])
