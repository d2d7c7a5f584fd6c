"""A stand-in for run_delphi.py whose behaviour is chosen by the zid, for poller tests.

zid 1: three lines, exit 0 | 2: usage error, exit 2 | 3: error output, exit 3 |
4: starts a grandchild and hangs (timeouts) | 5: starts a grandchild, works FAKE_PIPELINE_SLEEP s, exit 0 |
6: starts a grandchild in a session of its own (escaping the process group) and hangs | 7: the same, exit 0 |
8: three stages announced with DELPHI_STEP markers, resumable from DELPHI_RESUME_FROM_STEP.
Every run appends "start PID poller=POLLER_PID ..." / "done PID" to STATE/JOB_ID.runs and child pids to
STATE/JOB_ID.pids: the side-effect ledger of the chaos tests, which account for every extra run by the
poller that was killed while it ran.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def note(path: Path, line: str) -> None:
    with path.open("a") as sink:
        sink.write(line + "\n")


def poller_pid() -> int:
    """The poller that runs this job, as our parent (the child guard) was told on its command line:
    still right when the poller has just died and the guard was handed to init."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmdline:
        argv = cmdline.read().decode().split("\0")
    return int(argv[argv.index("delphi_jobs.childguard") + 1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zid", type=int, required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--report", default="")
    args = parser.parse_args()
    state = Path(args.state)
    runs, pids = state / f"{args.job}.runs", state / f"{args.job}.pids"
    env_report = os.environ.get("DELPHI_REPORT_ID")
    note(runs, f"start {os.getpid()} poller={poller_pid()} report={args.report} env_report={env_report}")
    note(pids, str(os.getpid()))
    if args.zid == 1:
        for i in range(3):
            print(f"step {i} of zid {args.zid}", flush=True)
        note(runs, f"done {os.getpid()}")
        return 0
    if args.zid == 8:
        return stepped(args, runs)
    if args.zid == 2:
        print("usage: run_delphi.py --zid=N", file=sys.stderr, flush=True)
        return 2
    if args.zid == 3:
        print("connecting to database", flush=True)
        print("psycopg2.OperationalError: server closed the connection", file=sys.stderr, flush=True)
        return 3
    escape = args.zid in (6, 7)
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(1000)"], start_new_session=escape
    )
    note(pids, str(grandchild.pid))
    if args.zid == 7:
        print("leaving a daemon behind", flush=True)
        note(runs, f"done {os.getpid()}")
        return 0
    if args.zid in (4, 6):
        print("working forever", flush=True)
        time.sleep(1000)
        return 0
    seconds = float(os.environ.get("FAKE_PIPELINE_SLEEP", "3"))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        print("working", flush=True)
        time.sleep(0.25)
    grandchild.kill()
    note(runs, f"done {os.getpid()}")
    return 0


def stepped(args: argparse.Namespace, runs: Path) -> int:
    """Three stages announced with DELPHI_STEP markers, FAKE_PIPELINE_SLEEP seconds each; the stages
    skipped on a resume (DELPHI_RESUME_FROM_STEP) are noted, not run."""
    stages = ["PCA", "UMAP", "REPORT"]
    resume = os.environ.get("DELPHI_RESUME_FROM_STEP")
    note(runs, f"resume_from={resume}")
    seconds = float(os.environ.get("FAKE_PIPELINE_SLEEP", "1"))
    for stage in stages[stages.index(resume) if resume in stages else 0 :]:
        print(f"DELPHI_STEP {stage}", flush=True)
        note(runs, f"stage {stage}")
        time.sleep(seconds)
    note(runs, f"done {os.getpid()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
