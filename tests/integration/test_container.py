"""The container deployment without a container engine: the image's exact entry point (read from the
Dockerfile, not repeated here) run against DynamoDB Local, and the stop budget of Dockerfile and
compose file. ``hadolint`` and ``docker-compose config`` run in .ci/run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import poller_env, run_command, wait_for

ROOT = Path(__file__).resolve().parents[2]
ENGINE_STOP_TIMEOUT = 10.0
"""What docker and podman wait after SIGTERM unless told otherwise."""


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


def exec_form(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", dockerfile(), re.MULTILINE)
    assert match, f"no exec-form {instruction} in the Dockerfile"
    return list(json.loads(match.group(1)))


def healthcheck_command() -> list[str]:
    match = re.search(r"^HEALTHCHECK\s.*?CMD\s+(\[.*\])\s*$", dockerfile(), re.MULTILINE)
    assert match, "no exec-form HEALTHCHECK CMD in the Dockerfile"
    return list(json.loads(match.group(1)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", dockerfile(), re.MULTILINE):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def test_the_image_stops_within_the_engines_default_timeout() -> None:
    env = image_env()
    budget = float(env["DELPHI_SHUTDOWN_GRACE_SECONDS"]) + float(env["DELPHI_KILL_GRACE_SECONDS"])
    assert budget + 1 < ENGINE_STOP_TIMEOUT
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile(), re.MULTILINE)
    compose = (ROOT / "docker-compose.yml").read_text()
    grace = float(re.findall(r"DELPHI_SHUTDOWN_GRACE_SECONDS:-(\d+)", compose)[0])
    kill = float(re.findall(r"DELPHI_KILL_GRACE_SECONDS:-(\d+)", compose)[0])
    stop = float(re.findall(r"stop_grace_period: (\d+)s", compose)[0])
    assert grace + kill + 5 <= stop


def test_the_image_entry_point_creates_tables_and_polls(ddblocal_endpoint: str, tmp_path: Path) -> None:
    """`docker run IMAGE --max-jobs 1` with compose's DELPHI_CREATE_TABLES=1, against DynamoDB Local;
    the image's HEALTHCHECK command passes while it polls."""
    settings = Settings(endpoint_url=ddblocal_endpoint, table_prefix=f"img{uuid.uuid4().hex[:8]}_")
    env = {**poller_env(settings, tmp_path), **image_env(), "DELPHI_CREATE_TABLES": "1"}
    env["DELPHI_METRICS_PORT"] = str(free_port())  # the image's 9100 may be taken on a test machine
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = [*exec_form("ENTRYPOINT"), "--max-jobs", "1"]  # docker run arguments replace CMD
    assert exec_form("CMD") == []
    poller = subprocess.Popen(  # noqa: S603 - the image's own argument list
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        client = make_client(settings)
        wait_for(lambda: settings.jobs_table in client.list_tables()["TableNames"], 30, "the tables")
        wait_for(
            lambda: run_command(env, *healthcheck_command()).returncode == 0, 30, "a passing HEALTHCHECK"
        )
        record = records.server_full_pipeline(1)
        records.put_raw(client, settings.jobs_table, record)
        output, _ = poller.communicate(timeout=60)
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait()
    assert poller.returncode == 0, output
    assert '"event": "tables ready"' in output and "Traceback" not in output
    job = JobQueue(open_store(settings)).get(record["job_id"])
    assert job is not None and job.status == "COMPLETED"
    assert len(client.list_tables()["TableNames"]) >= 5
