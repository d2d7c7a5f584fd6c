"""``reset-stuck`` (the installed command) racing real pollers: it never takes a job whose lease is
alive; with ``--force`` it does, and the old owner then writes nothing more and its job's processes die.
moto tier: subprocesses all the way."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import alive, cli, pids, poller_env, runs, start_poller, wait_for

pytestmark = pytest.mark.chaos


def reset(settings: Settings, *flags: str) -> dict[str, Any]:
    done = cli(settings, "reset-stuck", "--json", "--by", "tester", *flags)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_reset_stuck_never_takes_a_live_lease_and_force_fences_the_owner(
    moto_settings: Settings, tmp_path: Path
) -> None:
    settings = moto_settings
    queue = JobQueue(open_store(settings))
    env = poller_env(settings, tmp_path, FAKE_PIPELINE_SLEEP="30")
    poller = start_poller(env, "--lease-seconds", "1.5", log=tmp_path / "poller.log")
    try:
        job_id = records.server_full_pipeline(5)["job_id"]
        records.put_raw(
            make_client(settings), settings.jobs_table, records.server_full_pipeline(5, job_id=job_id)
        )
        wait_for(lambda: runs(tmp_path, job_id), 20, "the job to start")
        claimed = queue.get(job_id)
        assert claimed is not None and claimed.status == "PROCESSING"

        # Several lease periods of trying: the heartbeat keeps the lease alive, so it is never taken.
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            report = reset(settings)
            assert [i["outcome"] for i in report["items"]] == ["skipped: lease alive"]
        current = queue.get(job_id)
        assert current is not None and (current.status, current.version) == ("PROCESSING", claimed.version)

        forced = reset(settings, "--force", "--older-than", "0s", "--to", "failed")
        assert [i["outcome"] for i in forced["items"]] == ["reset"]
        after = queue.get(job_id)
        assert after is not None and (after.status, after.item["reset_by"]) == ("FAILED", "tester")

        # The owner's next heartbeat fails its fence: it stops the job and writes nothing more.
        child_pids = pids(tmp_path, job_id)
        wait_for(lambda: not any(alive(p) for p in child_pids), 15, "the old owner's job processes to die")
        poller.terminate()
        assert poller.wait(timeout=30) == 0
        final = queue.get(job_id)
        assert final is not None and final.item == after.item
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait()


def test_reset_stuck_and_a_poller_share_expired_jobs_without_both_taking_one(
    moto_settings: Settings, tmp_path: Path
) -> None:
    """Jobs whose owner died: the poller reclaims some, reset-stuck fails the others; none both."""
    settings = moto_settings
    client = make_client(settings)
    ids = []
    for _ in range(8):
        record = records.server_full_pipeline(
            5,  # works FAKE_PIPELINE_SLEEP seconds
            status="PROCESSING",
            worker_id="dead-host:1:0:x",
            version=2,
            started_at="2020-01-01T00:00:00.000Z",
            created_at="2020-01-01T00:00:00.000Z",
            lock_expires_at="2020-01-01T00:01:00.000Z",
        )
        records.put_raw(client, settings.jobs_table, record)
        ids.append(record["job_id"])
    env = poller_env(settings, tmp_path, FAKE_PIPELINE_SLEEP="2")
    poller = start_poller(env, "--max-workers", "2", log=tmp_path / "poller.log")
    queue = JobQueue(open_store(settings))

    def ended() -> bool:
        return all((j := queue.get(i)) is not None and j.status in ("COMPLETED", "FAILED") for i in ids)

    try:
        wait_for(lambda: any(runs(tmp_path, i) for i in ids), 20, "the poller to reclaim a first job")
        report = reset(settings, "--to", "failed")  # while the poller goes on reclaiming the others
        outcomes = {i["job"]["job_id"]: i["outcome"] for i in report["items"]}
        assert "reset" in outcomes.values()  # jobs the poller had not reached yet
        wait_for(ended, 30, "every job to end")
        for job_id in ids:
            job = queue.get(job_id)
            assert job is not None
            if job.status == "FAILED":
                assert job.item["reset_by"] == "tester" and runs(tmp_path, job_id) == []
            else:
                assert "reset_by" not in job.item and len(runs(tmp_path, job_id)) == 2  # start, done
    finally:
        poller.terminate()
        poller.wait(timeout=30)
