"""Run a command as a supervised process group: live output lines, wall-clock timeout, stop on demand.

The group is stopped as a whole (SIGTERM, grace, SIGKILL) on timeout, on cancellation and after the
command exits (stragglers that kept a pipe open), so no grandchild survives its job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from delphi_jobs.childguard import GRACE_ENV

GUARD_MARGIN = 5.0


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    """None when the group was stopped by us (timeout or ``should_stop``)."""
    timed_out: bool
    stopped: bool
    duration: float


def stop_group(pgid: int, grace: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM to the group, wait up to ``grace`` for ``alive`` to exit, then SIGKILL the group."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while alive is not None and alive.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _pump(stream: IO[bytes], on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        on_line(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    stream.close()


def run_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    on_stdout: Callable[[str], None],
    on_stderr: Callable[[str], None],
    should_stop: Callable[[], bool],
    grace: float = 10.0,
) -> ProcessResult:
    """Run ``argv`` under the child guard; returns when the group is gone."""
    guard = [sys.executable, "-m", "delphi_jobs.childguard", str(os.getpid()), "--", *argv]
    started = time.monotonic()
    proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell string
        guard,
        env={**env, GRACE_ENV: str(grace)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, on_stdout), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, on_stderr), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    timed_out = stopped = False
    while proc.poll() is None:
        if time.monotonic() - started > timeout:
            timed_out = True
        elif should_stop():
            stopped = True
        if timed_out or stopped:
            # The guard sweeps its whole tree within ``grace``; SIGKILL of its group is the fallback.
            stop_group(proc.pid, grace + GUARD_MARGIN, proc)
            proc.wait()
            break
        time.sleep(0.1)
    stop_group(proc.pid, 0)  # whatever the command left behind in its group
    for pump in pumps:
        pump.join(timeout=5)
    code = None if timed_out or stopped else proc.returncode
    return ProcessResult(code, timed_out, stopped, time.monotonic() - started)
