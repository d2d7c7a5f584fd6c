"""Priority and reach under load (issue 12, item 5) on every backend: with the optional
StatusPriorityIndex a high-priority job is found at the first look whatever the backlog ahead of it;
without it the documented fallback holds; a fresh job behind a wall of backed-off retries is found at
the first look; an idle look costs one query. Queries are counted on the store boundary, so the same
counts hold for memory, moto's server and DynamoDB Local."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from delphi_jobs.dynamo import make_client
from delphi_jobs.model import format_timestamp, utcnow
from delphi_jobs.queue import INDEX_RETRY_SECONDS, Claim, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import JobStore, Page, open_store
from delphi_jobs.store.memory import MemoryJobStore
from delphi_jobs.tables import STATUS_CREATED_INDEX, STATUS_PRIORITY_INDEX, ensure_tables, table_specs
from tests.conftest import fresh_settings

BACKLOG = 300
"""More than ten pages of the default page size; moto's GSI queries are O(table size), so the
10,000-job case is measured by ``python -m bench priority`` instead."""


class Counted:
    """A JobStore that records the index of every query it passes on (failed ones included)."""

    def __init__(self, inner: JobStore) -> None:
        self._inner = inner
        self.queries: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def query(self, index: str, key: str, **options: Any) -> Page:
        self.queries.append(index)
        return self._inner.query(index, key, **options)

    def taken(self) -> list[str]:
        """The queries since the last call."""
        queries, self.queries = self.queries, []
        return queries


@pytest.fixture(params=["memory", "moto", "ddblocal"])
def indexed(request: pytest.FixtureRequest) -> JobStore:
    """The JobStore on every backend, its table made by ``create-tables --with-priority-index``."""
    if request.param == "memory":
        return MemoryJobStore("Delphi_JobQueue", with_priority_index=True)
    settings = fresh_settings(str(request.getfixturevalue(f"{request.param}_endpoint")))
    ensure_tables(make_client(settings), table_specs(settings, priority_index=True))
    return open_store(settings)


class Clock:
    """Moves on a millisecond a reading, so that jobs enqueued one after the other differ in age."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fill(queue: JobQueue, count: int, **fields: Any) -> None:
    for i in range(count):
        queue.enqueue({"job_id": f"bulk-{i:05d}", "conversation_id": "1", **fields})


def test_a_high_priority_job_is_claimed_at_the_first_poll_behind_a_backlog(indexed: JobStore) -> None:
    store = Counted(indexed)
    queue = JobQueue(store)  # type: ignore[arg-type]
    fill(queue, BACKLOG)  # all claimable, all older than the jobs that should go first
    queue.enqueue({"job_id": "urgent", "conversation_id": "1", "priority": 90})
    queue.enqueue({"job_id": "soon", "conversation_id": "1", "priority": 70})
    store.taken()

    found = queue.find_due(Status.PENDING)
    assert [j.job_id for j in found[:2]] == ["urgent", "soon"]
    assert {j.priority for j in found[2:]} == {50}
    assert store.taken() == [STATUS_CREATED_INDEX, STATUS_PRIORITY_INDEX], "two queries, one poll"
    claim = queue.claim(found[0], "w1", 30)
    assert isinstance(claim, Claim) and claim.job.job_id == "urgent"
    # The next poll: the claimed job left the lane, the next best is first.
    assert queue.find_due(Status.PENDING)[0].job_id == "soon"


def test_the_priority_lane_skips_jobs_not_due_and_jobs_not_accepted(indexed: JobStore) -> None:
    queue = JobQueue(indexed)
    fill(queue, 40)
    later = format_timestamp(utcnow() + timedelta(hours=1))
    queue.enqueue({"job_id": "backed-off", "conversation_id": "1", "priority": 95, "run_after": later})
    queue.enqueue({"job_id": "other-type", "conversation_id": "1", "priority": 95, "job_type": "X"})
    queue.enqueue({"job_id": "urgent", "conversation_id": "1", "priority": 90})
    found = queue.find_due(Status.PENDING, accept=lambda job: job.job_type != "X")
    assert found[0].job_id == "urgent"
    assert {"backed-off", "other-type"}.isdisjoint(j.job_id for j in found)


def test_without_the_index_priority_orders_the_jobs_read(store: JobStore, clock: Clock) -> None:
    """The fallback (docs/poller.md): the lane is tried once, then again only every
    INDEX_RETRY_SECONDS; priority orders the head page, so a high-priority job behind a longer backlog
    waits for the backlog ahead of it to shrink to one page."""
    counted = Counted(store)
    queue = JobQueue(counted, clock=clock)  # type: ignore[arg-type]
    queue.enqueue({"job_id": "early-low", "conversation_id": "1", "priority": 10})
    queue.enqueue({"job_id": "early-high", "conversation_id": "1", "priority": 80})
    fill(queue, 60)
    queue.enqueue({"job_id": "urgent", "conversation_id": "1", "priority": 90})
    counted.taken()

    found = queue.find_due(Status.PENDING)
    assert found[0].job_id == "early-high", "within the head page, priority first"
    assert "urgent" not in {j.job_id for j in found}, "beyond the head page: not seen"
    assert counted.taken() == [STATUS_CREATED_INDEX, STATUS_PRIORITY_INDEX], "the lane is tried"
    queue.find_due(Status.PENDING)
    assert counted.taken() == [STATUS_CREATED_INDEX], "and not again before INDEX_RETRY_SECONDS"
    clock.now += timedelta(seconds=INDEX_RETRY_SECONDS + 1)
    queue.find_due(Status.PENDING)
    assert counted.taken() == [STATUS_CREATED_INDEX, STATUS_PRIORITY_INDEX], "then tried again"


def fresh_behind_a_wall(inner: JobStore) -> None:
    """The wall is older than the fresh job and not due: the newest page finds it at the first look,
    in a number of queries that does not depend on the wall's size."""
    store = Counted(inner)
    queue = JobQueue(store)  # type: ignore[arg-type]
    later = format_timestamp(utcnow() + timedelta(hours=1))
    fill(queue, 200, run_after=later, retry_count=1)
    queue.enqueue({"job_id": "fresh", "conversation_id": "1"})
    store.taken()

    found = queue.find_due(Status.PENDING)
    assert [j.job_id for j in found] == ["fresh"]
    assert store.taken() == [STATUS_CREATED_INDEX, STATUS_PRIORITY_INDEX, STATUS_CREATED_INDEX]


def test_a_fresh_job_behind_a_wall_of_backed_off_retries_is_found_at_once(store: JobStore) -> None:
    fresh_behind_a_wall(store)


def test_a_fresh_job_behind_a_wall_is_found_at_once_with_the_index(indexed: JobStore) -> None:
    fresh_behind_a_wall(indexed)


def test_a_due_job_in_the_middle_of_a_wall_is_reached_by_the_rotating_cursor(indexed: JobStore) -> None:
    """What stays proportional to the wall (documented): a due job that is neither among the oldest
    nor among the newest is reached by the cursor, ``max_pages - 1`` pages per look."""
    queue = JobQueue(indexed, page_size=10, max_pages=3)
    later = format_timestamp(utcnow() + timedelta(hours=1))
    fill(queue, 40, run_after=later)
    queue.enqueue({"job_id": "middle", "conversation_id": "1"})
    for i in range(20):
        queue.enqueue({"job_id": f"young-{i:02d}", "conversation_id": "1", "run_after": later})
    looks = 1
    while not (found := queue.find_due(Status.PENDING)):
        looks += 1
        assert looks <= 3
    assert [j.job_id for j in found] == ["middle"]


@pytest.mark.parametrize("waiting", [0, 10])
def test_an_idle_look_costs_one_query_with_the_index(indexed: JobStore, waiting: int) -> None:
    """The lane is read only when the status holds more than the head page: idle polling costs what it
    cost without the index."""
    store = Counted(indexed)
    queue = JobQueue(store)  # type: ignore[arg-type]
    fill(queue, waiting, priority=90)
    store.taken()
    assert len(queue.find_due(Status.PENDING)) == waiting
    assert store.taken() == [STATUS_CREATED_INDEX]
