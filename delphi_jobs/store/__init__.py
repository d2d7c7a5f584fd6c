"""Storage of job records behind one small interface (see base.py); DynamoDB and in-memory backends."""

from collections.abc import Callable
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
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
    JobStore,
    Lost,
    Missing,
    OneOf,
    Page,
    StoreError,
    StoreUnavailable,
    TableMissing,
    Written,
    as_observed,
    item_size,
)
from delphi_jobs.store.dynamo import DynamoJobStore

__all__ = [
    "MAX_ITEM_BYTES",
    "Change",
    "Condition",
    "Cursor",
    "DynamoJobStore",
    "Equals",
    "InvalidRequest",
    "IsNull",
    "Item",
    "JobExists",
    "JobStore",
    "Lost",
    "Missing",
    "OneOf",
    "Page",
    "StoreError",
    "StoreUnavailable",
    "TableMissing",
    "Written",
    "as_observed",
    "item_size",
    "open_store",
]


def open_store(
    settings: Settings, *, on_error: Callable[[str | None], None] | None = None, **client_options: Any
) -> DynamoJobStore:
    """The job table of ``settings`` on DynamoDB (client options: max_attempts, timeouts); ``on_error``
    sees the code of every error that reaches us after botocore's own retries (metrics)."""
    client = make_client(settings, **client_options)
    if on_error is None:
        return DynamoJobStore(client, settings.jobs_table)
    return DynamoJobStore(client, settings.jobs_table, on_error)
