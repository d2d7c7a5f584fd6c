"""Eight processes claim from one server at once: every job is claimed exactly once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store

WORKER = Path(__file__).parents[1] / "helpers" / "claim_worker.py"


@pytest.mark.chaos
def test_eight_processes_claim_each_job_once(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(open_store(settings))
    jobs = {f"race-{i:03d}" for i in range(60)}
    for job_id in sorted(jobs):
        queue.enqueue({"job_id": job_id, "conversation_id": "1"})
    flag = tmp_path / "go"
    procs: list[tuple[Path, Any]] = []
    for n in range(8):
        out = tmp_path / f"w{n}.txt"
        argv = [
            sys.executable,
            str(WORKER),
            str(settings.endpoint_url),
            settings.table_prefix,
            f"worker-{n}",
            str(out),
            str(flag),
        ]
        procs.append((out, subprocess.Popen(argv)))  # noqa: S603
    flag.touch()
    for _, proc in procs:
        assert proc.wait(timeout=180) == 0
    claims = [line for out, _ in procs for line in out.read_text().split()]
    assert sorted(claims) == sorted(jobs), "every job claimed exactly once"
    assert sum(1 for out, _ in procs if out.read_text().strip()) >= 2, "the race had several winners"
    for job_id in jobs:
        job = queue.get(job_id)
        assert job is not None and job.status == "COMPLETED"
