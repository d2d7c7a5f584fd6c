"""`delphi-jobs create-tables` creates exactly the contract's schema, twice is harmless, and an
existing table that contradicts the contract is reported, never altered."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from delphi_jobs.cli import main
from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import INDEX_RETRY_SECONDS, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import open_store
from delphi_jobs.tables import JOB_INDEXES, STATUS_PRIORITY_INDEX, Key, table_specs, verify_tables
from tests.lifecycle.test_priority import Clock


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


def jobs_settings(endpoint: str) -> Settings:
    return Settings(endpoint_url=endpoint, region="us-east-1", table_prefix=f"pi{uuid.uuid4().hex[:8]}_")


def create_tables(settings: Settings, *flags: str) -> int:
    argv = ["create-tables", "--endpoint-url", str(settings.endpoint_url), "--region", "us-east-1"]
    return main([*argv, "--table-prefix", settings.table_prefix, *flags])


def test_priority_index_is_added_online_to_an_existing_table(
    dynamo_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`create-tables --with-priority-index` on a live job table: the index is added (UpdateTable),
    backfilled with the jobs already there, and waited for; a running queue starts using it within
    INDEX_RETRY_SECONDS without a restart; running the command again changes nothing; verification
    accepts the table with and without the index."""
    settings = jobs_settings(dynamo_endpoint)
    client = make_client(settings)
    assert create_tables(settings) == 0
    assert verify_tables(client, table_specs(settings)) == []
    clock = Clock()
    queue = JobQueue(open_store(settings), clock=clock)
    for i in range(40):
        queue.enqueue({"job_id": f"bulk-{i:03d}", "conversation_id": "1"})
    queue.enqueue({"job_id": "urgent", "conversation_id": "1", "priority": 90})
    assert "urgent" not in {j.job_id for j in queue.find_due(Status.PENDING)}, "no index: head page only"
    capsys.readouterr()

    assert create_tables(settings, "--with-priority-index") == 0
    out = capsys.readouterr().out
    assert f"{settings.jobs_table}: exists, verified; index StatusPriorityIndex added online" in out
    jobs = describe(client, settings.jobs_table)
    assert indexes(jobs)["StatusPriorityIndex"] == [("status", "HASH"), ("priority", "RANGE")]
    statuses = {i["IndexName"]: i["IndexStatus"] for i in jobs["GlobalSecondaryIndexes"]}
    assert statuses["StatusPriorityIndex"] == "ACTIVE"
    assert verify_tables(client, table_specs(settings)) == []
    assert verify_tables(client, table_specs(settings, priority_index=True)) == []

    clock.now += timedelta(seconds=INDEX_RETRY_SECONDS + 1)
    assert queue.find_due(Status.PENDING)[0].job_id == "urgent", "backfilled, and found by the lane"

    assert create_tables(settings, "--with-priority-index") == 0
    assert capsys.readouterr().out.count("exists, verified\n") == 5


def test_create_tables_with_priority_index_makes_it_with_the_table(
    dynamo_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = jobs_settings(dynamo_endpoint)
    assert create_tables(settings, "--with-priority-index") == 0
    assert capsys.readouterr().out.count("created") == 5
    jobs = describe(make_client(settings), settings.jobs_table)
    assert indexes(jobs)["StatusPriorityIndex"] == [("status", "HASH"), ("priority", "RANGE")]
    assert types(jobs)["priority"] == "N"


def test_a_wrong_priority_index_is_reported_and_a_contradicting_table_gets_none(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = jobs_settings(moto_endpoint)
    client = make_client(settings)
    [jobs, *_] = table_specs(settings)
    wrong = (STATUS_PRIORITY_INDEX, Key(("status", "S"), ("created_at", "S")))
    client.create_table(**replace(jobs, indexes=(*JOB_INDEXES, wrong)).create_request())  # type: ignore[arg-type]
    problems = verify_tables(client, [jobs])
    assert len(problems) == 1 and "index StatusPriorityIndex has key schema" in problems[0]

    bad = jobs_settings(moto_endpoint)
    client.create_table(
        TableName=bad.jobs_table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert create_tables(bad, "--with-priority-index") == 3
    assert describe(client, bad.jobs_table).get("GlobalSecondaryIndexes", []) == []
