"""`delphi-jobs demo`: the whole system on embedded servers, with nothing installed but Python.

Embedded DynamoDB and PostgreSQL, a generated Polis conversation, the loopback Anthropic fake (or the
real API when asked and a key is set), and a real poller. It submits a FULL_PIPELINE job (mapped to
the built-in pipeline) and, once that completes, a CREATE_NARRATIVE_BATCH job exactly as the Polis
server writes them, shows the jobs as they move, and ends with what was stored.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any

import psycopg2

from delphi_jobs import logs
from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.embedded_servers import EmbeddedServers
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import default_registry
from delphi_jobs.model import Job
from delphi_jobs.poller import Poller
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import TERMINAL, Status
from delphi_jobs.store import open_store

REPORT_ID = "r_demo_report"


@dataclass(frozen=True)
class DemoOptions:
    participants: int = 300
    comments: int = 56
    seed: int = 0
    zid: int = 1
    keep_running: bool = False
    real_anthropic: bool = False
    timeout: float = 110.0


@dataclass(frozen=True)
class DemoResult:
    exit_code: int
    jobs: tuple[Job, ...]
    sections: dict[str, dict[str, Any]]
    settings: Settings


class _View:
    """Prints one line whenever a job's status or latest activity changes."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._seen: dict[str, tuple[str, str]] = {}
        self._started = time.monotonic()

    def show(self, job: Job) -> None:
        activity = job.logs[-1].message if job.logs else ""
        key = (job.status, activity)
        if self._seen.get(job.job_id) == key:
            return
        self._seen[job.job_id] = key
        elapsed = time.monotonic() - self._started
        line = f"{elapsed:6.1f}s  {job.job_type:<25} {job.job_id[:18]:<18}  {job.status:<16} {activity[:60]}"
        print(line.rstrip(), file=self._out, flush=True)


def _wait_for(queue: JobQueue, job_id: str, view: _View, deadline: float, done: Callable[[Job], bool]) -> Job:
    while True:
        job = queue.get(job_id)
        if job is not None:
            view.show(job)
            if done(job):
                return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not finish in time (status {job.status if job else '?'})")
        time.sleep(0.25)


def _terminal(job: Job) -> bool:
    return job.status in TERMINAL


def _groups(settings: Settings, zid: int) -> list[int]:
    conn = psycopg2.connect(str(settings.database_url))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT data FROM math_main WHERE zid = %s ORDER BY modified DESC LIMIT 1", (zid,))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return []
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    return [
        int(g["n-members"]) for _, g in sorted(data.get("group-votes", {}).items(), key=lambda kv: int(kv[0]))
    ]


def _tuned(settings: Settings) -> Settings:
    """Short leases and re-checks so the whole flow shows in seconds."""
    return dataclasses.replace(
        settings, poll_interval=0.2, max_workers=2, lease_seconds=3.0, batch_recheck_seconds=1.0
    )


def run_demo(options: DemoOptions, base: Settings, out: IO[str] = sys.stdout) -> DemoResult:
    logs.configure("WARNING", "console")
    logs.echo_job_lines(False)
    with ExitStack() as stack:
        servers = stack.enter_context(EmbeddedServers(base, real_anthropic=options.real_anthropic))
        settings = _tuned(servers.settings)
        print("delphi-jobs demo", file=out)
        for line in servers.describe()[:3]:
            print("  " + line, file=out)
        sample = servers.load_conversation(
            seed=options.seed,
            zid=options.zid,
            participants=options.participants,
            comments=options.comments,
            report_id=REPORT_ID,
        )
        print(
            f"  conversation {sample.zid}: {sample.topic!r}, {len(sample.comments)} comments, "
            f"{sample.participants} participants, {len(sample.votes)} votes\n",
            file=out,
        )
        poller = Poller(settings, default_registry(settings))
        thread = threading.Thread(target=poller.run, name="demo-poller", daemon=True)
        thread.start()
        client = make_client(settings)
        try:
            jobs = _run_jobs(settings, sample.zid, _View(out), time.monotonic() + options.timeout)
        finally:
            if not options.keep_running:
                poller.request_stop()
                thread.join(timeout=30)
        sections = NarrativeReportStore(client, settings.reports_table).latest_run(REPORT_ID)
        failed = [j for j in jobs if j.status != Status.COMPLETED]
        _summary(out, jobs, _groups(settings, sample.zid), sections)
        if options.keep_running:
            print("\nPoint another shell at these servers:", file=out)
            for line in servers.export_lines():
                print("  " + line, file=out)
            print(
                "The servers and the poller keep running; Ctrl-C or SIGTERM stops them.", file=out, flush=True
            )
            _wait_for_stop_signal()
            poller.request_stop()
            thread.join(timeout=30)
        return DemoResult(1 if failed or len(jobs) < 3 else 0, tuple(jobs), sections, settings)
    raise AssertionError("unreachable")


def _run_jobs(settings: Settings, zid: int, view: _View, deadline: float) -> list[Job]:
    """A FULL_PIPELINE job, then (once it completed) a narrative job, exactly as the server writes them."""
    client = make_client(settings)
    queue = JobQueue(open_store(settings))
    pipeline = producer_records.server_full_pipeline(zid, REPORT_ID)
    producer_records.put_raw(client, settings.jobs_table, pipeline)
    jobs = [_wait_for(queue, pipeline["job_id"], view, deadline, _terminal)]
    if jobs[-1].status == Status.COMPLETED:
        narrative = producer_records.server_narrative(REPORT_ID, zid, model=str(settings.anthropic_model))
        producer_records.put_raw(client, settings.jobs_table, narrative)
        parent = _wait_for(queue, narrative["job_id"], view, deadline, _terminal)
        jobs.append(parent)
        checker_id = parent.job_results.get("checker_job_id")
        if checker_id:
            jobs.append(_wait_for(queue, str(checker_id), view, deadline, _terminal))
    return jobs


def _summary(out: IO[str], jobs: list[Job], groups: list[int], sections: dict[str, dict[str, Any]]) -> None:
    print("\nJobs", file=out)
    for job in jobs:
        detail = f"  {job.error_message}" if job.error_message else ""
        print(f"  {job.job_type:<25} {job.job_id:<60} {job.status}{detail}", file=out)
    sizes = ", ".join(f"group {i}: {n} participants" for i, n in enumerate(groups))
    print(f"\nOpinion groups found: {len(groups)} ({sizes})", file=out)
    print(f"\nNarrative sections stored for report {REPORT_ID}: {len(sections)}", file=out)
    for name, item in sorted(sections.items()):
        try:
            title = json.loads(item["report_data"]).get("title", "")
        except (ValueError, AttributeError):
            title = "(not JSON)"
        print(f"  {name:<48} {title}", file=out)


def _wait_for_stop_signal() -> None:
    """Until SIGTERM or SIGINT: the caller then stops the poller and every server cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(1.0):
        pass
