"""The JobStore in memory: the lifecycle's fast twin for unit tests.

It keeps DynamoDB's semantics where the lifecycle depends on them: conditional writes and transactions
are atomic, an update of a missing item creates it (UpdateItem upserts), numbers come back as
``Decimal``, a GSI holds only items whose key attributes exist with the declared type, a GSI key
attribute can never be written as an empty string or with the wrong type, and an item may not exceed
400 KB. The shared store suite (tests/lifecycle) holds it to the same behaviour as the real servers.
Like a real table, it has the optional StatusPriorityIndex or not (``with_priority_index``); a query of
an index the table lacks is refused as DynamoDB refuses it (ValidationException).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from delphi_jobs.dynamo import MAX_DIGITS
from delphi_jobs.store.base import (
    MAX_ITEM_BYTES,
    Change,
    Condition,
    Cursor,
    Equals,
    InvalidRequest,
    IsNull,
    Item,
    JobExists,
    Lost,
    Missing,
    OneOf,
    Page,
    Written,
    item_size,
)
from delphi_jobs.tables import JOB_INDEXES, PRIORITY_INDEX, QUERYABLE_INDEXES, Key

_INDEX_KEYS = {name: key for name, key in QUERYABLE_INDEXES}


def _number(value: int | Decimal) -> Decimal:
    """DynamoDB keeps 38 significant digits (trailing zeros do not count) and refuses more."""
    number = Decimal(value)
    significant = "".join(map(str, number.as_tuple().digits)).rstrip("0")
    if number.is_finite() and len(significant) > MAX_DIGITS:
        raise InvalidRequest(
            f"ValidationException: a number has more than {MAX_DIGITS} significant digits",
            "ValidationException",
        )
    return number


def _normalise(value: Any) -> Any:
    """What a round trip through DynamoDB gives back."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int | Decimal):
        return _number(value)
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_normalise(v) for v in value}
    raise TypeError(f"unsupported type {type(value).__name__}")


def _kind(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, Decimal):
        return "N"
    if isinstance(value, str):
        return "S"
    return type(value).__name__


def _same(left: Any, right: Any) -> bool:
    return _kind(left) == _kind(right) and left == right


def _holds(item: Item | None, condition: Condition) -> bool:
    present = item is not None and condition.attribute in item
    value = item.get(condition.attribute) if item is not None else None
    if isinstance(condition, Missing):
        return not present
    if isinstance(condition, IsNull):
        return present and value is None
    if isinstance(condition, Equals):
        return present and _same(value, _normalise(condition.value))
    if isinstance(condition, OneOf):
        return present and any(_same(value, _normalise(v)) for v in condition.values)
    raise TypeError(f"unknown condition {condition!r}")


def _check(item: Item, indexes: Sequence[tuple[str, Key]]) -> None:
    """The validations DynamoDB applies to every write of a job item."""
    for index, key in indexes:
        for attribute, declared in key.attributes():
            if attribute not in item:
                continue
            value = item[attribute]
            if _kind(value) != declared:
                raise InvalidRequest(
                    f"ValidationException: one of the index key attributes is not of the declared type "
                    f"({index}: {attribute} must be {declared})",
                    "ValidationException",
                )
            if value == "":
                raise InvalidRequest(
                    f"ValidationException: an index key attribute may not be an empty string ({attribute})",
                    "ValidationException",
                )
    if item_size(item) > MAX_ITEM_BYTES:
        raise InvalidRequest(
            "ValidationException: Item size has exceeded the maximum allowed size", "ValidationException"
        )


class MemoryJobStore:
    def __init__(self, table: str = "memory", *, with_priority_index: bool = False) -> None:
        self._table = table
        self._indexes = (*JOB_INDEXES, PRIORITY_INDEX) if with_priority_index else JOB_INDEXES
        self._items: dict[str, Item] = {}
        self._lock = threading.Lock()

    @property
    def table(self) -> str:
        return self._table

    def get(self, job_id: str) -> Item | None:
        with self._lock:
            item = self._items.get(job_id)
            return copy.deepcopy(item) if item is not None else None

    def _indexed(self, index: str, key: str, range_from: Any, range_to: Any) -> list[tuple[Any, str, Item]]:
        if index not in _INDEX_KEYS:
            raise ValueError(f"unknown index {index!r}")
        if index not in dict(self._indexes):
            raise InvalidRequest(
                f"ValidationException: the table does not have the specified index: {index}",
                "ValidationException",
            )
        spec = _INDEX_KEYS[index]
        (hash_name, hash_kind), (range_name, range_kind) = spec.attributes()
        low = None if range_from is None else _normalise(range_from)
        high = None if range_to is None else _normalise(range_to)
        rows = []
        for job_id, item in self._items.items():
            if not _same(item.get(hash_name), key) or _kind(item.get(hash_name)) != hash_kind:
                continue
            position = item.get(range_name)
            if range_name not in item or _kind(position) != range_kind:
                continue
            if (low is not None and position < low) or (high is not None and position > high):
                continue
            rows.append((position, job_id, item))
        rows.sort(key=lambda row: (row[0], row[1]))
        return rows

    def query(
        self,
        index: str,
        key: str,
        *,
        limit: int,
        start: Cursor | None = None,
        newest_first: bool = False,
        range_from: Any = None,
        range_to: Any = None,
        attributes: Sequence[str] | None = None,
    ) -> Page:
        with self._lock:
            rows = self._indexed(index, key, range_from, range_to)
            if newest_first:
                rows.reverse()
            if start:
                spec = _INDEX_KEYS[index]
                after = (_normalise(start[spec.attributes()[-1][0]]), start["job_id"])
                rows = [r for r in rows if ((r[0], r[1]) < after if newest_first else (r[0], r[1]) > after)]
            page = rows[:limit]
            items = [copy.deepcopy(row[2]) for row in page]
        if attributes is not None:
            items = [{name: item[name] for name in attributes if name in item} for item in items]
        if len(rows) <= limit or not page:
            return Page(items, None)
        spec = _INDEX_KEYS[index]
        last = page[-1][2]
        cursor = {name: last[name] for name, _ in spec.attributes()} | {"job_id": last["job_id"]}
        return Page(items, cursor)

    def count(self, index: str, key: str, *, range_from: Any = None, range_to: Any = None) -> int:
        with self._lock:
            return len(self._indexed(index, key, range_from, range_to))

    def scan(self, *, limit: int, start: Cursor | None = None) -> Page:
        with self._lock:
            ids = sorted(self._items)
            if start:
                ids = [job_id for job_id in ids if job_id > start["job_id"]]
            page = ids[:limit]
            items = [copy.deepcopy(self._items[job_id]) for job_id in page]
        return Page(items, {"job_id": page[-1]} if len(ids) > limit else None)

    def insert(self, item: Item) -> Written:
        stored = _normalise(dict(item))
        with self._lock:
            if stored["job_id"] in self._items:
                raise JobExists(
                    f"a job with id {stored['job_id']!r} exists", "ConditionalCheckFailedException"
                )
            _check(stored, self._indexes)
            self._items[stored["job_id"]] = stored
            return Written(copy.deepcopy(stored))

    def _apply(self, job_id: str, change: Change) -> Item | Lost:
        current = self._items.get(job_id)
        if not all(_holds(current, condition) for condition in change.when):
            return Lost(copy.deepcopy(current))
        updated = dict(current) if current is not None else {"job_id": job_id}
        updated.update(_normalise(change.assigned()))
        for name in change.removed():
            updated.pop(name, None)
        _check(updated, self._indexes)
        return updated

    def update(self, job_id: str, change: Change) -> Written | Lost:
        with self._lock:
            result = self._apply(job_id, change)
            if isinstance(result, Lost):
                return result
            self._items[job_id] = result
            return Written(copy.deepcopy(result))

    def transact(self, job_id: str, change: Change, inserts: Sequence[Item]) -> Written | Lost:
        new_items = [_normalise(dict(item)) for item in inserts]
        with self._lock:
            result = self._apply(job_id, change)
            if isinstance(result, Lost):
                return result
            taken = [i["job_id"] for i in new_items if i["job_id"] in self._items]
            if taken:
                raise JobExists(
                    f"a job with one of the ids {', '.join(taken)} exists", "ConditionalCheckFailed"
                )
            for item in new_items:
                _check(item, self._indexes)
            self._items[job_id] = result
            for item in new_items:
                self._items[item["job_id"]] = item
            return Written(None)
