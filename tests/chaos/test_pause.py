"""Pause and resume with checkpoints, with real pollers: a pause takes effect at the next step
boundary, the worker is released, and resuming goes on from the checkpoint on another poller; a job
paused too long is cancelled by whichever poller notices; the history holds every transition."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.model import format_timestamp, utcnow
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import Change, open_store
from tests.pollers import poller_env, runs, start_poller, wait_for

pytestmark = pytest.mark.chaos


def test_pause_at_a_step_boundary_then_resume_on_another_poller(
    moto_settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(open_store(moto_settings))
    job_id = queue.enqueue(producer_records.server_full_pipeline(8, "r_pause")).job_id
    env = poller_env(moto_settings, tmp_path, FAKE_PIPELINE_SLEEP="1.5", DELPHI_LEASE_SECONDS="3")
    first = start_poller(env, log=tmp_path / "first.log")
    try:
        wait_for(lambda: "stage PCA" in runs(tmp_path, job_id), 30, "the first stage to start")
        assert queue.pause(job_id, "maintenance", by="alice").requested
        paused = wait_for(
            lambda: (job := queue.get(job_id)) and job.status == "PAUSED" and job, 30, "the job to pause"
        )
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert runs(tmp_path, job_id)[-1] == "stage UMAP", "it stopped as the second stage began"
    assert paused.item["resume_from_step"] == "UMAP" and paused.item["paused_from"] == "PENDING"
    progress = json.loads(paused.item["progress"])
    assert progress["is_paused"] is True and progress["total_steps"] == 3 and progress["step"] == "UMAP"
    assert paused.worker_id is None and json.loads(paused.item["live_output"])

    assert queue.resume(job_id, by="bob").status == "PENDING"
    second = start_poller(env, "--exit-when-idle", log=tmp_path / "second.log")
    assert second.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()[-2000:]
    done = queue.get(job_id)
    assert done is not None and done.status == "COMPLETED"
    assert "resume_from=UMAP" in runs(tmp_path, job_id), "the second run started from the checkpoint"
    assert "resume_from_step" not in done.item, "a completed run clears its checkpoint"
    assert json.loads(done.item["progress"])["percent"] == 100.0
    steps = [(e.source, e.to, e.by) for e in done.history]
    assert steps[0] == (None, "PENDING", "api")
    assert ("PROCESSING", "PAUSED") in [(s, t) for s, t, _ in steps]
    assert ("PAUSED", "PENDING", "bob") in steps and steps[-1][:2] == ("PROCESSING", "COMPLETED")


def test_a_job_paused_too_long_is_cancelled(moto_settings: Settings, tmp_path: Path) -> None:
    store = open_store(moto_settings)
    queue = JobQueue(store)
    old = queue.enqueue(producer_records.server_full_pipeline(1)).job_id
    fresh = queue.enqueue(producer_records.server_full_pipeline(1)).job_id
    queue.pause(old, "forgotten")
    queue.pause(fresh, "for a moment")
    long_ago = format_timestamp(utcnow() - timedelta(hours=2))
    store.update(old, Change(set={"paused_at": long_ago}))
    env = poller_env(moto_settings, tmp_path, DELPHI_PAUSE_TIMEOUT="3600")
    poller = start_poller(env, "--exit-when-idle", log=tmp_path / "poller.log")
    assert poller.wait(timeout=60) == 0
    cancelled = queue.get(old)
    assert cancelled is not None and cancelled.status == "CANCELLED"
    assert "DELPHI_PAUSE_TIMEOUT" in str(cancelled.error_message)
    assert cancelled.history[-1].by == "pause-timeout"
    assert queue.get(fresh).status == "PAUSED"  # type: ignore[union-attr]
