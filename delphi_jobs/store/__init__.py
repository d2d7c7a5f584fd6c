"""Storage of job records behind one small interface (see base.py); DynamoDB and in-memory backends."""

from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.store.base import (
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
)
from delphi_jobs.store.dynamo import DynamoJobStore

__all__ = [
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
    "open_store",
]


def open_store(settings: Settings, **client_options: Any) -> DynamoJobStore:
    """The job table of ``settings`` on DynamoDB (client options: max_attempts, timeouts)."""
    return DynamoJobStore(make_client(settings, **client_options), settings.jobs_table)
