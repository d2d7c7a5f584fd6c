"""Jobs per second against pollers (processes x workers), no-op jobs in-process and as ``/bin/true``,
against the plain boto3 claim+finish loop (the ceiling), with the DynamoDB server's own CPU.

For each cell the pollers start on an empty table and reach their idle loop first, so interpreter
start-up is not measured; then each batch of jobs is loaded and drained while they run. Jobs per second
come from the records (first ``started_at`` to last ``completed_at``); CPU from /proc of the pollers
(their reaped children included) and of the DynamoDB Local java process over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.baselines import plain_loop
from bench.harness import Context, Tables, cpu_seconds, log, medians, noop_job, repeat, throughput, true_job
from bench.pollers import Fleet, flags, operations
from delphi_jobs.dynamo import make_client

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {
        "processes": [1],
        "workers": [2],
        "jobs": {"inprocess": 20, "subprocess": 10},
        "ceiling_jobs": 50,
        "ceiling_threads": [1],
        "cell_ceiling_jobs": 30,
        "interval": 0.5,
        "reps": 1,
    },
    "full": {
        "processes": [1, 2, 4, 8],
        "workers": [1, 2, 3, 4],
        "jobs": {"inprocess": 300, "subprocess": 150},
        "ceiling_jobs": 600,
        "ceiling_threads": [1, 4],
        "cell_ceiling_jobs": 200,
        "interval": 0.5,
        "reps": 3,
    },
}
MODES: dict[str, Callable[[], dict[str, Any]]] = {"inprocess": noop_job, "subprocess": true_job}


def run(ctx: Context) -> dict[str, Any]:
    p = PROFILES[ctx.profile]
    grid = ctx.cells or [(processes, workers) for processes in p["processes"] for workers in p["workers"]]
    if ctx.cells:  # the result says which cells were asked for instead of the profile's grid
        p = p | {"cells": grid}
    ceiling = {
        str(threads): repeat(p["reps"], partial(_plain, ctx, p["ceiling_jobs"], threads))
        for threads in p["ceiling_threads"]
    }
    cells = []
    for processes, workers in grid:
        cell = _cell(ctx, p, processes, workers)
        log(
            f"throughput {processes}x{workers}: "
            + ", ".join(f"{m} {cell[m]['jobs_per_s']:.1f}/s ({cell[m]['x_ceiling']:.2f}x)" for m in MODES)
        )
        cells.append(cell)
    return {"params": p, "ceiling": ceiling, "cells": cells}


def _plain(ctx: Context, jobs: int, threads: int, _rep: int) -> dict[str, float]:
    with ctx.server.tables() as tables:
        tables.load([noop_job() for _ in range(jobs)])
        server_cpu, started = cpu_seconds(ctx.server.pid), time.time()
        plain_loop(tables, make_client(tables.settings), threads)
        wall = time.time() - started
        return {
            "jobs_per_s": throughput(tables.times()),
            "server_cores": (cpu_seconds(ctx.server.pid) - server_cpu) / wall,
        }


def _cell(ctx: Context, p: dict[str, Any], processes: int, workers: int) -> dict[str, Any]:
    """Each repetition measures the plain loop (1 thread) with the pollers stopped, then a batch of
    each mode: ``x_ceiling`` compares numbers taken a minute apart, not an hour, on a shared machine."""
    folder = ctx.folder(f"throughput-{processes}x{workers}")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with (
        ctx.server.tables() as tables,
        Fleet(tables, folder, processes, *flags(p["interval"], workers)) as fleet,
    ):
        fleet.wait_polling()
        for rep in range(p["reps"]):
            with fleet.paused():
                ceiling = _plain(ctx, p["cell_ceiling_jobs"], 1, rep)["jobs_per_s"]
            for mode, make in MODES.items():
                batch = _batch(ctx, tables, fleet, make, p["jobs"][mode])
                runs[mode].append(batch | {"x_ceiling": batch["jobs_per_s"] / ceiling, "ceiling": ceiling})
    return {"processes": processes, "workers": workers} | {mode: medians(runs[mode]) for mode in MODES}


def _batch(
    ctx: Context, tables: Tables, fleet: Fleet, make: Callable[[], dict[str, Any]], count: int
) -> dict[str, float]:
    jobs = [make() for _ in range(count)]
    server_cpu, poller_cpu, started = cpu_seconds(ctx.server.pid), fleet.cpu(), time.time()
    tables.load(jobs)
    drained = tables.wait_drained(timeout=60 + 2 * count)
    wall = drained - started
    calls = operations(fleet.calls(), started, drained)
    return {
        "jobs_per_s": throughput(tables.times(j["job_id"] for j in jobs)),
        "requests_per_job": sum(calls.values()) / count,
        "poller_cpu_ms_per_job": 1000 * (fleet.cpu() - poller_cpu) / count,
        "server_cores": (cpu_seconds(ctx.server.pid) - server_cpu) / wall,
    }
