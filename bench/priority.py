"""How long a job that should go first waits behind others, in seconds and in polls.

- ``priority``: a priority-90 job inserted after ``wall`` PENDING priority-50 jobs (all claimable).
- ``behind_retries``: a fresh due job inserted after ``retries`` backed-off retries (PENDING with
  ``run_after`` an hour ahead, so not claimable).
- ``empty``: the same job alone, the baseline of both, in the same run.

One one-worker poller (the in-process no-op job type) starts after the insert; seconds run from its
first DynamoDB call to the job's ``started_at``; polls are counted in its request log (see
``bench.pollers.polls``). A run that has not claimed the job after ``cap_seconds`` is stopped and
reported unclaimed with the jobs it claimed first; further repetitions are then skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness import Context, backed_off_job, log, median, noop_job, r
from bench.pollers import Fleet, flags, polls

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {"wall": 100, "retries": 100, "cap_seconds": 10.0, "interval": 0.5, "reps": 1},
    "full": {"wall": 10_000, "retries": 5_000, "cap_seconds": 60.0, "interval": 0.5, "reps": 3},
}


def run(ctx: Context) -> dict[str, Any]:
    p = PROFILES[ctx.profile]
    scenarios: dict[str, tuple[int, Callable[[], dict[str, Any]], int]] = {
        "empty": (0, noop_job, 90),
        "priority": (p["wall"], noop_job, 90),
        "behind_retries": (p["retries"], backed_off_job, 50),
    }
    results = {}
    for name, (size, make, target_priority) in scenarios.items():
        runs = []
        for rep in range(p["reps"]):
            runs.append(_once(ctx, p, f"{name}-{rep}", [make() for _ in range(size)], target_priority))
            log(f"priority {name}: {runs[-1]}")
            if not runs[-1]["claimed"]:
                break
        claimed = [run for run in runs if run["claimed"]]
        results[name] = {
            "wall": size,
            "claimed": len(claimed) == len(runs),
            "seconds": r(median([run["seconds"] for run in claimed or runs]), 3),
            "polls": median([run["polls"] for run in claimed or runs]),
            "claims_before": median([run["claims_before"] for run in claimed or runs]),
            "runs": runs,
        }
    return {"params": p} | results


def _once(
    ctx: Context, p: dict[str, Any], name: str, wall: list[dict[str, Any]], priority: int
) -> dict[str, Any]:
    target = noop_job(priority=priority)
    with ctx.server.tables() as tables:
        tables.load(wall)
        tables.put(target)
        with Fleet(tables, ctx.folder(f"priority-{name}"), 1, *flags(p["interval"], 1)) as fleet:
            fleet.wait_polling()
            deadline = time.monotonic() + p["cap_seconds"]
            while (started := tables.started(target["job_id"])) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        calls = fleet.calls()
        until = started if started is not None else calls[-1][0]
        claimed_at = [s for s, _ in tables.times().values() if s is not None]
    return {
        "claimed": started is not None,
        "seconds": r(until - calls[0][0], 3),
        "polls": polls(calls, until, gap=p["interval"] / 2),
        "claims_before": sum(1 for s in claimed_at if s < until),
    }
