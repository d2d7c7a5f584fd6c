"""Logging: structlog (JSON in containers, readable on a terminal) and the per-job log sink.

Every job log line is also printed to stdout as ``[DELPHI JOB {job_id[:8]}] {LEVEL}: message``: the
existing log search relies on that prefix. Job lines are buffered for the job's ``logs`` attribute and
flushed with heartbeats, never one DynamoDB write per line (defect 9). Both kinds of line are scrubbed
of secrets (redact.py) before they are printed or stored.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from delphi_jobs.model import MAX_LOG_ENTRIES, LogEntry, format_timestamp, utcnow
from delphi_jobs.redact import scrub, scrub_value

_print_lock = threading.Lock()
_echo = threading.Event()
_echo.set()


def echo_job_lines(enabled: bool) -> None:
    """The demo shows its own progress view; everywhere else job lines always reach stdout."""
    if enabled:
        _echo.set()
    else:
        _echo.clear()


def _scrubbed(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """A structlog processor: after tracebacks are rendered, so their text is scrubbed too."""
    return {key: scrub_value(value) for key, value in event.items()}


def configure(level: str = "INFO", fmt: str = "auto", *, stream: TextIO | None = None) -> None:
    """JSON when not on a terminal (or asked for), coloured key=value on a terminal. The daemon logs
    to stdout; the admin commands to stderr, where they do not mix with the results they print."""
    out = stream or sys.stdout
    json_output = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrubbed,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write per line (message and newline together): job lines from print_line go to the same
        # stream from other threads, and a line split in two writes could take one in its middle.
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    """A lazy logger: module-level ones made at import time follow ``configure`` called later (an
    eager ``bind`` would freeze structlog's default configuration: console lines on stdout)."""
    return structlog.get_logger("delphi_jobs", **bound)


def print_line(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class JobLog:
    """A job's log: prefixed stdout lines now, the last 50 entries for the next heartbeat."""

    def __init__(self, job_id: str, existing: tuple[LogEntry, ...] = ()) -> None:
        self._prefix = f"[DELPHI JOB {job_id[:8]}]"
        self._entries: list[LogEntry] = list(existing)[-MAX_LOG_ENTRIES:]
        self._lock = threading.Lock()
        self._tail: list[str] = []

    def add(self, level: str, message: str) -> None:
        level = level.upper()
        message = scrub(message)
        if _echo.is_set():
            print_line(f"{self._prefix} {level}: {message}")
        with self._lock:
            self._entries.append(LogEntry(format_timestamp(utcnow()), level, message))
            del self._entries[:-MAX_LOG_ENTRIES]
            self._tail.append(message)
            del self._tail[:-20]

    def info(self, message: str) -> None:
        self.add("INFO", message)

    def warning(self, message: str) -> None:
        self.add("WARNING", message)

    def error(self, message: str) -> None:
        self.add("ERROR", message)

    def snapshot(self) -> tuple[LogEntry, ...]:
        with self._lock:
            return tuple(self._entries)

    def tail(self, lines: int) -> list[str]:
        with self._lock:
            return self._tail[-lines:]
