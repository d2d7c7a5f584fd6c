"""Run a command as a supervised process group: live output lines, wall-clock timeout, stop on demand.

The group is stopped as a whole (SIGTERM, grace, SIGKILL) on timeout, on cancellation and after the
command exits (stragglers that kept a pipe open), so no grandchild survives its job. The child guard's
report says how the command ended (its own exit code, or a signal nobody here sent) and whether its whole
tree is proven gone.
"""

from __future__ import annotations

import contextlib
import json
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
    """The command's own exit status; None when it did not exit by itself (stopped, timed out, killed)."""
    timed_out: bool
    stopped: bool
    duration: float
    killed_by: int | None = None
    """The signal that ended the command or its guard when we did not send it (e.g. the OOM killer)."""
    tree_gone: bool = False
    """The guard proved every process below it gone (``process_exit_confirmed``)."""
    started: bool = True


@dataclass(frozen=True)
class _GuardReport:
    started: bool = True
    exit: int | None = None
    signal: int | None = None
    stopped: int | None = None
    swept: bool = False


def _read_report(fd: int) -> _GuardReport | None:
    """The guard's first status line; None when it died without writing one (e.g. SIGKILL)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    lines = b"".join(chunks).decode(errors="replace").splitlines()
    try:
        fields = json.loads(lines[0]) if lines else None
        return _GuardReport(**fields) if isinstance(fields, dict) else None
    except (ValueError, TypeError):
        return None


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
    cwd: str | None = None,
) -> ProcessResult:
    """Run ``argv`` under the child guard (in ``cwd``); returns when the group is gone."""
    status_read, status_write = os.pipe()
    guard = [sys.executable, "-m", "delphi_jobs.childguard", str(os.getpid()), str(status_write), "--", *argv]
    started = time.monotonic()
    try:
        proc = subprocess.Popen(  # noqa: S603 - an argument list, never a shell string
            guard,
            env={**env, GRACE_ENV: str(grace)},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(status_write,),
        )
    except BaseException:
        os.close(status_read)
        raise
    finally:
        os.close(status_write)
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
    duration = time.monotonic() - started
    report = _read_report(status_read)
    if timed_out or stopped:
        return ProcessResult(None, timed_out, stopped, duration, tree_gone=bool(report and report.swept))
    if report is None:  # the guard ended without a word (killed from outside?): the sweep is unproven
        code = proc.returncode
        return ProcessResult(
            code if code >= 0 else None, False, False, duration, killed_by=-code if code < 0 else None
        )
    return ProcessResult(
        report.exit,
        False,
        False,
        duration,
        killed_by=report.signal or report.stopped,
        tree_gone=report.swept,
        started=report.started,
    )
