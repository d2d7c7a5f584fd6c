"""Soak with chaos: pollers killed (SIGKILL) and restarted at random while a stream of short jobs of
every kind goes through them; then an exact account of every job.

Jobs are inserted at a steady rate during the chaos period, so the kills land on real work: pipelines
that succeed, fail or are invalid, unknown job types, and narrative reports against the loopback
Anthropic fake. After the chaos the pollers drain the queue undisturbed. The ledger (ledger.py) then
requires of every job: the expected terminal state, written exactly once and never overwritten, and
no extra side effect except a re-run of a run whose poller was killed. Of the narrative reports: one
paid batch each, every section stored exactly once.

CI runs ``CI`` (tests/chaos/test_soak.py). The full profile is a command; it starts its own DynamoDB
Local, PostgreSQL and Anthropic fake and prints its report as JSON (docs/reliability.md):

    python -m tests.chaos.soak                # 4 pollers, 2,000 jobs, 120 s of chaos
    python -m tests.chaos.soak --jobs 200 --seconds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.dynamodb_local import DynamoDBLocal
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import TERMINAL
from delphi_jobs.store import open_store
from delphi_jobs.tables import ensure_tables, table_specs
from tests.chaos.ledger import account, record_history, report_problem
from tests.conftest import fresh_settings
from tests.narrative_env import analysed_database, narrative_settings, poller_extra
from tests.pollers import poller_env, start_poller


@dataclass(frozen=True)
class Profile:
    jobs: int
    seconds: float
    """How long pollers are killed and restarted; jobs are inserted evenly over this time."""
    pollers: int = 4
    workers: int = 2
    lease: float = 6.0
    kill_every: tuple[float, float] = (1.0, 4.0)
    """Seconds between two kills, uniformly drawn."""
    drain_timeout: float = 600.0
    seed: int = 11


ZID = 4545
"""The conversation of every soak report."""
REPORT = "r_soak"
MODEL = "claude-soak-model"
PIPELINE_JOB = "9c8b7a6f-5e4d-4c3b-8a2f-1e0d9c8b7a6f"

CI = Profile(jobs=120, seconds=20)
FULL = Profile(jobs=2000, seconds=120, drain_timeout=1800)

KINDS: list[tuple[str, int]] = [
    ("pipeline_ok", 70),
    ("pipeline_usage_error", 8),
    ("pipeline_fails", 7),
    ("unknown_type", 5),
    ("invalid_record", 5),
    ("narrative", 5),
]
"""The mix of job kinds, by weight."""


def new_job(kind: str, n: int) -> tuple[dict[str, Any], str]:
    """A producer record of ``kind`` and the terminal status it must end in."""
    full = producer_records.server_full_pipeline
    if kind == "pipeline_ok":
        return full(1), "COMPLETED"
    if kind == "pipeline_usage_error":
        return full(2), "FAILED"
    if kind == "pipeline_fails":
        return full(3, max_retries=0), "FAILED"
    if kind == "unknown_type":
        return full(1, job_type="DELETE_EVERYTHING"), "FAILED"
    if kind == "invalid_record":
        return full("not-a-zid"), "FAILED"
    if kind == "narrative":
        report = f"r_soak_{n}"
        return producer_records.server_narrative(report, ZID, model=MODEL), "COMPLETED"
    raise ValueError(kind)


def _started(log: Path) -> bool:
    with log.open("rb") as head:
        return b"poller starting" in head.read(65536)


@dataclass
class Fleet:
    """The poller processes: started, killed and restarted; every killed pid is remembered."""

    env: dict[str, str]
    flags: tuple[str, ...]
    logs: Path
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    started: int = 0

    def _start(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.started += 1
        log = self.logs / f"poller-{self.started}.log"
        return start_poller(self.env, *self.flags, log=log), log

    def start(self, count: int) -> None:
        self.procs = [self._start() for _ in range(count)]

    def _ready(self) -> list[int]:
        return [i for i, (_, log) in enumerate(self.procs) if _started(log)]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self._ready()) < len(self.procs):
            if time.monotonic() > deadline:
                raise AssertionError(f"pollers not polling after {timeout}s: see {self.logs}")
            time.sleep(0.2)

    def kill_one(self, rng: random.Random, until: float) -> None:
        """SIGKILL a random poller that has started polling (waiting for one until ``until``), and
        start another in its place. Pollers still starting are spared: killing one would cost nothing
        but a Python start."""
        ready = self._ready()
        while not ready and time.monotonic() < until:
            time.sleep(0.2)
            ready = self._ready()
        if not ready:
            return
        index = rng.choice(ready)
        victim = self.procs[index][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.killed.append(victim.pid)
        self.procs[index] = self._start()

    def stop(self) -> list[int | None]:
        for proc, _ in self.procs:
            proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc, _ in self.procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


@dataclass
class SoakReport:
    profile: dict[str, Any]
    jobs_inserted: int
    jobs_total: int
    """Inserted jobs plus the batch checkers the narrative jobs created."""
    statuses: dict[str, int]
    kills: int
    chaos_seconds: float
    total_seconds: float
    jobs_per_second: float
    rescued_jobs: int
    side_effects: int
    extra_side_effects: int
    extra_side_effects_by_killed_pollers: int
    batches_created: int
    narratives: int
    sections_stored: int
    poller_exit_codes: list[int | None]
    problems: list[str]


class Soak:
    def __init__(self, settings: Settings, state: Path, profile: Profile, fake: FakeAnthropic) -> None:
        self.settings = settings
        self.state = state
        self.profile = profile
        self.fake = fake
        self.queue = JobQueue(open_store(settings))
        self.expected: dict[str, str] = {}
        self.narratives: dict[str, str] = {}
        """CREATE job id -> report id."""
        self._ended: set[str] = set()

    def _insert_steadily(self, stop: threading.Event) -> None:
        rng = random.Random(self.profile.seed)
        kinds, weights = zip(*KINDS, strict=True)
        client = make_client(self.settings)
        started = time.monotonic()
        for n in range(self.profile.jobs):
            due = started + n * self.profile.seconds / self.profile.jobs
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            kind = rng.choices(kinds, weights)[0]
            record, status = new_job(kind, n)
            producer_records.put_raw(client, self.settings.jobs_table, record)
            self.expected[str(record["job_id"])] = status
            if kind == "narrative":
                self.narratives[str(record["job_id"])] = str(record["report_id"])

    def _all_terminal(self) -> bool:
        """Every job terminal, checkers included (a completed parent adds its checker to the watch).
        Only jobs not yet seen terminal are read again: no worker changes a terminal job."""
        for job_id in [j for j in self.expected if j not in self._ended]:
            job = self.queue.get(job_id)
            if job is None or job.status not in TERMINAL:
                continue
            self._ended.add(job_id)
            checker = job.job_results.get("checker_job_id") if job_id in self.narratives else None
            if checker:
                self.expected.setdefault(str(checker), "COMPLETED")
        return len(self._ended) == len(self.expected)

    def run(self) -> SoakReport:
        profile = self.profile
        rng = random.Random(profile.seed)
        env = poller_env(self.settings, self.state, **poller_extra(self.settings))
        flags = ("--max-workers", str(profile.workers), "--lease-seconds", str(profile.lease))
        fleet = Fleet(env, ("--interval", "0.2", *flags), self.state)
        fleet.start(profile.pollers)
        fleet.wait_ready(timeout=300)  # the chaos starts with a working fleet
        started = time.monotonic()
        stop_inserting = threading.Event()
        inserter = threading.Thread(target=self._insert_steadily, args=(stop_inserting,), daemon=True)
        inserter.start()
        try:
            while time.monotonic() - started < profile.seconds:
                time.sleep(rng.uniform(*profile.kill_every))
                fleet.kill_one(rng, until=started + profile.seconds)
            chaos = time.monotonic() - started
            inserter.join()
            deadline = time.monotonic() + profile.drain_timeout
            while not self._all_terminal():
                if time.monotonic() > deadline:
                    raise AssertionError(f"jobs not terminal {profile.drain_timeout}s after the chaos")
                time.sleep(0.5)
            total = time.monotonic() - started
        finally:
            stop_inserting.set()
            codes = fleet.stop()
        return self._report(fleet, codes, chaos, total)

    def _report(self, fleet: Fleet, codes: list[int | None], chaos: float, total: float) -> SoakReport:
        ledger = account(self.settings, self.state, self.expected, fleet.killed)
        problems = [f"{job.job_id}: {problem}" for job in ledger.jobs.values() for problem in job.problems]
        self._check_narratives(problems)
        problems += [f"a poller exited {code} on SIGTERM" for code in codes if code != 0]
        summary = ledger.summary()
        killed = set(fleet.killed)
        by_killed = sum(1 for job in ledger.jobs.values() for run in job.runs[:-1] if run.poller in killed)
        sections = sum(
            len(list(self._reports().items_for_report(report))) for report in self.narratives.values()
        )
        return SoakReport(
            profile=asdict(self.profile),
            jobs_inserted=self.profile.jobs,
            jobs_total=len(self.expected),
            statuses=summary["statuses"],
            kills=len(fleet.killed),
            chaos_seconds=round(chaos, 1),
            total_seconds=round(total, 1),
            jobs_per_second=round(len(self.expected) / total, 2),
            rescued_jobs=summary["rescued_jobs"],
            side_effects=summary["side_effects"],
            extra_side_effects=summary["extra_side_effects"],
            extra_side_effects_by_killed_pollers=by_killed,
            batches_created=self.fake.create_calls,
            narratives=len(self.narratives),
            sections_stored=sections,
            poller_exit_codes=codes,
            problems=problems,
        )

    def _reports(self) -> NarrativeReportStore:
        return NarrativeReportStore(make_client(self.settings), self.settings.reports_table)

    def _check_narratives(self, problems: list[str]) -> None:
        """One paid batch per report, adopted by its own job alone; every section stored once."""
        owners: dict[str, list[str]] = {}
        for job_id, report in self.narratives.items():
            job = self.queue.get(job_id)
            if job is None or job.status != "COMPLETED":
                ended = f"{job and job.status}: {job and job.error_message}"
                problems.append(f"{job_id}: narrative ended {ended}")
                continue
            owners.setdefault(str(job.batch_id), []).append(job_id)
            whole = report_problem(self.settings, report, job.item.get("section_map"))
            if whole:
                problems.append(whole)
        problems += [
            f"batch {batch} adopted by {len(jobs)} reports: {', '.join(jobs)}"
            for batch, jobs in owners.items()
            if len(jobs) > 1
        ]
        stray = sorted(set(self.fake.batches) - set(owners))
        if stray:  # a recovery that failed, or adopted another report's batch, strands its own
            problems.append(f"{len(stray)} paid batches adopted by no report: {', '.join(stray)}")
        if self.fake.create_calls != len(self.fake.batches):
            problems.append(f"{self.fake.create_calls} creates made {len(self.fake.batches)} batches")


@contextmanager
def soak_servers() -> Iterator[tuple[Settings, FakeAnthropic]]:
    """DynamoDB Local, PostgreSQL with an analysed conversation, the Anthropic fake: for the command."""
    with ExitStack() as stack:
        ddb = stack.enter_context(DynamoDBLocal())
        postgres = stack.enter_context(EmbeddedPostgres())
        fake = stack.enter_context(FakeAnthropic(end_after_seconds=1.0))
        settings = fresh_settings(ddb.endpoint_url)
        ensure_tables(make_client(settings), table_specs(settings))
        record_history(settings)
        database = analysed_database(postgres, ZID, REPORT)
        ready = narrative_settings(
            settings, database, fake, zid=ZID, report_id=REPORT, model=MODEL, pipeline_job=PIPELINE_JOB
        )
        yield dataclasses.replace(ready, batch_recheck_seconds=0.5), fake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=FULL.jobs)
    parser.add_argument("--seconds", type=float, default=FULL.seconds, help="of chaos")
    parser.add_argument("--pollers", type=int, default=FULL.pollers)
    parser.add_argument("--workers", type=int, default=FULL.workers, help="per poller")
    parser.add_argument("--lease", type=float, default=FULL.lease)
    parser.add_argument("--seed", type=int, default=FULL.seed)
    args = parser.parse_args(argv)
    profile = replace(
        FULL,
        jobs=args.jobs,
        seconds=args.seconds,
        pollers=args.pollers,
        workers=args.workers,
        lease=args.lease,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="delphi-soak-") as workdir, soak_servers() as (settings, fake):
        report = Soak(settings, Path(workdir), profile, fake).run()
    print(json.dumps(asdict(report), indent=2))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
