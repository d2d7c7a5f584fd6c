"""Table definitions (DESIGN 2.1, 2.2, 2.4) and their idempotent creation and verification.

An existing table is verified, never altered or deleted: other services own the same tables, and a
mismatch is something for an operator to look at, not for a daemon to "fix".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import error_code

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

STATUS_CREATED_INDEX = "StatusCreatedIndex"
CONVERSATION_INDEX = "ConversationIndex"
JOB_TYPE_INDEX = "JobTypeIndex"
WORKER_STATUS_INDEX = "WorkerStatusIndex"
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

    def attribute_types(self) -> dict[str, str]:
        types = dict(self.key.attributes())
        for _, key in self.indexes:
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
        if self.indexes:
            request["GlobalSecondaryIndexes"] = [
                {"IndexName": name, "KeySchema": key.schema(), "Projection": {"ProjectionType": "ALL"}}
                for name, key in self.indexes
            ]
        return request


JOB_INDEXES: tuple[tuple[str, Key], ...] = (
    (STATUS_CREATED_INDEX, Key(("status", "S"), ("created_at", "S"))),
    (CONVERSATION_INDEX, Key(("conversation_id", "S"), ("created_at", "S"))),
    (JOB_TYPE_INDEX, Key(("job_type", "S"), ("priority", "N"))),
    (WORKER_STATUS_INDEX, Key(("worker_id", "S"), ("status", "S"))),
)
"""The job table's GSIs (DESIGN 2.1); the stores read their key attributes from here."""


def table_specs(settings: Settings) -> list[TableSpec]:
    return [
        TableSpec(
            settings.jobs_table,
            Key(("job_id", "S")),
            JOB_INDEXES,
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
    for name, key in spec.indexes:
        index = existing.get(name)
        if index is None:
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


def ensure_tables(
    client: DynamoDBClient, specs: Iterable[TableSpec], *, wait_seconds: float = 120.0
) -> list[TableOutcome]:
    """Create missing tables, verify existing ones, wait until all are ACTIVE."""
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
        if not created:
            described = client.describe_table(TableName=spec.name)["Table"]
            problems += [f"{spec.name}: {p}" for p in _differences(spec, described)]
        outcomes.append(TableOutcome(spec.name, created))
    if problems:
        raise SchemaMismatch("existing tables contradict the contract:\n  " + "\n  ".join(problems))
    return outcomes
