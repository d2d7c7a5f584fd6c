"""Runs a job's command so that it never outlives the poller (defects 2 and 3).

Started by the poller as ``python -m delphi_jobs.childguard POLLER_PID -- ARGV...`` in a new session.
It asks Linux to send it SIGTERM when the poller dies (parent-death signal), then starts ARGV in its
own process group. On SIGTERM (poller death, timeout, cancellation) it stops the whole group,
grandchildren included: SIGTERM, a grace period, SIGKILL. Without it a ``kill -9`` of the poller
would leave the pipeline running while another poller runs the same job again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

PR_SET_PDEATHSIG = 1
GRACE_ENV = "DELPHI_KILL_GRACE_SECONDS"


def _set_parent_death_signal(sig: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


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


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m delphi_jobs.childguard POLLER_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    poller_pid, command = int(argv[0]), argv[2:]
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != poller_pid:  # the poller died before the death signal was armed
        return 143
    grace = float(os.environ.get(GRACE_ENV, "10"))
    own_group = os.getpgid(0)
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # The guard itself ignores the SIGTERM it sends to its own group.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_group(own_group, grace, child)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        child = subprocess.Popen(command)  # noqa: S603 - an argument list, never a shell string
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    code = child.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
