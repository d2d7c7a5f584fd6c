"""Table definitions (DESIGN 2.1, 2.2, 2.4) and their idempotent creation and verification.

An existing table is verified, never altered or deleted: other services own the same tables, and a
mismatch is something for an operator to look at, not for a daemon to "fix". The one exception is
additive and asked for by an operator: ``create-tables --with-priority-index`` adds our optional
``StatusPriorityIndex`` to an existing job table online (producers and readers never see it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import error_code

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        CreateGlobalSecondaryIndexActionTypeDef,
        CreateTableInputTypeDef,
    )

STATUS_CREATED_INDEX = "StatusCreatedIndex"
CONVERSATION_INDEX = "ConversationIndex"
JOB_TYPE_INDEX = "JobTypeIndex"
WORKER_STATUS_INDEX = "WorkerStatusIndex"
STATUS_PRIORITY_INDEX = "StatusPriorityIndex"
REPORT_ID_TIMESTAMP_INDEX = "ReportIdTimestampIndex"


@dataclass(frozen=True)
class Key:
    hash: tuple[str, str]
    range: tuple[str, str] | None = None

    def schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.hash[0], "KeyType": "HASH"}]
        if self.range:
            schema.append({"AttributeName": self.range[0], "KeyType": "RANGE"})
        return schema

    def attributes(self) -> list[tuple[str, str]]:
        return [self.hash] + ([self.range] if self.range else [])


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: Key
    indexes: tuple[tuple[str, Key], ...] = ()
    """Required: a table without one of them contradicts the contract."""
    optional: tuple[tuple[str, Key], ...] = ()
    """Ours, outside the contract: verified when present, never required; made (with a new table, or
    added online to an existing one) only when ``add_optional``."""
    add_optional: bool = False

    def wanted(self) -> tuple[tuple[str, Key], ...]:
        return self.indexes + (self.optional if self.add_optional else ())

    def attribute_types(self) -> dict[str, str]:
        types = dict(self.key.attributes())
        for _, key in self.wanted():
            types.update(key.attributes())
        return types

    def create_request(self) -> dict[str, object]:
        request: dict[str, object] = {
            "TableName": self.name,
            "KeySchema": self.key.schema(),
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in sorted(self.attribute_types().items())
            ],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.wanted():
            request["GlobalSecondaryIndexes"] = [_index_request(name, key) for name, key in self.wanted()]
        return request


def _index_request(name: str, key: Key) -> dict[str, Any]:
    return {"IndexName": name, "KeySchema": key.schema(), "Projection": {"ProjectionType": "ALL"}}


JOB_INDEXES: tuple[tuple[str, Key], ...] = (
    (STATUS_CREATED_INDEX, Key(("status", "S"), ("created_at", "S"))),
    (CONVERSATION_INDEX, Key(("conversation_id", "S"), ("created_at", "S"))),
    (JOB_TYPE_INDEX, Key(("job_type", "S"), ("priority", "N"))),
    (WORKER_STATUS_INDEX, Key(("worker_id", "S"), ("status", "S"))),
)
"""The job table's GSIs (DESIGN 2.1); the stores read their key attributes from here."""

PRIORITY_INDEX: tuple[str, Key] = (STATUS_PRIORITY_INDEX, Key(("status", "S"), ("priority", "N")))
"""Optional (``create-tables --with-priority-index``): the due jobs of a status by ``priority``, which
every producer record carries, so that a high-priority job is found whatever the backlog ahead of it
(docs/poller.md, "Lanes"). Its keys are attributes the contract already types (status S, priority N):
adding it cannot make DynamoDB refuse a write that it accepts today."""

QUERYABLE_INDEXES: tuple[tuple[str, Key], ...] = (*JOB_INDEXES, PRIORITY_INDEX)
"""Every index a job store may be asked to query; the optional one may be absent from a table."""


def table_specs(settings: Settings, *, priority_index: bool = False) -> list[TableSpec]:
    """The tables; ``priority_index``: create the optional StatusPriorityIndex (or add it online)."""
    return [
        TableSpec(
            settings.jobs_table,
            Key(("job_id", "S")),
            JOB_INDEXES,
            optional=(PRIORITY_INDEX,),
            add_optional=priority_index,
        ),
        TableSpec(
            settings.reports_table,
            Key(("rid_section_model", "S"), ("timestamp", "S")),
            ((REPORT_ID_TIMESTAMP_INDEX, Key(("report_id", "S"), ("timestamp", "S"))),),
        ),
        TableSpec(settings.cluster_assignments_table, Key(("conversation_id", "S"), ("comment_id", "N"))),
        TableSpec(settings.topic_names_table, Key(("conversation_id", "S"), ("topic_key", "S"))),
        TableSpec(settings.structure_keywords_table, Key(("conversation_id", "S"), ("cluster_key", "S"))),
    ]


class SchemaMismatch(RuntimeError):
    """An existing table contradicts the wire contract; the message lists every difference."""


@dataclass(frozen=True)
class TableOutcome:
    name: str
    created: bool
    indexes_added: tuple[str, ...] = ()


def _differences(spec: TableSpec, described: Mapping[str, Any]) -> list[str]:
    problems = []
    key_schema = described.get("KeySchema")
    if key_schema != spec.key.schema():
        problems.append(f"key schema is {key_schema}, expected {spec.key.schema()}")
    declared = {d["AttributeName"]: d["AttributeType"] for d in described.get("AttributeDefinitions", [])}
    for name, type_ in spec.attribute_types().items():
        if declared.get(name) not in (None, type_):
            problems.append(f"attribute {name} has type {declared[name]}, expected {type_}")
    existing = {index["IndexName"]: index for index in described.get("GlobalSecondaryIndexes", [])}
    for name, key in spec.indexes + spec.optional:
        index = existing.get(name)
        if index is None:
            if (name, key) in spec.wanted():
                problems.append(f"global secondary index {name} is missing")
            continue
        if index.get("KeySchema") != key.schema():
            problems.append(f"index {name} has key schema {index.get('KeySchema')}, expected {key.schema()}")
        projection = index.get("Projection", {}).get("ProjectionType")
        if projection != "ALL":
            problems.append(f"index {name} projects {projection}, expected ALL")
    return problems


def _wait_active(client: DynamoDBClient, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        table = client.describe_table(TableName=name)["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} not ACTIVE after {timeout:.0f}s")
        time.sleep(0.5)


def verify_tables(client: Any, specs: Iterable[TableSpec]) -> list[str]:
    """Every way the existing tables differ from the contract, a missing table included; creates nothing."""
    problems: list[str] = []
    for spec in specs:
        try:
            described = client.describe_table(TableName=spec.name)["Table"]
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            problems.append(f"{spec.name}: table is missing (delphi-jobs create-tables creates it)")
            continue
        problems += [f"{spec.name}: {p}" for p in _differences(spec, described)]
    return problems


def _add_missing_indexes(client: DynamoDBClient, spec: TableSpec, wait_seconds: float) -> tuple[str, ...]:
    """Add the wanted optional indexes an existing table lacks, online (UpdateTable; the table stays
    readable and writable while DynamoDB backfills), one at a time as DynamoDB requires, each waited
    for until ACTIVE. Another operator adding the same index at the same moment is not an error."""
    added: list[str] = []
    for name, key in spec.optional if spec.add_optional else ():
        described = client.describe_table(TableName=spec.name)["Table"]
        if any(i["IndexName"] == name for i in described.get("GlobalSecondaryIndexes", [])):
            continue
        try:
            client.update_table(
                TableName=spec.name,
                AttributeDefinitions=cast(
                    "list[AttributeDefinitionTypeDef]",
                    [{"AttributeName": n, "AttributeType": t} for n, t in key.attributes()],
                ),
                GlobalSecondaryIndexUpdates=[
                    {"Create": cast("CreateGlobalSecondaryIndexActionTypeDef", _index_request(name, key))}
                ],
            )
        except Exception:
            described = client.describe_table(TableName=spec.name)["Table"]
            if not any(i["IndexName"] == name for i in described.get("GlobalSecondaryIndexes", [])):
                raise
        else:
            added.append(name)
        _wait_active(client, spec.name, wait_seconds)
    return tuple(added)


def ensure_tables(
    client: DynamoDBClient, specs: Iterable[TableSpec], *, wait_seconds: float = 120.0
) -> list[TableOutcome]:
    """Create missing tables, verify existing ones (adding wanted optional indexes online), wait until
    all are ACTIVE. TimeoutError when a table or index is not ACTIVE within ``wait_seconds`` (a large
    table's new index can take a long time to backfill; running this again goes on waiting)."""
    outcomes: list[TableOutcome] = []
    problems: list[str] = []
    for spec in specs:
        try:
            client.create_table(**cast("CreateTableInputTypeDef", spec.create_request()))
            created = True
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            created = False
        _wait_active(client, spec.name, wait_seconds)
        added: tuple[str, ...] = ()
        if not created:
            described = client.describe_table(TableName=spec.name)["Table"]
            found = _differences(replace(spec, add_optional=False), described)
            if not found:  # a table that contradicts the contract gets nothing added
                added = _add_missing_indexes(client, spec, wait_seconds)
                found = _differences(spec, client.describe_table(TableName=spec.name)["Table"])
            problems += [f"{spec.name}: {p}" for p in found]
        outcomes.append(TableOutcome(spec.name, created, added))
    if problems:
        raise SchemaMismatch("existing tables contradict the contract:\n  " + "\n  ".join(problems))
    return outcomes
