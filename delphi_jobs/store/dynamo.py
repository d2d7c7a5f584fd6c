"""The JobStore on DynamoDB: the one place that builds DynamoDB expressions for jobs.

Every attribute name goes through ``ExpressionAttributeNames`` (``status`` and ``timestamp`` are
reserved words, and naming all of them means no expression can ever contain a bare one). botocore's
errors become the store's few domain errors; a failed condition becomes ``Lost`` carrying the item as
it was (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), so nobody spends a read to learn why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from delphi_jobs.dynamo import error_code, from_item, to_item, to_value
from delphi_jobs.store.base import (
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
    StoreError,
    StoreUnavailable,
    TableMissing,
    Written,
)
from delphi_jobs.tables import QUERYABLE_INDEXES

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        QueryInputTypeDef,
        ScanInputTypeDef,
        TransactWriteItemTypeDef,
        UpdateItemInputTypeDef,
        UpdateTypeDef,
    )

_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "TransactionInProgressException",
        "LimitExceededException",
    }
)
_INDEX_KEYS = {name: key for name, key in QUERYABLE_INDEXES}


class _Expression:
    """Placeholders for every name and value of one request."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

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

    def condition(self, condition: Condition) -> str:
        if isinstance(condition, Equals):
            return f"{self.name(condition.attribute)} = {self.value(condition.value)}"
        if isinstance(condition, Missing):
            return f"attribute_not_exists({self.name(condition.attribute)})"
        if isinstance(condition, IsNull):
            return f"attribute_type({self.name(condition.attribute)}, {self.value('NULL')})"
        if isinstance(condition, OneOf):
            listed = ", ".join(self.value(v) for v in condition.values)
            return f"{self.name(condition.attribute)} IN ({listed})"
        raise TypeError(f"unknown condition {condition!r}")

    def conditions(self, conditions: Sequence[Condition]) -> str | None:
        return " AND ".join(f"({self.condition(c)})" for c in conditions) or None

    def update(self, change: Change) -> str:
        parts = []
        assigned = [f"{self.name(k)} = {self.value(v)}" for k, v in change.assigned().items()]
        if assigned:
            parts.append("SET " + ", ".join(assigned))
        removed = [self.name(k) for k in change.removed()]
        if removed:
            parts.append("REMOVE " + ", ".join(removed))
        return " ".join(parts)


ErrorObserver = Callable[[str | None], None]


def _ignore(code: str | None) -> None:
    """The default observer of store errors: nobody counts them."""


@contextmanager
def _mapped_errors(table: str, observe: ErrorObserver = _ignore) -> Iterator[None]:
    """botocore's many exceptions -> StoreUnavailable / TableMissing / InvalidRequest / StoreError."""
    try:
        yield
    except (ClientError, BotoCoreError, ArithmeticError, TypeError) as exc:
        mapped = _domain_error(table, exc)
        if mapped.code != "ConditionalCheckFailedException":  # a lost race is an outcome, not an error
            observe(mapped.code)
        raise mapped from exc


def _domain_error(table: str, exc: ClientError | BotoCoreError | ArithmeticError | TypeError) -> StoreError:
    if isinstance(exc, ParamValidationError):
        return InvalidRequest(f"ValidationException: {exc}", "ValidationException")
    if isinstance(exc, ArithmeticError | TypeError):
        # boto3's serializer: a number it cannot store exactly (decimal.Rounded), a type it cannot
        # write. DynamoDB itself answers such values with a ValidationException.
        return InvalidRequest(
            f"ValidationException: a value cannot be written ({type(exc).__name__})", "ValidationException"
        )
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(f"{type(exc).__name__}: {exc}", type(exc).__name__)
    code = error_code(exc) or "ClientError"
    message = f"{code}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
    if code in _RETRYABLE_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
        return StoreUnavailable(message, code)
    if code == "ResourceNotFoundException":
        return TableMissing(
            f"table {table} (or one of its indexes) does not exist: run `delphi-jobs create-tables`", code
        )
    if code == "ValidationException":
        return InvalidRequest(message, code)
    return StoreError(message, code)


class DynamoJobStore:
    def __init__(self, client: DynamoDBClient, table: str, on_error: ErrorObserver = _ignore) -> None:
        self._client = client
        self._table = table
        self._on_error = on_error

    @property
    def table(self) -> str:
        return self._table

    def get(self, job_id: str) -> Item | None:
        with _mapped_errors(self._table, self._on_error):
            response = self._client.get_item(
                TableName=self._table, Key=to_item({"job_id": job_id}), ConsistentRead=True
            )
        item = response.get("Item")
        return from_item(item) if item else None

    def _query_request(
        self, index: str, key: str, range_from: Any, range_to: Any, attributes: Sequence[str] | None = None
    ) -> QueryInputTypeDef:
        if index not in _INDEX_KEYS:
            raise ValueError(f"unknown index {index!r}")
        spec = _INDEX_KEYS[index]
        expr = _Expression()
        clause = f"{expr.name(spec.hash[0])} = {expr.value(key)}"
        if spec.range and (range_from is not None or range_to is not None):
            attribute = expr.name(spec.range[0])
            if range_from is not None and range_to is not None:
                clause += f" AND {attribute} BETWEEN {expr.value(range_from)} AND {expr.value(range_to)}"
            elif range_from is not None:
                clause += f" AND {attribute} >= {expr.value(range_from)}"
            else:
                clause += f" AND {attribute} <= {expr.value(range_to)}"
        projection = ", ".join(expr.name(attribute) for attribute in attributes or ())
        request: QueryInputTypeDef = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": clause,
            "ExpressionAttributeNames": expr.names,
            "ExpressionAttributeValues": expr.values,
        }
        if projection:
            request["ProjectionExpression"] = projection
        return request

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
        request = self._query_request(index, key, range_from, range_to, attributes)
        request["Limit"] = limit
        request["ScanIndexForward"] = not newest_first
        if start:
            request["ExclusiveStartKey"] = to_item(start)
        with _mapped_errors(self._table, self._on_error):
            response = self._client.query(**request)
        last = response.get("LastEvaluatedKey")
        return Page([from_item(i) for i in response.get("Items", [])], from_item(last) if last else None)

    def count(self, index: str, key: str, *, range_from: Any = None, range_to: Any = None) -> int:
        request = self._query_request(index, key, range_from, range_to)
        request["Select"] = "COUNT"
        total = 0
        with _mapped_errors(self._table, self._on_error):
            while True:
                response = self._client.query(**request)
                total += response.get("Count", 0)
                if "LastEvaluatedKey" not in response:
                    return total
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def scan(self, *, limit: int, start: Cursor | None = None) -> Page:
        request: ScanInputTypeDef = {"TableName": self._table, "Limit": limit}
        if start:
            request["ExclusiveStartKey"] = to_item(start)
        with _mapped_errors(self._table, self._on_error):
            response = self._client.scan(**request)
        last = response.get("LastEvaluatedKey")
        return Page([from_item(i) for i in response.get("Items", [])], from_item(last) if last else None)

    def insert(self, item: Item) -> Written:
        try:
            with _mapped_errors(self._table, self._on_error):
                self._client.put_item(
                    TableName=self._table,
                    Item=to_item(item, nulls=True),
                    ConditionExpression="attribute_not_exists(#id)",
                    ExpressionAttributeNames={"#id": "job_id"},
                )
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise JobExists(f"a job with id {item.get('job_id')!r} exists", exc.code) from None
            raise
        return Written(dict(item))

    def _update_request(self, job_id: str, change: Change) -> UpdateItemInputTypeDef:
        expr = _Expression()
        request: UpdateItemInputTypeDef = {
            "TableName": self._table,
            "Key": to_item({"job_id": job_id}),
            "UpdateExpression": expr.update(change),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        condition = expr.conditions(change.when)
        if condition:
            request["ConditionExpression"] = condition
        request["ExpressionAttributeNames"] = expr.names
        if expr.values:
            request["ExpressionAttributeValues"] = expr.values
        return request

    def update(self, job_id: str, change: Change) -> Written | Lost:
        try:
            with _mapped_errors(self._table, self._on_error):
                request = self._update_request(job_id, change)
                request["ReturnValues"] = "ALL_NEW"
                response = self._client.update_item(**request)
        except StoreError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return Lost(_old_item(exc.__cause__))
            raise
        return Written(from_item(response.get("Attributes", {})))

    def transact(self, job_id: str, change: Change, inserts: Sequence[Item]) -> Written | Lost:
        with _mapped_errors(self._table, self._on_error):
            update = self._update_request(job_id, change)
        change_item: UpdateTypeDef = {
            "TableName": update["TableName"],
            "Key": update["Key"],
            "UpdateExpression": update["UpdateExpression"],
            "ExpressionAttributeNames": update["ExpressionAttributeNames"],
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if "ExpressionAttributeValues" in update:
            change_item["ExpressionAttributeValues"] = update["ExpressionAttributeValues"]
        if "ConditionExpression" in update:
            change_item["ConditionExpression"] = update["ConditionExpression"]
        actions: list[TransactWriteItemTypeDef] = [{"Update": change_item}]
        with _mapped_errors(self._table, self._on_error):
            for item in inserts:
                actions.append(
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(item, nulls=True),
                            "ConditionExpression": "attribute_not_exists(#id)",
                            "ExpressionAttributeNames": {"#id": "job_id"},
                        }
                    }
                )
        try:
            with _mapped_errors(self._table, self._on_error):
                self._client.transact_write_items(TransactItems=actions)
        except StoreError as exc:
            if exc.code != "TransactionCanceledException" or not isinstance(exc.__cause__, ClientError):
                raise
            reasons = exc.__cause__.response.get("CancellationReasons", [])
            codes = [str(r.get("Code", "None")) for r in reasons]
            if codes and codes[0] == "ConditionalCheckFailed":
                old = reasons[0].get("Item")
                return Lost(from_item(old) if old else None)
            if "ConditionalCheckFailed" in codes[1:]:
                ids = ", ".join(str(i.get("job_id")) for i in inserts)
                raise JobExists(f"a job with one of the ids {ids} exists", "ConditionalCheckFailed") from None
            if "ValidationError" in codes:  # e.g. an item of the transaction over the size limit
                raise InvalidRequest(f"ValidationException: {exc}", "ValidationException") from None
            raise
        return Written(None)


def _old_item(cause: BaseException | None) -> Item | None:
    if isinstance(cause, ClientError):
        old: Mapping[str, Any] | None = cause.response.get("Item")  # type: ignore[assignment]
        return from_item(old) if old else None
    return None
