"""What one job costs beyond the work itself: DynamoDB requests, the start of a process, memory.

- Requests per job and job duration (``completed_at - started_at`` in the records) of a one-worker
  poller, for an in-process no-op job and for FULL_PIPELINE run as ``/bin/true``; their difference is
  what starting and reaping the job's process costs, set against a bare ``Popen(["/bin/true"]).wait()``
  timed here.
- Resident memory (VmRSS from /proc) of a 4-worker poller when idle and after each round of jobs,
  10,000 in the full profile, then a round of ``/bin/true`` jobs: it should stay flat. The processes
  below it (its child guard, started by the first ``/bin/true`` job) are measured beside it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Context, log, median, noop_job, r, repeat, true_job
from bench.pollers import Fleet, Poller, flags, operations, per_job

PROFILES: dict[str, dict[str, Any]] = {
    "ci": {
        "jobs": 5,
        "popen": 20,
        "memory_workers": 4,
        "memory_rounds": [50],
        "memory_subprocess": 5,
        "reps": 1,
    },
    "full": {
        "jobs": 100,
        "popen": 200,
        "memory_workers": 4,
        "memory_rounds": [1_000, 1_000, 3_000, 5_000],
        "memory_subprocess": 500,
        "reps": 3,
    },
}


def run(ctx: Context) -> dict[str, Any]:
    p = PROFILES[ctx.profile]
    popen_ms = median([_popen() for _ in range(p["popen"])])
    modes = {
        "inprocess": repeat(p["reps"], lambda rep: _jobs(ctx, noop_job, p["jobs"], rep)),
        "subprocess": repeat(p["reps"], lambda rep: _jobs(ctx, true_job, p["jobs"], rep)),
    }
    start_ms = modes["subprocess"]["job_ms"] - modes["inprocess"]["job_ms"]
    log(f"overhead: process start {start_ms:.1f} ms per job against Popen {popen_ms:.2f} ms")
    return {
        "params": p,
        "modes": modes,
        "popen_ms": r(popen_ms, 3),
        "process_start_ms": r(start_ms, 1),
        "process_start_over_popen_ms": r(start_ms - popen_ms, 1),
        "memory": _memory(ctx, p),
    }


def _popen() -> float:
    started = time.perf_counter()
    subprocess.Popen(["/bin/true"]).wait()
    return 1000 * (time.perf_counter() - started)


def _jobs(ctx: Context, make: Callable[[], dict[str, Any]], count: int, rep: int) -> dict[str, float]:
    with ctx.server.tables() as tables:
        tables.load([make() for _ in range(count)])
        poller = Poller(tables, ctx.folder(f"overhead-{rep}"), 0, *flags(0.1, 1, "--max-jobs", str(count)))
        poller.wait(timeout=120 + 2 * count)
        durations = [end - start for start, end in tables.times().values() if start and end]
        return {"job_ms": 1000 * median(durations)} | per_job(operations(poller.calls()), count)


def _memory(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    folder = ctx.folder("memory")
    with ctx.server.tables() as tables, Fleet(tables, folder, 1, *flags(0.5, p["memory_workers"])) as fleet:
        fleet.wait_polling()
        poller = fleet.pollers[0]
        series = [{"jobs": 0, "mode": "idle"} | _rss(poller)]
        done = 0
        rounds = [(n, "inprocess", noop_job) for n in p["memory_rounds"]]
        rounds.append((p["memory_subprocess"], "subprocess", true_job))
        for count, mode, make in rounds:
            tables.load([make() for _ in range(count)])
            tables.wait_drained(timeout=120 + count, every=1.0)
            done += count
            series.append({"jobs": done, "mode": mode} | _rss(poller))
            log(f"overhead: RSS {series[-1]} after {done} jobs")
    return {"workers": p["memory_workers"], "series": series}


def _rss(poller: Poller) -> dict[str, float]:
    return {"rss_mb": r(poller.rss(), 1), "children_rss_mb": r(poller.children_rss(), 1)}
