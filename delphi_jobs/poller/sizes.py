"""INSTANCE_SIZE: which conversations this poller takes, by comment count, as the newest original does.

A ``large`` poller takes only conversations with more than 5,000 comments (all of them, moderated or
not, as the original counted); every other class takes every size. The count comes from the Polis
database (``comments``) and is cached per conversation for five minutes, so a poll costs at most one
count per conversation not seen lately. A job this poller does not take is skipped while the search goes
on past it (``JobQueue.find_due(accept=...)``): unlike the original, which waited on the head of the
queue, it never keeps this poller from the jobs behind it, and other pollers see it as before. A count
that fails makes the conversation normal-sized, as in the original; the database is then left alone
for 30 s, so an unreachable database costs one connect timeout per 30 s, never a stalled poll loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg2

from delphi_jobs import polisdb
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.model import Job, JobValidationError

LARGE = "large"
LARGE_CONVERSATION_COMMENTS = 5000
"""More than this many comments makes a conversation large (the original's threshold)."""
KNOWN_SECONDS = 300.0
DATABASE_DOWN_SECONDS = 30.0
CONNECT_TIMEOUT = 3
_COUNT = "SELECT COUNT(*) FROM comments WHERE zid = %(zid)s"


class SizeGate:
    """The ``accept`` filter of a ``large`` poller's candidate search."""

    def __init__(
        self, connect: Callable[[], Any], log: Any, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._connect = connect
        self._log = log
        self._monotonic = monotonic
        self._known: dict[int, tuple[bool, float]] = {}
        self._conn: Any = None
        self._down_until = 0.0

    @classmethod
    def for_settings(cls, settings: Settings, log: Any) -> SizeGate | None:
        """None when this poller takes every size; ConfigError when it cannot count comments."""
        if settings.instance_size != LARGE:
            return None
        if not settings.database_url:
            raise ConfigError(
                "INSTANCE_SIZE=large takes only conversations with more than "
                f"{LARGE_CONVERSATION_COMMENTS} comments and needs the Polis database to count them: "
                "set DATABASE_URL or DATABASE_HOST"
            )
        return cls(lambda: polisdb.connect(settings, connect_timeout=CONNECT_TIMEOUT), log)

    def accepts(self, job: Job) -> bool:
        try:
            zid = job.zid()
        except JobValidationError:
            return False  # no size, so normal-sized; a poller of another class fails it by validation
        now = self._monotonic()
        known = self._known.get(zid)
        if known is not None and known[1] > now:
            return known[0]
        if now < self._down_until:
            return False
        try:
            count = self._count(zid)
        except (psycopg2.Error, polisdb.DatabaseNotConfigured) as exc:
            self._log.warning(
                "counting a conversation's comments failed: taken as normal-sized, as the original did",
                zid=zid,
                error=f"{type(exc).__name__}: {str(exc).strip()}",
                retry_in=DATABASE_DOWN_SECONDS,
            )
            self._close()
            self._down_until = now + DATABASE_DOWN_SECONDS
            return False
        large = count > LARGE_CONVERSATION_COMMENTS
        if len(self._known) > 1000:
            self._known = {z: k for z, k in self._known.items() if k[1] > now}
        self._known[zid] = (large, now + KNOWN_SECONDS)
        return large

    def _count(self, zid: int) -> int:
        if self._conn is None:
            self._conn = self._connect()
            self._conn.autocommit = True  # one statement at a time: never idle in a transaction
        with self._conn.cursor() as cur:
            cur.execute(_COUNT, {"zid": zid})
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None
