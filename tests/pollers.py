"""Running real pollers as subprocesses against a test's tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delphi_jobs.config import Settings

FAKE_PIPELINE = Path(__file__).parent / "helpers" / "fake_pipeline.py"
SCRIPT = Path(sys.executable).parent / "delphi-jobs"
"""The installed console script: admin commands are tested as operators run them."""


def poller_env(settings: Settings, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DELPHI_", "DYNAMODB_"))}
    env.update(
        {
            "DYNAMODB_ENDPOINT": str(settings.endpoint_url),
            "AWS_REGION": settings.region,
            "DELPHI_TABLE_PREFIX": settings.table_prefix,
            "DELPHI_PIPELINE_COMMAND": (
                f"{sys.executable} {FAKE_PIPELINE} --zid {{zid}} --job {{job_id}} --report {{report_id}} "
                f"--state {state}"
            ),
            "DELPHI_KILL_GRACE_SECONDS": "2",
            "DELPHI_RETRY_BASE_SECONDS": "0.5",  # a lost worker's job is rescued soon after its lease
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_poller(env: dict[str, str], *flags: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "delphi_jobs", "poll", "--interval", "0.1", "--log-format", "json", *flags]
    sink: Any = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603


def run_command(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (at most a minute), capturing its output as text."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


def command_env() -> dict[str, str]:
    """The test's environment without any setting that could point a command elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DELPHI_", "DYNAMODB_", "ANTHROPIC_"))}


def cli(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """``delphi-jobs ARGV`` against the test's tables."""
    flags = ["--endpoint-url", str(settings.endpoint_url), "--table-prefix", settings.table_prefix]
    return run_command(command_env(), str(SCRIPT), *argv, *flags)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def runs(state: Path, job_id: str) -> list[str]:
    path = state / f"{job_id}.runs"
    return path.read_text().splitlines() if path.exists() else []


def pids(state: Path, job_id: str) -> list[int]:
    path = state / f"{job_id}.pids"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def crash_at(
    env: dict[str, str],
    fault: str,
    *flags: str,
    log: Path,
    trigger: Callable[[subprocess.Popen[bytes]], None] | None = None,
    timeout: float = 90,
) -> int:
    """Run a poller armed with ``DELPHI_FAULT=fault`` until it kills itself there; returns its pid.

    ``trigger`` is called once the poller runs, for points that need a push (a SIGTERM for shutdown)."""
    proc = start_poller({**env, "DELPHI_FAULT": fault}, *flags, log=log)
    try:
        if trigger is not None:
            trigger(proc)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == -signal.SIGKILL, (
        f"exit {proc.returncode}, not killed at {fault}: {output[-3000:]}"
    )
    assert "fault point reached" in output and fault.partition(":")[0] in output
    return proc.pid


def run_until_terminal(
    env: dict[str, str],
    is_done: Callable[[], bool],
    *flags: str,
    log: Path,
    timeout: float = 120,
) -> int:
    """Run a poller until ``is_done()``, then stop it with SIGTERM (it must exit 0); returns its pid."""
    proc = start_poller(env, *flags, log=log)
    try:
        wait_for(is_done, timeout, f"the jobs to end (poller log {log})")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid
