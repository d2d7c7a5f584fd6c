"""`delphi-jobs create-tables` creates exactly the contract's schema, twice is harmless, and an
existing table that contradicts the contract is reported, never altered."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from delphi_jobs.cli import main
from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client


def describe(client: Any, name: str) -> dict[str, Any]:
    return client.describe_table(TableName=name)["Table"]  # type: ignore[no-any-return]


def keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def indexes(table: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    found = {}
    for index in table.get("GlobalSecondaryIndexes", []):
        assert index["Projection"]["ProjectionType"] == "ALL"
        found[index["IndexName"]] = keys(index["KeySchema"])
    return found


def types(table: dict[str, Any]) -> dict[str, str]:
    return {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}


def run_create_tables(endpoint: str, prefix: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert (
        main(["create-tables", "--endpoint-url", endpoint, "--region", "us-east-1", "--table-prefix", prefix])
        == 0
    )
    return capsys.readouterr().out


def test_create_tables_exact_schema_twice(dynamo_endpoint: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"ct{uuid.uuid4().hex[:8]}_"
    first = run_create_tables(dynamo_endpoint, prefix, capsys)
    assert first.count("created") == 5
    second = run_create_tables(dynamo_endpoint, prefix, capsys)
    assert second.count("exists, verified") == 5

    client = make_client(Settings(endpoint_url=dynamo_endpoint, table_prefix=prefix))
    jobs = describe(client, f"{prefix}Delphi_JobQueue")
    assert keys(jobs["KeySchema"]) == [("job_id", "HASH")]
    assert jobs["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert indexes(jobs) == {
        "StatusCreatedIndex": [("status", "HASH"), ("created_at", "RANGE")],
        "ConversationIndex": [("conversation_id", "HASH"), ("created_at", "RANGE")],
        "JobTypeIndex": [("job_type", "HASH"), ("priority", "RANGE")],
        "WorkerStatusIndex": [("worker_id", "HASH"), ("status", "RANGE")],
    }
    assert types(jobs) == {
        "job_id": "S",
        "status": "S",
        "created_at": "S",
        "conversation_id": "S",
        "job_type": "S",
        "priority": "N",
        "worker_id": "S",
    }

    reports = describe(client, f"{prefix}Delphi_NarrativeReports")
    assert keys(reports["KeySchema"]) == [("rid_section_model", "HASH"), ("timestamp", "RANGE")]
    assert reports["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert indexes(reports) == {"ReportIdTimestampIndex": [("report_id", "HASH"), ("timestamp", "RANGE")]}
    assert types(reports) == {"rid_section_model": "S", "timestamp": "S", "report_id": "S"}

    for name, range_key, range_type in [
        ("Delphi_CommentHierarchicalClusterAssignments", "comment_id", "N"),
        ("Delphi_CommentClustersLLMTopicNames", "topic_key", "S"),
        ("Delphi_CommentClustersStructureKeywords", "cluster_key", "S"),
    ]:
        table = describe(client, prefix + name)
        assert keys(table["KeySchema"]) == [("conversation_id", "HASH"), (range_key, "RANGE")]
        assert types(table) == {"conversation_id": "S", range_key: range_type}


def test_contradicting_table_is_reported_not_altered(
    dynamo_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"bad{uuid.uuid4().hex[:8]}_"
    client = make_client(Settings(endpoint_url=dynamo_endpoint, table_prefix=prefix))
    client.create_table(
        TableName=f"{prefix}Delphi_JobQueue",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    code = main(["create-tables", "--endpoint-url", dynamo_endpoint, "--table-prefix", prefix])
    err = capsys.readouterr().err
    assert code == 3
    assert "key schema" in err and "StatusCreatedIndex is missing" in err
    assert keys(describe(client, f"{prefix}Delphi_JobQueue")["KeySchema"]) == [("id", "HASH")]
