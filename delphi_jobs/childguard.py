"""The child guard: one long-lived process per poller that starts every job's command and makes sure
none outlives its job or the poller (defects 2 and 3).

The poller starts it once, as ``python -m delphi_jobs.childguard POLLER_PID CONTROL_FD``, and sends it
one message per run over a Unix socket: the argument list, environment, directory and grace period,
with the run's stdout, stderr and status pipes attached. The guard forks and execs the command in a
session of its own, then reports on the status pipe: first ``{"pid": N}``, at the end how the command
ended (``exit`` code, ``signal``, or ``stopped`` by a signal the guard sent) and whether every process
of the run is proven gone (``swept``). An exit code cannot tell a script's own ``exit(137)`` from a kill
by the OOM killer; this report can, and ``process_exit_confirmed`` on the job rests on it.

One guard for all runs, instead of one Python interpreter per run, makes a job's process start cost a
fork and an exec (issue 12), and a single-threaded guard may fork safely. It holds a parent-death
signal, so when the poller dies, even by ``kill -9``, it stops everything below it and exits. It is a
child subreaper: orphans of a run are adopted by it rather than by init; each run's environment carries
a marker (``DELPHI_GUARD_RUN``) by which the guard tells whose orphan it adopted, so that a grandchild
that left its process group with ``setsid`` is still stopped with its run: on timeout, cancellation,
shutdown, poller death, and after the command exits.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
RUN_ENV = "DELPHI_GUARD_RUN"
MAX_MESSAGE = 4 * 1024 * 1024
"""A start message holds the run's whole environment."""
TICK = 0.05
"""How often a run being stopped is looked at again (nothing is polled while runs merely run)."""
KILL_ROUNDS = 100
"""SIGKILL rounds before a run is reported with survivors (processes stuck in the kernel)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
"""Loaded once: a forked child calls prctl before exec, where every millisecond is a job's start."""


def _prctl(option: int, value: int) -> None:
    if _libc is not None and _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` that are still alive (zombies are dead already)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        found += [int(c) for c in _read(f"/proc/{pid}/task/{task}/children").split()]
    return [c for c in found if not _read(f"/proc/{c}/stat").rsplit(b")", 1)[-1].startswith(b" Z")]


def descendants(root: int) -> list[int]:
    """Every live process below ``root``."""
    found: list[int] = []
    todo = [root]
    while todo:
        for pid in children(todo.pop()):
            found.append(pid)
            todo.append(pid)
    return found


def run_marker(pid: int) -> str | None:
    """The run a process belongs to, from the environment it was started with."""
    prefix = f"{RUN_ENV}=".encode()
    for entry in _read(f"/proc/{pid}/environ").split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@dataclass
class Run:
    run_id: str
    pid: int
    status_fd: int
    grace: float
    ended: dict[str, int] | None = None
    """``{"exit": code}`` or ``{"signal": n}`` once the command itself has been reaped."""
    stop_signal: int | None = None
    kill_at: float | None = None
    kill_rounds: int = 0

    def report(self, **status: object) -> None:
        with contextlib.suppress(OSError):
            os.write(self.status_fd, (json.dumps(status) + "\n").encode())


class Guard:
    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._runs: dict[str, Run] = {}
        self._by_pid: dict[int, Run] = {}
        self._me = os.getpid()
        self._stop_signal: int | None = None

    # ---- the loop ----------------------------------------------------------------------------

    def serve(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_stop_signal)
        while self._stop_signal is None:
            stopping = any(run.kill_at is not None for run in self._runs.values())
            ready, _, _ = select.select(
                [self._control.fileno(), wake_read], [], [], TICK if stopping else None
            )
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 4096)
            if self._control.fileno() in ready and not self._receive():
                break  # the poller is gone: its end of the socket closed
            self._reap()
            for run in list(self._runs.values()):
                self._advance(run)
        self._shut_down(self._stop_signal or signal.SIGTERM)
        return 128 + self._stop_signal if self._stop_signal else 0

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum

    def _receive(self) -> bool:
        try:
            data, ancillary, _, _ = self._control.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(3 * array.array("i").itemsize), socket.MSG_CMSG_CLOEXEC
            )
        except InterruptedError:
            return True
        if not data:
            return False
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        message = json.loads(data)
        if message["op"] == "start":
            self._start(message, list(fds))
        elif message["op"] == "stop" and message["run"] in self._runs:
            self._stop(self._runs[message["run"]], signal.SIGTERM)
        return True

    # ---- one run -----------------------------------------------------------------------------

    def _start(self, message: dict[str, Any], fds: list[int]) -> None:
        stdout, stderr, status = fds
        run_id = str(message["run"])
        env = {**message["env"], RUN_ENV: run_id}
        argv = [str(a) for a in message["argv"]]
        failed_read, failed_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only exec or report why not
            try:
                os.setsid()
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(stdout, 1)
                os.dup2(stderr, 2)
                if message.get("cwd"):
                    os.chdir(message["cwd"])
                os.execvpe(argv[0], argv, env)
            except BaseException as exc:  # whatever it is, the parent must hear it
                os.write(failed_write, (getattr(exc, "strerror", None) or str(exc) or repr(exc)).encode())
            finally:
                os._exit(127)
        os.close(failed_write)
        os.close(stdout)
        why = b""
        while chunk := os.read(failed_read, 4096):
            why += chunk
        os.close(failed_read)
        run = Run(run_id, pid, status, float(message.get("grace", 10.0)))
        if why:
            with contextlib.suppress(OSError):
                os.write(stderr, f"cannot start {argv[0]!r}: {why.decode(errors='replace')}\n".encode())
            os.close(stderr)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            run.report(started=False, exit=127, swept=True)
            os.close(status)
            return
        os.close(stderr)
        run.report(pid=pid)
        self._runs[run_id] = run
        self._by_pid[pid] = run

    def _members(self, run: Run) -> list[int]:
        """The live processes of ``run``: the command and everything below it, and the orphans this
        guard adopted from it (with everything below them)."""
        members = [run.pid] if run.ended is None else []
        members += descendants(run.pid) if run.ended is None else []
        for orphan in children(self._me):
            if orphan in self._by_pid:
                continue
            marker = run_marker(orphan)
            # A process that cleared its environment is claimed by whichever run ends first.
            if marker == run.run_id or marker not in self._runs:
                members += [orphan, *descendants(orphan)]
        return members

    def _stop(self, run: Run, sig: int) -> None:
        if run.kill_at is not None:
            return
        if run.ended is None:
            run.stop_signal = sig
        _signal_all(self._members(run), sig)
        run.kill_at = time.monotonic() + (run.grace if run.ended is None else 0.0)

    def _advance(self, run: Run) -> None:
        if run.ended is None and run.kill_at is None:
            return  # running
        left = self._members(run)
        if run.ended is not None and not left:
            self._finish(run, swept=True)
            return
        if run.kill_at is None:
            self._stop(run, signal.SIGTERM)  # the command exited and left processes behind
            return
        if time.monotonic() >= run.kill_at:
            _signal_all(left, signal.SIGKILL)
            run.kill_rounds += 1
            if run.kill_rounds > KILL_ROUNDS and run.ended is not None:
                self._finish(run, swept=False)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self._by_pid.pop(pid, None)
            if run is None:
                continue  # an adopted orphan
            if os.WIFSIGNALED(status):
                run.ended = {"signal": os.WTERMSIG(status)}
            else:
                run.ended = {"exit": os.WEXITSTATUS(status)}

    def _finish(self, run: Run, *, swept: bool) -> None:
        ended = run.ended or {}
        if run.stop_signal is not None and "signal" in ended:
            ended = {"stopped": run.stop_signal}
        run.report(started=True, swept=swept, **ended)
        os.close(run.status_fd)
        del self._runs[run.run_id]

    def _shut_down(self, sig: int) -> None:
        """The poller is gone or told us to stop: every run ends now, with everything below us."""
        for sig_ in STOP_SIGNALS:
            signal.signal(sig_, signal.SIG_IGN)
        for run in self._runs.values():
            run.stop_signal = run.stop_signal or sig
        _signal_all(descendants(self._me), signal.SIGTERM)
        deadline = time.monotonic() + max((run.grace for run in self._runs.values()), default=0.0)
        while descendants(self._me) and time.monotonic() < deadline:
            self._reap()
            time.sleep(TICK)
        for _ in range(KILL_ROUNDS):
            left = descendants(self._me)
            if not left:
                break
            _signal_all(left, signal.SIGKILL)
            time.sleep(TICK / 2)
            self._reap()
        self._reap()
        swept = not descendants(self._me)
        for run in list(self._runs.values()):
            run.ended = run.ended or {"signal": sig}
            self._finish(run, swept=swept)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m delphi_jobs.childguard POLLER_PID CONTROL_FD", file=sys.stderr)
        return 2
    poller_pid, control_fd = int(argv[0]), int(argv[1])
    os.set_inheritable(control_fd, False)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != poller_pid:  # the poller died before the death signal was armed
        return 143
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return Guard(socket.socket(fileno=control_fd)).serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
