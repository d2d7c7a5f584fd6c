"""The JobStore contract, on every backend (memory, moto's server, DynamoDB Local): conditions,
``Lost`` with the item as it was, upserts, transactions, index pages and counts, and the validations
DynamoDB applies to every write. What the memory store promises here, the real servers do too."""

from __future__ import annotations

from decimal import Decimal

import pytest

from delphi_jobs.store import (
    Change,
    Equals,
    InvalidRequest,
    IsNull,
    JobExists,
    JobStore,
    Lost,
    Missing,
    OneOf,
    Written,
    as_observed,
)
from delphi_jobs.tables import CONVERSATION_INDEX, JOB_TYPE_INDEX, STATUS_CREATED_INDEX


def job(job_id: str, created_at: str = "2026-01-01T00:00:00.000Z", **extra: object) -> dict[str, object]:
    return {"job_id": job_id, "status": "PENDING", "created_at": created_at, "worker_id": "none", **extra}


def test_insert_get_and_duplicate(store: JobStore) -> None:
    store.insert(job("a", version=1, priority=50))
    item = store.get("a")
    assert item is not None and item["version"] == Decimal(1) and item["status"] == "PENDING"
    with pytest.raises(JobExists):
        store.insert(job("a"))
    assert store.get("missing") is None


def test_conditions_and_lost_carries_the_item_as_it_was(store: JobStore) -> None:
    store.insert(job("c", version=1, nothing=None))
    ok = store.update("c", Change(set={"status": "PROCESSING"}, when=(Equals("status", "PENDING"),)))
    assert isinstance(ok, Written) and ok.item is not None and ok.item["status"] == "PROCESSING"
    lost = store.update("c", Change(set={"status": "DONE"}, when=(Equals("status", "PENDING"),)))
    assert isinstance(lost, Lost) and lost.current is not None and lost.current["status"] == "PROCESSING"
    assert isinstance(store.update("c", Change(set={"x": "1"}, when=(Missing("version"),))), Lost)
    assert isinstance(store.update("c", Change(set={"x": "1"}, when=(Missing("absent"),))), Written)
    assert isinstance(store.update("c", Change(set={"x": "2"}, when=(IsNull("nothing"),))), Written)
    assert isinstance(store.update("c", Change(set={"x": "3"}, when=(IsNull("x"),))), Lost)
    assert isinstance(
        store.update("c", Change(set={"x": "4"}, when=(OneOf("status", ("A", "PROCESSING")),))), Written
    )
    assert isinstance(store.update("c", Change(set={"x": "5"}, when=(Equals("version", "1"),))), Lost), (
        "types differ"
    )


def test_as_observed_matches_absent_null_and_values(store: JobStore) -> None:
    store.insert(job("o", version=3, run_after=None))
    item = store.get("o")
    assert item is not None
    when = (
        as_observed(item, "version"),
        as_observed(item, "run_after"),
        as_observed(item, "lock_expires_at"),
    )
    assert isinstance(store.update("o", Change(set={"status": "PROCESSING"}, when=when)), Written)
    assert isinstance(store.update("o", Change(set={"status": "X"}, when=when)), Written), "unchanged fields"


def test_set_none_and_remove_delete_attributes(store: JobStore) -> None:
    store.insert(job("r", a="1", b="2"))
    written = store.update("r", Change(set={"a": None, "c": "3"}, remove=("b",)))
    assert isinstance(written, Written) and written.item is not None
    assert "a" not in written.item and "b" not in written.item and written.item["c"] == "3"


def test_update_of_a_missing_item_creates_it_unless_conditioned(store: JobStore) -> None:
    assert isinstance(store.update("ghost", Change(set={"x": "1"}, when=(Equals("job_id", "ghost"),))), Lost)
    assert store.get("ghost") is None
    assert isinstance(store.update("ghost", Change(set={"x": "1"})), Written)
    assert store.get("ghost") == {"job_id": "ghost", "x": "1"}


def test_numbers_of_any_size_round_trip(store: JobStore) -> None:
    """1E+38 comes back from DynamoDB as 39 digits; reading it must not fail."""
    store.insert(job("n", big=Decimal("1E+38"), small=Decimal("0.5")))
    item = store.get("n")
    assert item is not None and item["big"] == Decimal("1E+38") and item["small"] == Decimal("0.5")


def test_transaction_is_all_or_nothing(store: JobStore) -> None:
    store.insert(job("p", version=1))
    store.insert(job("taken"))
    with pytest.raises(JobExists):
        store.transact("p", Change(set={"status": "COMPLETED"}), [job("child-1"), job("taken")])
    assert (
        store.get("child-1") is None
        and store.get(
            "p",
        )["status"]
        == "PENDING"
    )  # type: ignore[index]
    lost = store.transact("p", Change(set={"status": "X"}, when=(Equals("version", 9),)), [job("child-2")])
    assert isinstance(lost, Lost) and lost.current is not None and lost.current["version"] == 1
    assert store.get("child-2") is None
    assert isinstance(store.transact("p", Change(set={"status": "COMPLETED"}), [job("child-3")]), Written)
    assert store.get("child-3") is not None and store.get("p")["status"] == "COMPLETED"  # type: ignore[index]


def test_index_pages_ranges_and_counts(store: JobStore) -> None:
    for i in range(7):
        store.insert(
            job(
                f"j{i}",
                created_at=f"2026-01-01T00:00:0{i}.000Z",
                conversation_id="9",
                job_type="T",
                priority=i,
            )
        )
    store.insert({k: v for k, v in job("no-created").items() if k != "created_at"})
    store.insert(job("other-status", status="FAILED"))
    first = store.query(STATUS_CREATED_INDEX, "PENDING", limit=3)
    assert [i["job_id"] for i in first.items] == ["j0", "j1", "j2"] and first.next is not None
    second = store.query(STATUS_CREATED_INDEX, "PENDING", limit=3, start=first.next)
    assert [i["job_id"] for i in second.items] == ["j3", "j4", "j5"]
    rest = store.query(STATUS_CREATED_INDEX, "PENDING", limit=3, start=second.next)
    assert [i["job_id"] for i in rest.items] == ["j6"]
    newest = store.query(STATUS_CREATED_INDEX, "PENDING", limit=2, newest_first=True)
    assert [i["job_id"] for i in newest.items] == ["j6", "j5"]
    window = store.query(
        CONVERSATION_INDEX,
        "9",
        limit=10,
        range_from="2026-01-01T00:00:02",
        range_to="2026-01-01T00:00:04.999Z",
    )
    assert [i["job_id"] for i in window.items] == ["j2", "j3", "j4"]
    assert [i["job_id"] for i in store.query(JOB_TYPE_INDEX, "T", limit=2, range_from=5).items] == [
        "j5",
        "j6",
    ]
    assert store.count(STATUS_CREATED_INDEX, "PENDING") == 7, (
        "a record without created_at is not in the index"
    )
    assert store.count(STATUS_CREATED_INDEX, "PENDING", range_from="2026-01-01T00:00:05") == 2
    # A projection: only the attributes asked for (reserved words too), pages go on as before.
    small = store.query(CONVERSATION_INDEX, "9", limit=4, attributes=("job_id", "status", "priority"))
    assert small.items[0] == {"job_id": "j0", "status": "PENDING", "priority": Decimal(0)}
    more = store.query(CONVERSATION_INDEX, "9", limit=4, start=small.next, attributes=("job_id",))
    assert more.items == [{"job_id": f"j{i}"} for i in range(4, 7)]


@pytest.mark.parametrize(
    "bad",
    [{"worker_id": ""}, {"status": ""}, {"created_at": 5}, {"priority": "high"}, {"conversation_id": ""}],
    ids=["empty-worker", "empty-status", "number-created", "string-priority", "empty-conversation"],
)
def test_index_keys_are_validated_on_every_write(
    store: JobStore, bad: dict[str, object], request: pytest.FixtureRequest
) -> None:
    if "moto" in request.node.callspec.id:
        pytest.skip("moto's server does not validate index key attributes (DynamoDB and DynamoDB Local do)")
    with pytest.raises(InvalidRequest):
        store.insert(job("bad", **bad))
    store.insert(job("good"))
    with pytest.raises(InvalidRequest):
        store.update("good", Change(set=bad))
    assert store.get("good") == job("good")


def test_items_over_400_kb_are_refused_and_left_as_they_were(store: JobStore) -> None:
    store.insert(job("big", logs="x" * 300_000))
    before = store.get("big")
    with pytest.raises(InvalidRequest):
        store.update("big", Change(set={"status": "FAILED", "error_message": "why", "more": "y" * 120_000}))
    assert store.get("big") == before


def test_scan_pages_through_every_item(store: JobStore) -> None:
    for i in range(5):
        store.insert(job(f"s{i}", status=["PENDING", "pending"][i % 2]))
    seen: list[str] = []
    start = None
    for _ in range(10):
        page = store.scan(limit=2, start=start)
        seen += [str(item["job_id"]) for item in page.items]
        start = page.next
        if start is None:
            break
    assert sorted(seen) == [f"s{i}" for i in range(5)]
