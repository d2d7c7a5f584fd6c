"""The crash-consistency kit, FULL_PIPELINE: a real poller on DynamoDB Local kills itself (SIGKILL) at
one deterministic point of a job's life (``DELPHI_FAULT``, delphi_jobs/faults.py); another poller
takes over. Checked on the exact write history (a DynamoDB stream) and the side-effect ledger: every
job ends in exactly one terminal state, nothing overwrites it, and every extra run of the pipeline is
the re-run of a run whose poller was killed."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.states import TERMINAL
from delphi_jobs.store import open_store
from tests.chaos.ledger import account, poller_of
from tests.pollers import alive, crash_at, pids, poller_env, run_until_terminal, runs, wait_for

pytestmark = pytest.mark.chaos

LEASE = ("--lease-seconds", "3")
"""Short enough to rescue quickly, long enough that a loaded CI machine does not lose leases."""


@dataclass(frozen=True)
class Point:
    fault: str
    zid: int
    """1: three lines and done; 5: prints a line every 0.25 s for ``seconds``."""
    seconds: float
    runs: int
    """Runs of the job hit by the crash, the re-run included."""
    first_run_done: bool | None
    """Whether the killed poller's run had finished (None: it never started)."""
    sigterm: bool = False


POINTS = [
    Point("after_claim:1", 1, 0, runs=1, first_run_done=None),
    Point("mid_run:2", 5, 1.5, runs=2, first_run_done=False),
    Point("heartbeat:1", 5, 2.5, runs=2, first_run_done=False),
    Point("before_outcome:1", 1, 0, runs=2, first_run_done=True),
    Point("shutdown:1", 5, 3, runs=2, first_run_done=False, sigterm=True),
]


@pytest.mark.parametrize("point", POINTS, ids=[p.fault.partition(":")[0] for p in POINTS])
def test_a_kill_at_each_point_costs_at_most_one_rerun(ddb: Settings, tmp_path: Path, point: Point) -> None:
    queue = JobQueue(open_store(ddb))
    client = make_client(ddb)
    hit = producer_records.server_full_pipeline(point.zid, priority=60)  # claimed first
    other = producer_records.server_full_pipeline(1)
    for record in (hit, other):
        producer_records.put_raw(client, ddb.jobs_table, record)
    hit_id, other_id = str(hit["job_id"]), str(other["job_id"])
    env = poller_env(ddb, tmp_path, FAKE_PIPELINE_SLEEP=str(point.seconds))

    def stop_once_running(proc: subprocess.Popen[bytes]) -> None:
        wait_for(lambda: runs(tmp_path, hit_id), 60, "the job to start")
        proc.send_signal(signal.SIGTERM)

    killed = crash_at(
        env,
        point.fault,
        *LEASE,
        log=tmp_path / "killed.log",
        trigger=stop_once_running if point.sigterm else None,
    )
    children = pids(tmp_path, hit_id)
    wait_for(lambda: not any(alive(p) for p in children), 30, "the killed poller's job processes to die")
    crashed = queue.get(hit_id)
    assert crashed is not None and crashed.status == "PROCESSING" and poller_of(crashed.worker_id) == killed

    def all_terminal() -> bool:
        return all((job := queue.get(j)) is not None and job.status in TERMINAL for j in (hit_id, other_id))

    run_until_terminal(env, all_terminal, *LEASE, log=tmp_path / "rescuer.log")
    ledger = account(ddb, tmp_path, {hit_id: "COMPLETED", other_id: "COMPLETED"}, killed={killed})
    assert ledger.problems == []
    crashed_job, other_job = ledger.jobs[hit_id], ledger.jobs[other_id]
    assert len(crashed_job.runs) == point.runs and crashed_job.rescued
    if point.first_run_done is not None:
        first = crashed_job.runs[0]
        assert first.poller == killed and first.done is point.first_run_done
    assert len(other_job.runs) == 1 and not other_job.rescued, "the job nobody killed ran once"
    rescued = queue.get(hit_id)
    assert rescued is not None and rescued.reclaim_count == 1
    assert any("reclaimed" in entry.message for entry in rescued.logs)
    died = logged_at(tmp_path / "killed.log", "fault point reached")
    taken_over = logged_at(tmp_path / "rescuer.log", '"reclaimed": true')
    print(json.dumps({"point": point.fault, "rescued_after_seconds": round(taken_over - died, 1)}))


def logged_at(log: Path, marker: str) -> float:
    """When the first JSON log line containing ``marker`` was written (epoch seconds)."""
    line = next(line for line in log.read_text().splitlines() if marker in line)
    stamp = str(json.loads(line)["timestamp"])
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
