"""INSTANCE_SIZE as the newest original poller honoured it (``large`` takes only conversations of more
than 5,000 comments, every other class takes all), without letting skipped jobs block the queue."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import psycopg2
import pytest

from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.logs import get_logger
from delphi_jobs.model import Job
from delphi_jobs.poller.sizes import SizeGate
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import poller_env, run_command, runs, start_poller

SMALL, LARGE = 1, 11
REPORT = "r_sizes"


def conversations(url: str, sizes: dict[int, int]) -> None:
    """Conversations with this many comments each (moderated-out ones count, as in the original)."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        for zid, count in sizes.items():
            cur.execute("INSERT INTO conversations (zid, topic) VALUES (%s, 'size test')", (zid,))
            cur.execute(
                "INSERT INTO comments (tid, zid, pid, txt, mod) "
                "SELECT n, %s, 1, 'comment ' || n, CASE WHEN n %% 10 = 0 THEN -1 ELSE 0 END "
                "FROM generate_series(1, %s) AS n",
                (zid, count),
            )
    conn.commit()
    conn.close()


def job(zid: int) -> Job:
    return Job.from_item(producer_records.server_full_pipeline(zid, REPORT))


def test_a_large_poller_skips_small_conversations_without_blocking_the_queue(
    moto_settings: Settings, pg_url: str, tmp_path: Path
) -> None:
    conversations(pg_url, {SMALL: 30, LARGE: 5001})
    client = make_client(moto_settings)
    # More small jobs ahead of the large one than one page of the status index holds.
    small = [producer_records.server_full_pipeline(SMALL, REPORT) for _ in range(26)]
    for record in small:
        producer_records.put_raw(client, moto_settings.jobs_table, record)
    large = producer_records.server_full_pipeline(LARGE, REPORT)
    producer_records.put_raw(client, moto_settings.jobs_table, large)
    env = poller_env(moto_settings, tmp_path, DATABASE_URL=pg_url, INSTANCE_SIZE="large")

    proc = start_poller(env, "--exit-when-idle", log=tmp_path / "large.log")
    assert proc.wait(timeout=60) == 0, (tmp_path / "large.log").read_text()[-2000:]
    queue = JobQueue(open_store(moto_settings))
    assert queue.get(large["job_id"]).status == "COMPLETED"  # type: ignore[union-attr]
    assert all(queue.get(r["job_id"]).status == "PENDING" for r in small)  # type: ignore[union-attr]
    assert all(runs(tmp_path, r["job_id"]) == [] for r in small)

    default = {**env, "INSTANCE_SIZE": "default"}
    proc = start_poller(default, "--exit-when-idle", "--max-workers", "3", log=tmp_path / "any.log")
    assert proc.wait(timeout=60) == 0
    assert all(queue.get(r["job_id"]).status == "COMPLETED" for r in small)  # type: ignore[union-attr]


def test_a_large_poller_without_a_database_refuses_to_start(moto_settings: Settings, tmp_path: Path) -> None:
    env = poller_env(moto_settings, tmp_path, INSTANCE_SIZE="large")
    done = run_command(env, sys.executable, "-m", "delphi_jobs", "poll", "--exit-when-idle")
    assert done.returncode == 2 and "INSTANCE_SIZE=large" in done.stderr and "DATABASE_URL" in done.stderr


def test_counts_are_cached_and_a_down_database_never_stalls(pg_url: str) -> None:
    conversations(pg_url, {SMALL: 30, LARGE: 5001})
    now = [0.0]
    connects: list[str] = []

    def connect(url: str) -> psycopg2.extensions.connection:
        connects.append(url)
        return psycopg2.connect(url, connect_timeout=2)

    gate = SizeGate(lambda: connect(pg_url), get_logger(), monotonic=lambda: now[0])
    assert gate.accepts(job(LARGE)) and not gate.accepts(job(SMALL))
    assert not gate.accepts(Job.from_item({"job_id": "no-zid"}))
    conversations(pg_url, {12: 6000})
    assert gate.accepts(job(12)) and len(connects) == 1, "one connection, reused"

    down = "postgresql://nobody@127.0.0.1:9/polis"
    gate = SizeGate(lambda: connect(down), get_logger(), monotonic=lambda: now[0])
    assert not gate.accepts(job(LARGE)), "a failed count means normal-sized, as in the original"
    assert not gate.accepts(job(12)) and len(connects) == 2, "the database is left alone for a while"
    now[0] += 31
    assert not gate.accepts(job(12)) and len(connects) == 3


@pytest.mark.parametrize("size", ["default", "small", "dev", "whatever"])
def test_every_other_class_takes_every_size(size: str) -> None:
    assert SizeGate.for_settings(Settings(instance_size=size), get_logger()) is None
    with pytest.raises(ConfigError):
        SizeGate.for_settings(dataclasses.replace(Settings(), instance_size="large"), get_logger())
