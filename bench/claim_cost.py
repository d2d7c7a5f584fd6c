"""Claim cost against backlog and table size, next to the original poller's strategy.

For each backlog of PENDING no-op jobs (and once with 100,000 finished jobs beside a small backlog), a
real one-worker poller claims ``claims`` jobs (``--max-jobs``). Milliseconds per job come from the
records (first to last ``completed_at``, so start-up and the first job's cold connections are left
out), DynamoDB requests per job from the poller's request log.
The original strategy (bench.baselines.original_job) claims ``original_claims`` jobs from the same
table in the same run. Defect 1 says polling must cost the same whatever the backlog: the
``vs_smallest`` column is that check, ``original_over_ours`` the comparison.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bench.baselines import original_job
from bench.harness import Context, Tables, finished_job, log, median, noop_job, r, repeat
from bench.pollers import Poller, flags, operations, per_job
from delphi_jobs import requestlog
from delphi_jobs.dynamo import make_client

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"backlogs": [200], "finished": 300, "claims": 5, "original_claims": 1, "reps": 1},
    "full": {
        "backlogs": [100, 1_000, 10_000, 50_000],
        "finished": 100_000,
        "claims": 100,
        "original_claims": 3,
        "reps": 3,
    },
}


def run(ctx: Context) -> dict[str, Any]:
    p = PROFILES[ctx.profile]
    scenarios = [(n, 0) for n in p["backlogs"]] + [(p["backlogs"][0], p["finished"])]
    rows = [_scenario(ctx, p, pending, finished) for pending, finished in scenarios]
    smallest = rows[0]["ours"]["ms_per_job"]
    for row in rows:
        row["ours_vs_smallest"] = r(row["ours"]["ms_per_job"] / smallest)
        row["original_over_ours"] = r(row["original"]["ms_per_job"] / row["ours"]["ms_per_job"])
    return {"params": p, "rows": rows}


def _scenario(ctx: Context, p: dict[str, Any], pending: int, finished: int) -> dict[str, Any]:
    claims, reps = p["claims"], p["reps"]
    with ctx.server.tables() as tables:
        started = time.monotonic()
        # Enough on top that the backlog never drops below ``pending`` while we claim.
        tables.load([finished_job() for _ in range(finished)])
        tables.load([noop_job() for _ in range(pending + claims * reps + p["original_claims"])])
        loaded = time.monotonic() - started
        log(f"claim_cost: {pending} pending, {finished} finished loaded in {loaded:.0f}s")
        folder = ctx.folder(f"claim-{pending}-{finished}")

        def ours(rep: int) -> dict[str, float]:
            poller = Poller(tables, folder, rep, *flags(0.1, 1, "--max-jobs", str(claims)))
            poller.wait(timeout=120 + claims)
            # Claimed jobs are the newest COMPLETED ones (finished jobs are a day old); this rep's are
            # the last to complete.
            ends = [end for _, end in tables.newest("COMPLETED", claims * (rep + 1)) if end is not None]
            done = sorted(ends)[-claims:]
            return {"ms_per_job": 1000 * (done[-1] - done[0]) / (claims - 1)} | per_job(
                operations(poller.calls()), claims
            )

        return {
            "pending": pending,
            "finished": finished,
            "load_seconds": r(loaded, 1),
            "ours": repeat(reps, ours),
            "original": _original(tables, folder, p["original_claims"]),
        }


def _original(tables: Tables, folder: Any, claims: int) -> dict[str, Any]:
    path = folder / "original.calls"
    client = make_client(dataclasses.replace(tables.settings, request_log=str(path)))
    times, items = [], []
    for _ in range(claims):
        started = time.perf_counter()
        items.append(original_job(tables, client, "original"))
        times.append(1000 * (time.perf_counter() - started))
    return {
        "ms_per_job": r(median(times)),
        "items_read_per_poll": median(items),
        "runs_ms": [r(t) for t in times],
    } | {k: r(v) for k, v in per_job(operations(requestlog.read(str(path))), claims).items()}
