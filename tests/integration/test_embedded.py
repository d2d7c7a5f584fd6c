"""Zero-setup mode made whole: `poll --embedded` and `demo --keep-running` start everything a job needs,
print an export block another shell can paste, keep polling, and on SIGTERM stop every server and
remove their folders. Driven through the installed command, as a user would."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from tests.pollers import wait_for

STATE_WORDS = ("COMPLETED", "FAILED", "CANCELLED")


def pg_folder(exports: dict[str, str]) -> Path:
    """The embedded PostgreSQL's folder, from the exported URL (``...?host=/tmp/delphi-pg-x/data``)."""
    folder = Path(exports["DATABASE_URL"].split("host=", 1)[1]).parent
    assert folder.name.startswith("delphi-pg-") and folder.is_dir()
    return folder


def read_exports(stream: IO[str], seen: list[str], timeout: float) -> dict[str, str]:
    """Lines until the export block ends; the block's variables as a dict. Later output keeps being
    read into ``seen`` (a full pipe would stall the process)."""
    exports: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        text = line.strip()
        if text.startswith("export "):
            name, _, value = text.removeprefix("export ").partition("=")
            exports[name] = shlex.split(value)[0]
        elif exports:
            threading.Thread(target=lambda: seen.extend(stream), daemon=True).start()
            return exports
    raise AssertionError("no export block:\n" + "".join(seen[-40:]))


def delphi(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - an argument list
        [sys.executable, "-m", "delphi_jobs", *argv], env=env, capture_output=True, text=True, timeout=60
    )


def submit_and_wait(env: dict[str, str], *argv: str) -> dict[str, object]:
    submitted = delphi(env, "submit", "--json", *argv)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]

    def finished() -> dict[str, object] | None:
        shown = delphi(env, "show", "--json", job_id)
        job: dict[str, object] = json.loads(shown.stdout)["summary"] if shown.returncode == 0 else {}
        return job if job.get("status") in STATE_WORDS else None

    result = wait_for(finished, 90, f"job {job_id} to finish")
    assert isinstance(result, dict)
    return result


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def clean_env() -> dict[str, str]:
    names = ("DYNAMODB_ENDPOINT", "DATABASE_URL", "ANTHROPIC", "DELPHI_", "AWS_ACCESS", "AWS_SECRET")
    env = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    return {**env, "PYTHONUNBUFFERED": "1"}


def test_poll_embedded_runs_both_job_kinds_and_cleans_up(clean_env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "delphi_jobs", "poll", "--embedded", "--interval", "0.2"]
    proc = subprocess.Popen(  # noqa: S603 - an argument list
        [*argv, "--log-format", "json"],
        env={**clean_env, "DELPHI_BATCH_RECHECK_SECONDS": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        exports = read_exports(proc.stdout, output, 90)
        needed = {"DYNAMODB_ENDPOINT", "DATABASE_URL", "DELPHI_PIPELINE_COMMAND", "ANTHROPIC_BASE_URL"}
        assert needed <= set(exports)
        env = {**clean_env, **exports}
        folder = pg_folder(exports)
        pipeline = submit_and_wait(env, "--zid", "1", "--report-id", "r_embedded")
        assert pipeline["status"] == "COMPLETED", "".join(output[-30:])
        narrative = ("--zid", "1", "--report-id", "r_embedded", "--job-type", "CREATE_NARRATIVE_BATCH")
        parent = submit_and_wait(env, *narrative)
        assert parent["status"] == "COMPLETED", "".join(output[-30:])
    finally:
        code = stop(proc)
    assert code == 0
    assert not folder.exists(), "the embedded PostgreSQL's folder was removed"


def test_demo_keep_running_keeps_polling_until_sigterm(clean_env: dict[str, str]) -> None:
    small = ("--participants", "80", "--comments", "20")
    argv = [sys.executable, "-m", "delphi_jobs", "demo", *small, "--keep-running"]
    proc = subprocess.Popen(argv, env=clean_env, stdout=subprocess.PIPE, text=True)  # noqa: S603
    output: list[str] = []
    try:
        assert proc.stdout is not None
        exports = read_exports(proc.stdout, output, 150)
        env = {**clean_env, **exports}
        folder = pg_folder(exports)
        again = submit_and_wait(env, "--zid", "1", "--report-id", "r_demo_report")
        assert again["status"] == "COMPLETED", "the demo's poller is still running"
    finally:
        code = stop(proc)
    assert code == 0
    assert not folder.exists()
