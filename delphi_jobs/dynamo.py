"""Reaching DynamoDB: the client factory and item (de)serialization, shared by every store."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import Binary, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from delphi_jobs import requestlog
from delphi_jobs.config import Settings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import QueryInputTypeDef

_DUMMY_KEY = "delphilocal"  # DynamoDB Local accepts letters and digits only
_serializer = TypeSerializer()
_sessions: dict[str, boto3.session.Session] = {}
_sessions_lock = threading.Lock()


def _session(region: str) -> boto3.session.Session:
    """One session per process and region: a session per client costs ~8 MB and ~90 ms of CPU, and
    creating clients from one session is safe under a lock."""
    with _sessions_lock:
        if region not in _sessions:
            _sessions[region] = boto3.session.Session(region_name=region)
        return _sessions[region]


def make_client(
    settings: Settings, *, max_attempts: int = 5, read_timeout: float = 20.0, connect_timeout: float = 5.0
) -> DynamoDBClient:
    """A low-level DynamoDB client (thread-safe). Local endpoints get dummy credentials when none are
    configured, as the original deployment does."""
    session = _session(settings.region)
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max(10, settings.max_workers * 2),
    )
    with _sessions_lock:
        dummy = settings.is_local_endpoint and session.get_credentials() is None
        client = session.client(
            "dynamodb",
            endpoint_url=settings.endpoint_url,
            config=config,
            aws_access_key_id=_DUMMY_KEY if dummy else None,
            aws_secret_access_key=_DUMMY_KEY if dummy else None,
        )
    if settings.request_log:
        requestlog.attach(client, settings.request_log)
    return client


MAX_DIGITS = 38
"""DynamoDB keeps numbers to 38 significant digits."""


def _storable(value: Any) -> Any:
    """Numbers as DynamoDB keeps them: a number read back may carry trailing zeros past 38 digits
    (1E+38 comes back as 39 digits), which boto3's serializer refuses although the value is storable;
    the zeros move into the exponent. A number that truly needs more digits still fails (Rounded)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        if isinstance(value, Mapping):
            return {name: _storable(inner) for name, inner in value.items()}
        if isinstance(value, list):
            return [_storable(inner) for inner in value]
        return value
    sign, digits, exponent = Decimal(value).as_tuple()
    if len(digits) <= MAX_DIGITS or not isinstance(exponent, int):
        return value
    while len(digits) > MAX_DIGITS and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    return Decimal((sign, digits, exponent))


def to_item(values: Mapping[str, Any], *, nulls: bool = False) -> dict[str, Any]:
    """Python values -> DynamoDB attribute values. None values are left out, or written as NULL with
    ``nulls`` (a record inserted exactly as given, as JavaScript's DocumentClient writes ``null``)."""
    return {
        name: _serializer.serialize(_storable(value))
        for name, value in values.items()
        if nulls or value is not None
    }


def to_value(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(_storable(value)))


def _number(text: str) -> Decimal:
    """Exact, whatever the size: boto3's own deserializer raises on numbers of more than 38 digits,
    which DynamoDB stores (e.g. 1E+38 comes back as 39 digits), and one such attribute must not make a
    whole record unreadable."""
    return Decimal(text)


def from_value(value: Mapping[str, Any]) -> Any:
    (kind, raw), *_ = value.items()
    if kind in ("S", "BOOL"):
        return raw
    if kind == "N":
        return _number(raw)
    if kind == "NULL":
        return None
    if kind == "B":
        return Binary(raw)
    if kind == "M":
        return {name: from_value(inner) for name, inner in raw.items()}
    if kind == "L":
        return [from_value(inner) for inner in raw]
    if kind == "SS":
        return set(raw)
    if kind == "NS":
        return {_number(n) for n in raw}
    if kind == "BS":
        return {Binary(b) for b in raw}
    raise TypeError(f"unknown DynamoDB type {kind!r}")


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_value(value) for name, value in item.items()}


def query_all(client: DynamoDBClient, request: QueryInputTypeDef) -> Iterator[dict[str, Any]]:
    """Every item a Query matches, page after page, deserialized (bounded reads are the caller's
    business: use it only where the result set is bounded, e.g. one conversation or one report)."""
    while True:
        page = client.query(**request)
        for item in page.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in page:
            return
        request = {**request, "ExclusiveStartKey": page["LastEvaluatedKey"]}


def error_code(exc: BaseException) -> str | None:
    """The DynamoDB error code of a botocore ClientError (tests and callers branch on codes, not text)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None
