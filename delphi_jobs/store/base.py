"""The JobStore boundary: the few primitives the job lifecycle needs, independent of the backend.

The queue states *what* must hold for a write (conditions on the item as it was read) and *what* to
change; a store turns that into one atomic backend operation. Two stores implement it: DynamoDB (the
product) and memory (fast lifecycle tests); one shared test suite holds both to the same behaviour.

Items are plain dicts of deserialized values (``str``, ``Decimal``, ``bool``, ``dict``, ``list``, and
``None`` for a DynamoDB NULL). An attribute that is absent is simply not a key of the dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

Item = dict[str, Any]
Cursor = dict[str, Any]
"""Where a query page ended: the key attributes of its last item (JSON-friendly values)."""


MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB refuses any write that would make an item larger."""


def value_size(value: Any) -> int:
    """A value's size by DynamoDB's rules, closely enough to keep writes clear of the item limit."""
    if isinstance(value, str | bytes):
        return len(value.encode() if isinstance(value, str) else value)
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return len(Decimal(value).as_tuple().digits) // 2 + 2
    if isinstance(value, Mapping):
        return 3 + sum(len(str(k).encode()) + value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 3 + sum(value_size(v) + 1 for v in value)
    return 1


def item_size(item: Mapping[str, Any]) -> int:
    """An item's size: every attribute's name and value."""
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


# ---- conditions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equals:
    attribute: str
    value: Any


@dataclass(frozen=True)
class Missing:
    attribute: str


@dataclass(frozen=True)
class IsNull:
    """The attribute holds a DynamoDB NULL (what JavaScript's DocumentClient writes for ``null``)."""

    attribute: str


@dataclass(frozen=True)
class OneOf:
    attribute: str
    values: tuple[Any, ...]


Condition = Equals | Missing | IsNull | OneOf


def as_observed(item: Mapping[str, Any], attribute: str) -> Condition:
    """The attribute is still exactly as it was read: absent, NULL, or the same value."""
    if attribute not in item:
        return Missing(attribute)
    value = item[attribute]
    return IsNull(attribute) if value is None else Equals(attribute, value)


@dataclass(frozen=True)
class Change:
    """One conditional update: ``set`` values (``None`` removes the attribute), ``remove`` names, all
    applied only when every condition in ``when`` holds."""

    set: Mapping[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    when: tuple[Condition, ...] = ()

    def removed(self) -> tuple[str, ...]:
        dropped = [name for name, value in self.set.items() if value is None]
        return tuple(dict.fromkeys([*dropped, *self.remove]))

    def assigned(self) -> dict[str, Any]:
        return {name: value for name, value in self.set.items() if value is not None}


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    item: Item | None
    """The item after the write, where the backend returns it (not after a transaction)."""


@dataclass(frozen=True)
class Lost:
    """A condition did not hold: someone else changed the item first. Never retried blindly."""

    current: Item | None
    """The item as it was when the condition failed (None when it does not exist)."""


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next: Cursor | None


# ---- errors -------------------------------------------------------------------------------------


class StoreError(Exception):
    """A backend failure, with the backend's error code where there is one (tests branch on codes)."""

    retryable = False

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(StoreError):
    """Unreachable, throttled or failing server: the same request may succeed later."""

    retryable = True


class TableMissing(StoreError):
    """The table or index does not exist: ``delphi-jobs create-tables`` makes it."""


class InvalidRequest(StoreError):
    """The backend refused the request itself (too large, a key attribute of the wrong type, ...)."""


class JobExists(StoreError):
    """An insert found an item with the same job_id."""


# ---- the boundary -------------------------------------------------------------------------------


class JobStore(Protocol):
    @property
    def table(self) -> str: ...

    def get(self, job_id: str) -> Item | None:
        """A strongly consistent read."""

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
        """One page of a GSI: items whose hash key equals ``key``, ordered by the range key (bounded
        by ``range_from``/``range_to`` inclusive when given); only ``attributes`` of each item when
        given (a listing that needs a few small attributes of large items)."""

    def count(self, index: str, key: str, *, range_from: Any = None, range_to: Any = None) -> int:
        """How many items one GSI key holds, without reading them."""

    def scan(self, *, limit: int, start: Cursor | None = None) -> Page:
        """One page of the whole table, in no particular order: only for an operator who asked for a
        full read (``doctor --scan``), never for the lifecycle."""

    def insert(self, item: Item) -> Written:
        """Create an item exactly as given (None is written as NULL); JobExists when the id is taken."""

    def update(self, job_id: str, change: Change) -> Written | Lost:
        """One conditional update; Written carries the item after it."""

    def transact(self, job_id: str, change: Change, inserts: Sequence[Item]) -> Written | Lost:
        """``change`` on one item and new items, all or nothing. Lost when ``change``'s condition failed;
        JobExists when one of the new ids is taken."""
