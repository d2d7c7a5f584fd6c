"""``DELPHI_REQUEST_LOG``: every DynamoDB call of a process, one line each, so the benchmarks can count
a real poller's requests from outside (docs/performance.md)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from delphi_jobs import requestlog
from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from tests.pollers import poller_env, run_command

REPO = Path(__file__).resolve().parents[2]


def test_request_log_records_each_call(moto_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    settings = dataclasses.replace(moto_settings, request_log=str(path))
    table, key = settings.jobs_table, {"job_id": {"S": "absent"}}
    client = make_client(settings)
    client.describe_table(TableName=table)
    client.get_item(TableName=table, Key=key)
    make_client(settings).get_item(TableName=table, Key=key)  # every client of the process
    assert [op for _, op in requestlog.read(str(path))] == ["DescribeTable", "GetItem", "GetItem"]


def test_poller_runs_an_extra_job_type_and_logs_its_calls(moto_settings: Settings, tmp_path: Path) -> None:
    client = make_client(moto_settings)
    record = producer_records.server_full_pipeline(1, job_type="TEST_ECHO")
    producer_records.put_raw(client, moto_settings.jobs_table, record)
    calls = tmp_path / "calls.log"
    env = poller_env(
        moto_settings,
        tmp_path,
        DELPHI_EXTRA_HANDLERS="tests.unit.test_extra_handlers:EchoHandler",
        DELPHI_REQUEST_LOG=str(calls),
        PYTHONPATH=str(REPO),  # where the handler's module is found
    )
    done = run_command(
        env, sys.executable, "-m", "delphi_jobs", "poll", "--exit-when-idle", "--interval", "0.1"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    key = {"job_id": {"S": record["job_id"]}}
    item = client.get_item(TableName=moto_settings.jobs_table, Key=key)["Item"]
    assert item["status"]["S"] == "COMPLETED" and record["job_id"] in item["job_results"]["S"]
    operations = [op for _, op in requestlog.read(str(calls))]
    assert operations.count("UpdateItem") >= 2 and "Query" in operations
