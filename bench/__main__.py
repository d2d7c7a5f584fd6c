"""``python -m bench NAME|all [--profile ci|full] [--out FILE] [--cells PxW,...]``: run benchmarks,
print one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import claim_cost, latency, overhead, priority, throughput
from bench.baselines import plain_loop
from bench.harness import Context, Server, log, machine, noop_job
from delphi_jobs.dynamo import make_client

BENCHMARKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "claim_cost": claim_cost.run,
    "throughput": throughput.run,
    "latency": latency.run,
    "overhead": overhead.run,
    "priority": priority.run,
}
HEAP = {"ci": "256m", "full": "1g"}  # 100,000 finished jobs need more than the tests' default
WARM_UP_JOBS = {"ci": 0, "full": 3000}  # ci is a smoke check: its numbers are not measurements


def warm_up(server: Server, jobs: int) -> None:
    """Claim and finish some jobs first: a fresh JVM runs its first requests several times slower,
    which would make whichever benchmark comes first look worse."""
    if not jobs:
        return
    with server.tables() as tables:
        tables.load([noop_job() for _ in range(jobs)])
        plain_loop(tables, make_client(tables.settings), threads=2)


def cells(text: str) -> list[tuple[int, int]]:
    """``1x1,1x4,4x4`` -> [(1, 1), (1, 4), (4, 4)]: processes x workers."""
    try:
        found = [tuple(int(n) for n in cell.split("x")) for cell in text.split(",")]
    except ValueError:
        found = []
    if not found or any(len(cell) != 2 or min(cell) < 1 for cell in found):
        raise argparse.ArgumentTypeError(f"{text!r}: expected PxW[,PxW...], e.g. 1x1,1x4")
    return [(cell[0], cell[1]) for cell in found]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="+", choices=[*BENCHMARKS, "all"], metavar="NAME|all")
    parser.add_argument(
        "--profile",
        choices=["ci", "full"],
        default="ci",
        help="ci: tiny sizes, a minute; full: documented sizes",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    parser.add_argument(
        "--table-flags",
        default="",
        help="create every table set with `delphi-jobs create-tables FLAGS` (e.g. an index option)",
    )
    parser.add_argument(
        "--cells",
        type=cells,
        help="throughput only: these processes x workers cells (e.g. 1x1,1x4) instead of the profile's grid",
    )
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if "all" in args.names else list(dict.fromkeys(args.names))
    document: dict[str, Any] = {"profile": args.profile, "machine": machine(), "benchmarks": {}}
    document["table_flags"] = args.table_flags
    failed = []
    with (
        Server(HEAP[args.profile], shlex.split(args.table_flags)) as server,
        tempfile.TemporaryDirectory(prefix="bench-") as scratch,
    ):
        context = Context(server, args.profile, Path(scratch), args.cells)
        warm_up(server, WARM_UP_JOBS[args.profile])
        for name in names:
            log(f"{name} ({args.profile})")
            started, load = time.monotonic(), os.getloadavg()[0]
            try:
                result = BENCHMARKS[name](context)
            except Exception as exc:  # the other benchmarks still run; the exit code says it failed
                log(f"{name} failed: {traceback.format_exc()}")
                result = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(name)
            result |= {"seconds": round(time.monotonic() - started, 1), "load_average_start": load}
            document["benchmarks"][name] = result
            document["machine"]["load_average_end"] = list(os.getloadavg())
            if args.out:  # after each benchmark: an hour-long run keeps what it measured
                args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
