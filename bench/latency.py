"""Pickup latency of an idle poller and what idling costs, at several ``--interval`` and
``--max-workers`` values.

Idle cost: DynamoDB calls per second of one poller on an empty table, from its request log over a
window after start-up. Latency: a job is inserted at a random moment of the poll cycle (a uniform
pause of up to one interval after the previous job finished) and its pickup is ``started_at`` (set by
the claim) minus the moment the insert returned. Percentiles are over all samples of a cell.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.harness import Context, Tables, log, noop_job, percentile, r
from bench.pollers import Fleet, flags, operations

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"intervals": [0.2], "workers": [2], "samples": 5, "idle_seconds": 1.0},
    "full": {"intervals": [0.5, 1.0, 2.0], "workers": [1, 2, 4], "samples": 40, "idle_seconds": 10.0},
}


def run(ctx: Context) -> dict[str, Any]:
    p = PROFILES[ctx.profile]
    rows = []
    for interval in p["intervals"]:
        for workers in p["workers"]:
            row = _cell(ctx, p, interval, workers)
            idle = row["idle_requests_per_s"]
            log(f"latency {interval}s x{workers}: p50 {row['p50_ms']} ms, {idle} idle calls/s")
            rows.append(row)
    return {"params": p, "rows": rows}


def _cell(ctx: Context, p: dict[str, Any], interval: float, workers: int) -> dict[str, Any]:
    folder = ctx.folder(f"latency-{interval}x{workers}")
    with ctx.server.tables() as tables, Fleet(tables, folder, 1, *flags(interval, workers)) as fleet:
        fleet.wait_polling()
        time.sleep(max(1.0, 2 * interval))  # past the first polls
        start = time.time()
        time.sleep(p["idle_seconds"])
        end = time.time()
        idle = sum(operations(fleet.calls(), start, end).values()) / (end - start)
        pickups = [_pickup(tables, interval) for _ in range(p["samples"])]
    return {
        "interval": interval,
        "workers": workers,
        "idle_requests_per_s": r(idle),
        "p50_ms": r(1000 * percentile(pickups, 50), 1),
        "p95_ms": r(1000 * percentile(pickups, 95), 1),
        "p99_ms": r(1000 * percentile(pickups, 99), 1),
        "max_ms": r(1000 * max(pickups), 1),
    }


def _pickup(tables: Tables, interval: float) -> float:
    time.sleep(random.uniform(0, interval))
    job = noop_job()
    tables.put(job)
    inserted = time.time()
    deadline = time.monotonic() + 30 + 5 * interval
    while (started := tables.started(job["job_id"])) is None or tables.status(job["job_id"]) != "COMPLETED":
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job['job_id']} not done within {30 + 5 * interval:.0f}s")
        time.sleep(0.02)
    return max(0.0, started - inserted)
