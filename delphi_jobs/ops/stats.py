"""``stats``: how the queue looks now, at a bounded cost whatever the table's size.

Per status, StatusCreatedIndex is read up to ``max_items`` records (a ``Select=COUNT`` query gives the
total beyond that, without transferring records). Live statuses are read whole; finished ones only as
far back as ``lookback`` by a range condition on created_at, so years of history cost nothing.
Throughput counts the finished jobs of that lookback whose ``completed_at`` falls in the last
``window``: a job created earlier than the lookback and finished within the window is not counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from delphi_jobs.model import Job
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import Invalid
from delphi_jobs.ops.jobs import created_range, walk
from delphi_jobs.states import TERMINAL, Status
from delphi_jobs.tables import STATUS_CREATED_INDEX


@dataclass(frozen=True)
class StatusCount:
    status: str
    count: int
    by_type: dict[str, int]
    """Per job type, over the records read (all of them unless ``sampled``)."""
    sampled: bool
    scope: str
    """``all``, or ``created in the last N h`` for finished statuses."""


@dataclass(frozen=True)
class Stats:
    at: datetime
    statuses: list[StatusCount]
    oldest_pending_job_id: str | None
    oldest_pending_age_seconds: float | None
    window_minutes: float
    finished_in_window: dict[str, int]
    """COMPLETED / FAILED / CANCELLED jobs whose completed_at is within the window."""
    throughput_per_minute: float


def stats(
    ctx: OpsContext,
    *,
    window: timedelta = timedelta(minutes=15),
    lookback: timedelta = timedelta(hours=24),
    max_items: int = 1000,
) -> Stats:
    if window <= timedelta(0) or lookback <= timedelta(0):
        raise Invalid("window", "window and lookback must be positive durations")
    now = ctx.clock()
    counts: list[StatusCount] = []
    finished: Counter[str] = Counter()
    oldest: Job | None = None
    for status in Status:
        terminal = status in TERMINAL
        bounds = created_range(now - lookback, None) if terminal else {}
        read: list[Job] = []
        jobs = walk(ctx, STATUS_CREATED_INDEX, status, newest_first=terminal, **bounds)
        for job in jobs:
            if job.status == status and (
                not terminal or not job.created_at or job.created_at >= now - lookback
            ):
                read.append(job)
            if len(read) >= max_items:
                break
        sampled = len(read) >= max_items
        total = len(read)
        if sampled:
            total = ctx.queue.count_index(STATUS_CREATED_INDEX, status, **bounds)
        if status == Status.PENDING and read:
            oldest = min(read, key=lambda j: j.created_at or now)
        if terminal:
            cutoff = now - window
            finished[status] = sum(1 for j in read if j.completed_at and j.completed_at >= cutoff)
        scope = f"created in the last {lookback.total_seconds() / 3600:g} h" if terminal else "all"
        by_type = dict(Counter(job.job_type for job in read))
        counts.append(StatusCount(status.value, total, by_type, sampled, scope))
    minutes = window.total_seconds() / 60
    return Stats(
        at=now,
        statuses=counts,
        oldest_pending_job_id=oldest.job_id if oldest else None,
        oldest_pending_age_seconds=(now - oldest.created_at).total_seconds()
        if oldest and oldest.created_at
        else None,
        window_minutes=minutes,
        finished_in_window=dict(finished),
        throughput_per_minute=(finished[Status.COMPLETED] + finished[Status.FAILED]) / minutes,
    )
