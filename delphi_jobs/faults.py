"""Deterministic crash points for the crash-consistency kit (tests/chaos/, docs/reliability.md).

A chaos test cannot prove what happens when a poller dies "after the side effect but before the outcome
write" by killing it at a random moment: it would hit that window once in a hundred runs. Instead the
daemon calls ``point(name)`` at each such place, and ``DELPHI_FAULT=name:n`` (read by config.py, armed
by the poller at start) makes the process SIGKILL itself the n-th time ``name`` is reached: no
``finally``, no flush, no hand-back, exactly like the kernel's OOM killer or a ``kill -9``.

Off by default. While nothing is armed, ``point`` is one global lookup and a return, so the calls stay
in production code at no cost. Several points may be armed at once: ``after_claim:2,heartbeat:1``.
"""

from __future__ import annotations

import os
import signal
import threading

from delphi_jobs.logs import get_logger

POINTS: dict[str, str] = {
    "after_claim": "a job was claimed; nothing of it has run",
    "mid_run": "a FULL_PIPELINE command printed a line (counts lines): the job is half done",
    "before_outcome": "the handler returned (its side effect happened); the outcome is not written yet",
    "heartbeat": "a lease renewal is about to be written",
    "shutdown": "a stop signal arrived; running jobs are not handed back yet",
    "before_submit": "the batch_submission marker is written; the paid batch is not created yet",
    "after_submit": "the batch was created at Anthropic; its batch_id is not recorded yet",
    "between_results": "a checker stored one report section (counts sections); more are to come",
}
"""Every point the daemon has, with what has and has not happened when a process dies there."""

_armed: dict[str, int] | None = None
_lock = threading.Lock()


class FaultSpecError(ValueError):
    """``DELPHI_FAULT`` names an unknown point or a count that is not a positive whole number."""


def parse(spec: str) -> dict[str, int]:
    """``"name:n,name:n"`` -> {name: n}. Unknown names are errors: a misspelt point that never fires
    would let a crash test pass without crashing anything."""
    armed: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, count = part.partition(":")
        if name not in POINTS:
            raise FaultSpecError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
        try:
            nth = int(count or "1")
        except ValueError:
            raise FaultSpecError(f"fault point {name!r}: count must be whole, got {count!r}") from None
        if nth < 1:
            raise FaultSpecError(f"fault point {name!r}: count must be >= 1, got {nth}")
        armed[name] = nth
    return armed


def arm(spec: str | None) -> None:
    """Arm the points of ``spec`` for this process (None or empty disarms everything)."""
    global _armed
    armed = parse(spec) if spec else {}
    with _lock:
        _armed = armed or None


def point(name: str) -> None:
    """A place where a chaos test may kill this process; does nothing unless armed for ``name``."""
    if _armed is None:
        return
    with _lock:
        left = _armed.get(name)
        if left is None:
            return
        if left > 1:
            _armed[name] = left - 1
            return
        del _armed[name]
    # Say where we die (the chaos tests read it from the poller's output), then die without cleaning up.
    get_logger(component="faults").critical("fault point reached: SIGKILL", fault=name, pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
