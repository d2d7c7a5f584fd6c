"""Priority through real pollers: two poller processes race over a backlog with one priority-90 job
at its back. With StatusPriorityIndex the urgent job is among the first two claims; without it, each
poller claims from the oldest page (the documented fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import open_store
from delphi_jobs.tables import ensure_tables, table_specs
from tests.conftest import fresh_settings
from tests.pollers import poller_env, start_poller

BACKLOG = 60
"""More than two pages: the urgent job is beyond the head page the fallback reads."""


@pytest.mark.parametrize("with_index", [True, False], ids=["index", "no-index"])
def test_two_pollers_claim_the_urgent_job_first_with_the_index(
    moto_endpoint: str, tmp_path: Path, with_index: bool
) -> None:
    settings: Settings = fresh_settings(moto_endpoint)
    ensure_tables(make_client(settings), table_specs(settings, priority_index=with_index))
    queue = JobQueue(open_store(settings))
    for i in range(BACKLOG):
        queue.enqueue({"job_id": f"bulk-{i:03d}", "conversation_id": "1"})
    queue.enqueue({"job_id": "urgent", "conversation_id": "1", "priority": 90})

    env = poller_env(settings, tmp_path)
    pollers = [start_poller(env, "--max-jobs", "1", log=tmp_path / f"poller-{n}.log") for n in range(2)]
    for n, proc in enumerate(pollers):
        assert proc.wait(timeout=60) == 0, (tmp_path / f"poller-{n}.log").read_text()[-3000:]

    claimed = {j.job_id for j in queue.list_by_status(Status.COMPLETED)}
    claimed |= {j.job_id for j in queue.list_by_status(Status.FAILED)}
    assert len(claimed) == 2, "each poller claimed exactly one job"
    assert ("urgent" in claimed) is with_index
