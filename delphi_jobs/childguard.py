"""Runs a job's command so that it never outlives the poller (defects 2 and 3).

Started by the poller as ``python -m delphi_jobs.childguard POLLER_PID STATUS_FD -- ARGV...`` in a new
session.
It asks Linux to send it SIGTERM when the poller dies (parent-death signal) and to adopt every orphan
below it (child subreaper), then starts ARGV. On SIGTERM (poller death, timeout, cancellation), and
when ARGV exits, it stops everything below it, even a grandchild that left the process group with
``setsid``: SIGTERM, a grace period, then SIGKILL until nothing is left. Without it a ``kill -9`` of
the poller would leave the pipeline running while another poller runs the same job again.

Before it exits it writes one JSON line to STATUS_FD: how ARGV ended (``exit`` code or ``signal``, or
``stopped`` by a signal to the guard) and whether the sweep proved every process below it gone
(``swept``). An exit code cannot tell a script's own ``exit(137)`` from a kill by the OOM killer; this
report can, and it is what ``process_exit_confirmed`` on the job rests on.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_ENV = "DELPHI_KILL_GRACE_SECONDS"


def _prctl(option: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from /proc (a subreaper's orphans included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # zombies are dead already; reaping removes them
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            found.append(pid)
            todo.append(pid)
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def sweep(grace: float) -> bool:
    """SIGTERM everything below this process, wait up to ``grace``, then SIGKILL until none is left.
    True when none is left (False only for processes that survive SIGKILL, e.g. stuck in the kernel)."""
    me = os.getpid()
    _signal_all(descendants(me), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while descendants(me) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    for _ in range(100):
        left = descendants(me)
        if not left:
            return True
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.02)
        _reap()
    return not descendants(me)


def _report(status_fd: int, **status: object) -> None:
    """The one line the poller reads when the guard has exited (see the module docstring)."""
    with contextlib.suppress(OSError):
        os.write(status_fd, (json.dumps(status) + "\n").encode())


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        usage = "usage: python -m delphi_jobs.childguard POLLER_PID STATUS_FD -- COMMAND [ARG...]"
        print(usage, file=sys.stderr)
        return 2
    poller_pid, status_fd, command = int(argv[0]), int(argv[1]), argv[3:]
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != poller_pid:  # the poller died before the death signal was armed
        _report(status_fd, started=False, swept=True)
        return 143
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    grace = float(os.environ.get(GRACE_ENV, "10"))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        swept = sweep(grace)
        _report(status_fd, started=True, stopped=signum, swept=swept)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        child = subprocess.Popen(command)  # noqa: S603 - an argument list, never a shell string
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        _report(status_fd, started=False, exit=127, swept=True)
        return 127
    code = child.wait()
    swept = sweep(0)  # whatever the command left behind, inside its group or not
    if code < 0:
        _report(status_fd, started=True, signal=-code, swept=swept)
        return 128 - code
    _report(status_fd, started=True, exit=code, swept=swept)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
