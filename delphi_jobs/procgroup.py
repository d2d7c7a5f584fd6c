"""Run a command as a supervised process group: live output lines, wall-clock timeout, stop on demand.

The command is started by this process's child guard (``childguard.py``: one long-lived process per
poller, started with the first run), which stops the run's whole tree (SIGTERM, grace, SIGKILL) on
timeout, on cancellation and after the command exits (stragglers that kept a pipe open), so no
grandchild survives its job. Its report says how the command ended (its own exit code, or a signal
nobody here sent) and whether the whole tree is proven gone. Waiting is a blocking ``select`` on the
run's status pipe: a run ends the moment its report arrives, with no polling tick.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

GUARD_MARGIN = 5.0
STOP_CHECK = 0.1
"""How often a running command's caller is asked whether to stop (the wait itself ends at once)."""


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
    """The guard proved every process of the run gone (``process_exit_confirmed``)."""
    started: bool = True


@dataclass(frozen=True)
class _GuardReport:
    started: bool = True
    exit: int | None = None
    signal: int | None = None
    stopped: int | None = None
    swept: bool = False


class _Guard:
    """This process's child guard and the socket to it; replaced when it died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._gone = threading.Event()
        self._gone.set()
        self._exit_code: int | None = None
        self._runs = itertools.count(1)

    def send(self, message: dict[str, object], fds: Sequence[int] = ()) -> None:
        data = json.dumps(message).encode()
        with self._lock:
            for attempt in (1, 2):
                if self._gone.is_set() or self._socket is None:
                    self._start()
                assert self._socket is not None
                try:
                    socket.send_fds(self._socket, [data], list(fds))
                    return
                except (BrokenPipeError, ConnectionResetError):
                    if attempt == 2 or message["op"] != "start":
                        raise
                    self._gone.set()  # it died since the last run: a new one takes this run

    def next_run(self) -> str:
        return f"{os.getpid()}-{next(self._runs)}"

    def exit_signal(self) -> int | None:
        """The signal that ended the guard, if it died of one."""
        code = self._exit_code if self._gone.is_set() else None
        return -code if code is not None and code < 0 else None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started = threading.Event()
        gone = threading.Event()
        failure: list[BaseException] = []

        def keep() -> None:
            # The guard's parent-death signal fires when the thread that started it ends: this thread
            # lives exactly as long as the guard.
            try:
                process = subprocess.Popen(  # noqa: S603 - an argument list, never a shell string
                    [sys.executable, "-m", "delphi_jobs.childguard", str(os.getpid()), str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
            except BaseException as exc:
                failure.append(exc)
                gone.set()
                return
            finally:
                theirs.close()
                started.set()
            self._exit_code = process.wait()
            gone.set()

        threading.Thread(target=keep, name="childguard", daemon=True).start()
        started.wait()
        if failure:
            ours.close()
            raise failure[0]
        if self._socket is not None:
            self._socket.close()
        self._socket, self._gone = ours, gone


_guard = _Guard()


def _read_reports(data: bytes) -> tuple[int | None, _GuardReport | None]:
    """The run's pid and final report from the guard's status lines (None for what never came)."""
    pid: int | None = None
    report: _GuardReport | None = None
    for line in data.decode(errors="replace").splitlines():
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        if isinstance(fields, dict) and set(fields) == {"pid"}:
            pid = int(fields["pid"])
        elif isinstance(fields, dict):
            with contextlib.suppress(TypeError):
                report = _GuardReport(**fields)
    return pid, report


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
    """Run ``argv`` through the child guard (in ``cwd``); returns when the run's whole tree is gone."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    status_read, status_write = os.pipe()
    run_id = _guard.next_run()
    started = time.monotonic()
    try:
        _guard.send(
            {"op": "start", "run": run_id, "argv": list(argv), "env": dict(env), "cwd": cwd, "grace": grace},
            (out_write, err_write, status_write),
        )
    except BaseException:
        for fd in (out_read, err_read, status_read):
            os.close(fd)
        raise
    finally:
        for fd in (out_write, err_write, status_write):
            os.close(fd)
    pumps = [
        threading.Thread(target=_pump, args=(os.fdopen(out_read, "rb"), on_stdout), daemon=True),
        threading.Thread(target=_pump, args=(os.fdopen(err_read, "rb"), on_stderr), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    timed_out = stopped = False
    give_up_at: float | None = None
    status = b""
    while True:
        ready, _, _ = select.select([status_read], [], [], STOP_CHECK)
        if ready:
            chunk = os.read(status_read, 4096)
            if not chunk:
                break  # the guard closed the run's status pipe: the run is over
            status += chunk
            continue
        now = time.monotonic()
        if give_up_at is None and (now - started > timeout or should_stop()):
            timed_out = now - started > timeout
            stopped = not timed_out
            _guard.send({"op": "stop", "run": run_id})
            give_up_at = now + grace + GUARD_MARGIN
        elif give_up_at is not None and now > give_up_at:
            break  # the guard does not answer: stop the group ourselves below
    os.close(status_read)
    pid, report = _read_reports(status)
    if report is None and pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # the guard died: at least the run's own group goes
    for pump in pumps:
        pump.join(timeout=5)
    duration = time.monotonic() - started
    if timed_out or stopped:
        return ProcessResult(None, timed_out, stopped, duration, tree_gone=bool(report and report.swept))
    if report is None:  # the guard ended without a word (killed from outside?): the sweep is unproven
        return ProcessResult(None, False, False, duration, killed_by=_guard.exit_signal() or signal.SIGKILL)
    return ProcessResult(
        report.exit,
        False,
        False,
        duration,
        killed_by=report.signal or report.stopped,
        tree_gone=report.swept,
        started=report.started,
    )
