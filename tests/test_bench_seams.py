"""The two switches the benchmarks measure a real poller through (bench/, docs/performance.md):
``DELPHI_EXTRA_HANDLERS`` adds a job type, ``DELPHI_REQUEST_LOG`` records every DynamoDB call."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from delphi_jobs import requestlog
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import default_registry
from delphi_jobs.handlers.base import Completed, JobContext, Outcome
from delphi_jobs.model import FULL_PIPELINE, Job
from delphi_jobs.queue import JobQueue
from delphi_jobs.testing import records
from tests.pollers import poller_env, run_command


class EchoHandler:
    job_type = "TEST_ECHO"

    def validate(self, job: Job) -> list[str]:
        return []

    def run(self, ctx: JobContext) -> Outcome:
        return Completed({"echo": ctx.job.job_id})


class ImpostorHandler(EchoHandler):
    job_type = FULL_PIPELINE


def test_settings_read_both_switches() -> None:
    env = {"DELPHI_REQUEST_LOG": "/tmp/calls", "DELPHI_EXTRA_HANDLERS": " a.b:C , d:E ,"}
    settings = Settings.from_env(env)
    assert settings.request_log == "/tmp/calls"
    assert settings.extra_handlers == ("a.b:C", "d:E")
    assert Settings.from_env({}).request_log is None and Settings.from_env({}).extra_handlers == ()


def test_extra_handler_adds_a_job_type() -> None:
    registry = default_registry(Settings(extra_handlers=("tests.test_bench_seams:EchoHandler",)))
    assert isinstance(registry.get("TEST_ECHO"), EchoHandler)
    assert FULL_PIPELINE in registry.known


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("tests.test_bench_seams:ImpostorHandler", "would replace built-in FULL_PIPELINE"),
        ("tests.test_bench_seams:Missing", "cannot load"),
        ("no_such_module_here:Handler", "cannot load"),
        ("tests.test_bench_seams", "cannot load"),
    ],
)
def test_bad_extra_handler_is_a_configuration_error(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="DELPHI_EXTRA_HANDLERS") as error:
        default_registry(Settings(extra_handlers=(spec,)))
    assert problem in str(error.value)


def test_request_log_records_each_call(moto_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "calls.log"
    settings = Settings(
        endpoint_url=moto_settings.endpoint_url,
        table_prefix=moto_settings.table_prefix,
        request_log=str(path),
    )
    queue = JobQueue(make_client(settings), settings.jobs_table)
    queue.find_candidates()
    queue.get("absent")
    operations = [operation for _, operation in requestlog.read(str(path))]
    assert operations == ["Query", "Query", "Query", "GetItem"]


def test_poller_runs_an_extra_job_type_and_logs_its_calls(moto_settings: Settings, tmp_path: Path) -> None:
    client = make_client(moto_settings)
    record = records.server_full_pipeline(1, job_type="TEST_ECHO")
    records.put_raw(client, moto_settings.jobs_table, record)
    calls = tmp_path / "calls.log"
    env = poller_env(
        moto_settings,
        tmp_path,
        DELPHI_EXTRA_HANDLERS="tests.test_bench_seams:EchoHandler",
        DELPHI_REQUEST_LOG=str(calls),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),  # where the handler's module is found
    )
    done = run_command(
        env, sys.executable, "-m", "delphi_jobs", "poll", "--exit-when-idle", "--interval", "0.1"
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    job = JobQueue(client, moto_settings.jobs_table).get(record["job_id"])
    assert job is not None and job.status == "COMPLETED" and job.job_results["echo"] == record["job_id"]
    operations = [operation for _, operation in requestlog.read(str(calls))]
    assert operations.count("UpdateItem") >= 2 and "Query" in operations
