"""The admin commands through the installed ``delphi-jobs`` console script, as an operator or a script
runs them: ``--json`` parsed, exit codes, refusals, and every bad-usage case ending in one line on
stderr with its documented exit code and no traceback. moto tier (many short subprocesses)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.dynamo import make_client
from delphi_jobs.reports import NarrativeReportStore, ReportSection
from tests.pollers import SCRIPT, cli, command_env, run_command

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def ok_json(settings: Settings, *argv: str) -> Any:
    done = cli(settings, *argv, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_the_installed_script_is_the_one_tested() -> None:
    assert SCRIPT.is_file(), "install the package: pip install -e ."


def test_admin_commands_end_to_end(moto_settings: Settings) -> None:
    settings = moto_settings
    job_id = ok_json(settings, "submit", "--zid", "7", "--priority", "60", "--by", "alice")["job_id"]
    narrative = cli(
        settings, "submit", "--zid", "7", "--job-type", "CREATE_NARRATIVE_BATCH", "--report-id", "r7"
    )
    assert narrative.returncode == 0 and narrative.stdout.strip().startswith("batch_report_r7_")

    listed = ok_json(settings, "list", "--conversation", "7")
    assert listed["index"] == "ConversationIndex" and len(listed["jobs"]) == 2
    assert [
        j["job_id"] for j in ok_json(settings, "list", "--status", "PENDING", "--limit", "1")["jobs"]
    ] == [narrative.stdout.strip()]
    table = cli(settings, "list")
    assert table.returncode == 0 and job_id in table.stdout and "FULL_PIPELINE" in table.stdout

    detail = ok_json(settings, "show", job_id)
    assert detail["summary"]["priority"] == 60 and detail["attributes"]["created_by"] == "alice"
    assert detail["attributes"]["job_config"]["stages"][0]["stage"] == "PCA"  # decoded
    assert "retry_count 0 of max_retries 3" in cli(settings, "show", job_id).stdout

    paused = ok_json(settings, "pause", job_id, "--by", "bob")  # one JSON object per job and line
    assert (paused["status"], paused["requested"]) == ("PAUSED", False)
    refused = cli(settings, "retry", job_id)
    assert "it is PAUSED" in one_line_error(refused, 1) and "allowed now: cancel, resume" in refused.stderr
    both = cli(settings, "resume", job_id, "no-such-job", "--json")
    assert both.returncode == 1 and "no job 'no-such-job'" in both.stderr
    resumed, missing = (json.loads(line) for line in both.stdout.splitlines())
    assert resumed["status"] == "PENDING" and missing["error"]["code"] == "not_found"
    assert ok_json(settings, "cancel", job_id, "--reason", "duplicate")["status"] == "CANCELLED"

    stats = ok_json(settings, "stats")
    assert {s["status"]: s["count"] for s in stats["statuses"]}["PENDING"] == 1
    assert "oldest pending" in cli(settings, "stats").stdout

    assert ok_json(settings, "reset-stuck", "--dry-run")["items"] == []
    stop = ok_json(settings, "stop-batch-cycle", narrative.stdout.strip(), "--dry-run")
    assert stop["jobs"] == [
        {"job_id": narrative.stdout.strip(), "role": "parent", "status": "PENDING", "outcome": "would cancel"}
    ]

    doctor = cli(settings, "doctor")
    assert doctor.returncode == 0 and "0 problem(s)" in doctor.stdout
    client = make_client(settings)
    records.put_raw(
        client, settings.jobs_table, records.server_full_pipeline(7, job_id="bad", status="pending")
    )
    doctor = cli(settings, "doctor", "--json")
    assert doctor.returncode == 3
    assert [f["job_id"] for f in json.loads(doctor.stdout)["findings"]] == ["bad"]

    assert "no narrative sections" in one_line_error(cli(settings, "reports", "show", "r7"), 1)
    store = NarrativeReportStore(client, settings.reports_table)
    store.put(
        ReportSection("r7", "groups", "claude-x", "2026-01-01T00:00:00.000Z", '{"title": "G"}', "j1", "b1")
    )
    report = ok_json(settings, "reports", "show", "r7")
    assert report["run"] == "j1" and report["sections"][0]["title"] == "G"


def test_create_tables_reports_each_table(moto_endpoint: str) -> None:
    settings = Settings(endpoint_url=moto_endpoint, table_prefix=f"c{time.monotonic_ns()}_")
    first = cli(settings, "create-tables")
    assert first.returncode == 0 and first.stdout.count(": created") == 5
    again = cli(settings, "create-tables")
    assert again.returncode == 0 and again.stdout.count("exists, verified") == 5


def test_bad_usage_is_one_line_with_its_exit_code(moto_endpoint: str, tmp_path: Path) -> None:
    """Each case in its own process, all at once (they are independent and mostly wait)."""
    missing = ["--endpoint-url", moto_endpoint, "--table-prefix", "never_created_"]
    down = ["--endpoint-url", "http://127.0.0.1:9"]  # discard port: connection refused
    cases: list[tuple[list[str], int, str]] = [
        (["poll", "--log-level", "LOUD"], 2, "log level must be one of"),
        (["list", "--endpoint-url", "localhost:8000"], 2, "must be a URL like http://localhost:8000"),
        (["create-tables", *down], 4, "cannot reach DynamoDB at http://127.0.0.1:9"),
        (["list", *down], 4, "cannot reach DynamoDB"),
        (["list", *missing], 4, "never_created_Delphi_JobQueue"),
        (["doctor", *missing], 3, "never_created_Delphi_JobQueue: table is missing"),
        (["demo", "--timeout", "2"], 2, "--timeout: must be at least 10"),
        (["demo", "--participants", "2"], 2, "--participants: must be between 20 and 100000"),
        (["list", "--limit", "0"], 2, "--limit: must be between 1 and 10000"),
        (["list", "--status", "DONE", *missing], 2, "status: must be one of"),
        (["reset-stuck", "--force", *missing], 2, "older_than: required with force"),
        (["reset-stuck", "--older-than", "soon"], 2, "not a duration"),
        (["submit", "--job-type", "FULL_PIPELINE"], 2, "the following arguments are required: --zid"),
        (["submit", "--zid", "1", "--config", "{oops", *missing], 2, "config: not JSON"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["reports"], 2, "reports show REPORT_ID"),
    ]
    procs = [
        subprocess.Popen(  # noqa: S603
            [str(SCRIPT), *argv], env=command_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv, _, _ in cases
    ]
    for (argv, code, expected), proc in zip(cases, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=60)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if argv[0] == "doctor":  # problems are findings on stdout, not an error line
            assert done.returncode == code and expected in stdout and "Traceback" not in stderr, argv
            continue
        line = one_line_error(done, code)
        assert expected in line, (argv, line)


def test_dynamodb_down_fails_within_seconds() -> None:
    """Short connect timeouts and two attempts: not a minute of retries (generous bound for a busy CI)."""
    started = time.monotonic()
    done = run_command(command_env(), str(SCRIPT), "create-tables", "--endpoint-url", "http://127.0.0.1:9")
    assert done.returncode == 4 and time.monotonic() - started < 20


def test_stats_watch_prints_json_lines_until_interrupted(moto_settings: Settings) -> None:
    flags = ["--endpoint-url", str(moto_settings.endpoint_url), "--table-prefix", moto_settings.table_prefix]
    proc = subprocess.Popen(  # noqa: S603
        [str(SCRIPT), "stats", "--watch", "--every", "1", "--json", *flags],
        env=command_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    samples = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert samples[1]["at"] > samples[0]["at"] and len(samples[0]["statuses"]) == 7


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ("reset_processing_jobs.py", "reset-stuck"),
        ("stop_batch_check_cycle.py", "stop-batch-cycle"),
    ],
)
def test_operator_scripts_keep_their_names_and_explain_themselves(script: str, words: str) -> None:
    done = run_command(command_env(), sys.executable, str(SCRIPTS / script), "--help")
    assert done.returncode == 0 and words in done.stdout and "--dry-run" in done.stdout
