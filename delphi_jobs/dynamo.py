"""boto3 client factory and item (de)serialization: the one place that knows how to reach DynamoDB."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import ClientError

from delphi_jobs.config import Settings

_DUMMY_KEY = "delphilocal"  # DynamoDB Local accepts letters and digits only
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def make_client(
    settings: Settings, *, max_attempts: int = 5, read_timeout: float = 20.0, connect_timeout: float = 5.0
) -> Any:
    """A low-level DynamoDB client. Local endpoints get dummy credentials when none are configured.

    Each worker thread builds its own client: boto3 clients are thread-safe, but one per worker keeps
    connection pools and retry state apart and mirrors how several hosts would behave.
    """
    session = boto3.session.Session(region_name=settings.region)
    dummy = settings.is_local_endpoint and session.get_credentials() is None
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max(10, settings.max_workers * 2),
    )
    return session.client(
        "dynamodb",
        endpoint_url=settings.endpoint_url,
        config=config,
        aws_access_key_id=_DUMMY_KEY if dummy else None,
        aws_secret_access_key=_DUMMY_KEY if dummy else None,
    )


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values -> DynamoDB attribute values. None values are left out, never written."""
    return {name: _serializer.serialize(value) for name, value in values.items() if value is not None}


def to_value(value: Any) -> dict[str, Any]:
    return dict(_serializer.serialize(value))


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def query_all(client: Any, **request: Any) -> Iterator[dict[str, Any]]:
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


def is_condition_failure(exc: BaseException) -> bool:
    return error_code(exc) == "ConditionalCheckFailedException"


class Expression:
    """Builds Update/Condition expressions where every attribute name is a ``#`` placeholder.

    Naming every attribute (not only the reserved words ``status`` and ``timestamp``) means no
    expression this project sends can ever contain a bare reserved word.
    """

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self._conditions: list[str] = []

    def name(self, attribute: str) -> str:
        for placeholder, existing in self.names.items():
            if existing == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_value(value)
        return placeholder

    def set(self, attribute: str, value: Any) -> Expression:
        self._sets.append(f"{self.name(attribute)} = {self.value(value)}")
        return self

    def set_many(self, attributes: Mapping[str, Any]) -> Expression:
        for attribute, value in attributes.items():
            if value is None:
                self.remove(attribute)
            else:
                self.set(attribute, value)
        return self

    def remove(self, *attributes: str) -> Expression:
        self._removes += [self.name(a) for a in attributes]
        return self

    def when(self, clause: str) -> Expression:
        self._conditions.append(clause)
        return self

    def equals(self, attribute: str, value: Any) -> str:
        return f"{self.name(attribute)} = {self.value(value)}"

    def missing(self, attribute: str) -> str:
        return f"attribute_not_exists({self.name(attribute)})"

    def one_of(self, attribute: str, values: Iterable[Any]) -> str:
        return f"{self.name(attribute)} IN ({', '.join(self.value(v) for v in values)})"

    def equals_or_missing(self, attribute: str, value: Any) -> str:
        """Condition on the value as it was read: equal to it, or still absent if it was absent."""
        return self.missing(attribute) if value is None else self.equals(attribute, value)

    def update_expression(self) -> str:
        parts = []
        if self._sets:
            parts.append("SET " + ", ".join(self._sets))
        if self._removes:
            parts.append("REMOVE " + ", ".join(dict.fromkeys(self._removes)))
        return " ".join(parts)

    def condition_expression(self) -> str | None:
        return " AND ".join(f"({c})" for c in self._conditions) or None

    def request(self) -> dict[str, Any]:
        """The expression parts of an UpdateItem / Update (transaction) request."""
        request: dict[str, Any] = {"ExpressionAttributeNames": self.names}
        if self._sets or self._removes:
            request["UpdateExpression"] = self.update_expression()
        condition = self.condition_expression()
        if condition:
            request["ConditionExpression"] = condition
        if self.values:
            request["ExpressionAttributeValues"] = self.values
        return request
