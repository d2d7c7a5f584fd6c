"""The producers' records, attribute for attribute, on both DynamoDB tiers: what each producer writes
(names, DynamoDB types, JSON spacing, timestamp formats), that it parses without a problem, and that
our claim takes it as it is (no version, no worker_id, naive timestamps)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import Job
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.store import open_store

ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
NAIVE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?")

SERVER_PIPELINE = {
    "job_id": "S", "status": "S", "created_at": "S", "updated_at": "S", "version": "N", "started_at": "S",
    "completed_at": "S", "worker_id": "S", "job_type": "S", "priority": "N", "conversation_id": "S",
    "report_id": "S", "retry_count": "N", "max_retries": "N", "timeout_seconds": "N", "job_config": "S",
    "job_results": "S", "logs": "S", "created_by": "S",
}  # fmt: skip
SERVER_NARRATIVE = {
    "job_id": "S", "status": "S", "created_at": "S", "updated_at": "S", "conversation_id": "S",
    "report_id": "S", "job_type": "S", "job_config": "S", "priority": "N", "version": "N", "worker_id": "S",
    "started_at": "S", "completed_at": "S", "job_results": "S", "logs": "S", "environment": "S",
}  # fmt: skip
ORIGINAL_CHECKER = {
    "job_id": "S", "status": "S", "job_type": "S", "batch_job_id": "S", "batch_id": "S",
    "conversation_id": "S", "report_id": "S", "created_at": "S", "updated_at": "S", "priority": "N",
    "version": "N", "logs": "S",
}  # fmt: skip
CLI = {name: kind for name, kind in SERVER_PIPELINE.items() if name != "report_id"}

UI_PIPELINE_CONFIG = (
    '{"stages":[{"stage":"PCA","config":{}},{"stage":"UMAP","config":{"n_neighbors":15,"min_dist":0.1}},'
    '{"stage":"REPORT","config":{"model":"claude-opus-4-20250514","include_topics":true}}],'
    '"visualizations":["basic","enhanced","multilayer"],"include_moderation":true}'
)
UI_NARRATIVE_CONFIG = (
    '{"job_type":"CREATE_NARRATIVE_BATCH","stages":[{"stage":"CREATE_NARRATIVE_BATCH_CONFIG_STAGE",'
    '"config":{"model":"claude-opus-4-20250514","max_batch_size":20,"no_cache":false,'
    '"report_id":"r_contract","include_moderation":false}}]}'
)

RECORDS: dict[str, tuple[Callable[[], dict[str, Any]], dict[str, str]]] = {
    "server pipeline (edge)": (
        lambda: producer_records.server_full_pipeline(42, "r_contract", include_moderation=True),
        SERVER_PIPELINE,
    ),
    "server pipeline (guard era)": (
        lambda: producer_records.server_full_pipeline_guarded(42, "r_contract"),
        SERVER_PIPELINE,
    ),
    "server narrative": (lambda: producer_records.server_narrative("r_contract", 42), SERVER_NARRATIVE),
    "original checker": (
        lambda: producer_records.original_checker(
            "batch_report_r_contract_1_ab", "msgbatch_1", 42, "r_contract"
        ),
        ORIGINAL_CHECKER,
    ),
    "cli pipeline": (lambda: producer_records.cli_job(42), CLI),
    "cli narrative": (
        lambda: producer_records.cli_job(42, "CREATE_NARRATIVE_BATCH", model="m", report_id="r_contract"),
        CLI,
    ),
}


def stored(settings: Settings, record: dict[str, Any]) -> dict[str, Any]:
    client = make_client(settings)
    producer_records.put_raw(client, settings.jobs_table, record)
    item = client.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": record["job_id"]}})["Item"]
    return dict(item)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_record_is_stored_parsed_and_claimed_as_written(settings: Settings, name: str) -> None:
    build, shape = RECORDS[name]
    record = build()
    item = stored(settings, record)
    assert {attr: next(iter(value)) for attr, value in item.items()} == shape
    job = Job.from_item(record)
    assert job.problems == () and job.zid() == 42
    queue = JobQueue(open_store(settings))
    claim = queue.claim(job, "contract-worker", 30)
    assert isinstance(claim, Claim) and claim.version == 2


def test_server_records_are_byte_exact(settings: Settings) -> None:
    pipeline = stored(
        settings, producer_records.server_full_pipeline(42, "r_contract", include_moderation=True)
    )
    assert pipeline["job_config"]["S"] == UI_PIPELINE_CONFIG
    assert ISO_MS_Z.fullmatch(pipeline["created_at"]["S"]) and pipeline["version"]["N"] == "1"
    assert json.loads(pipeline["logs"]["S"]) == {
        "entries": [
            {
                "timestamp": pipeline["created_at"]["S"],
                "level": "INFO",
                "message": "Job created for conversation 42",
            }
        ],
        "log_location": "",
    }
    assert pipeline["job_results"]["S"] == "{}" and pipeline["created_by"]["S"] == "api"
    guarded = stored(settings, producer_records.server_full_pipeline_guarded(42, "r_contract"))
    assert guarded["job_config"]["S"] == '{"include_moderation":false}'

    narrative = stored(settings, producer_records.server_narrative("r_contract", 42))
    assert narrative["job_config"]["S"] == UI_NARRATIVE_CONFIG
    assert narrative["logs"]["S"] == '{"entries":[]}'
    assert narrative["environment"]["S"] == (
        '{"NARRATIVE_BATCH_MODEL":"claude-opus-4-20250514","NARRATIVE_BATCH_MAX_SIZE":"20",'
        '"NARRATIVE_BATCH_NO_CACHE":"0"}'
    )
    assert re.fullmatch(r"batch_report_r_contract_\d{10}_[0-9a-f]{8}", narrative["job_id"]["S"])
    unset = stored(settings, producer_records.server_narrative("r_contract", 42, include_moderation=None))
    assert "include_moderation" not in unset["job_config"]["S"]


def test_python_producers_keep_their_own_spacing_and_naive_times(settings: Settings) -> None:
    checker = stored(
        settings, producer_records.original_checker("batch_report_x_1_ab", "msgbatch_1", 42, "r")
    )
    assert checker["logs"]["S"] == '{"entries": []}'
    assert NAIVE.fullmatch(checker["created_at"]["S"])
    assert re.fullmatch(r"batch_check_batch_report_x_1_ab_\d{10}", checker["job_id"]["S"])
    cli = stored(settings, producer_records.cli_job(42))
    assert NAIVE.fullmatch(cli["created_at"]["S"]) and cli["timeout_seconds"]["N"] == "7200"
    assert cli["job_results"]["S"] == "{}" and cli["created_by"]["S"] == "delphi_cli"
    assert json.loads(cli["job_config"]["S"])["stages"][2]["config"] == {
        "model": None,
        "include_topics": True,
    }
    assert ", " in cli["logs"]["S"]
