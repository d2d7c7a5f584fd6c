"""The exact account of a chaos run: every write to every job, and every side effect of every job.

Looking at the final records is not enough to prove "no COMPLETED job is overwritten": an overwrite
that wrote the same status again leaves no trace there. So the chaos tests turn on a DynamoDB stream
of the jobs table (DynamoDB Local has streams, kept across restarts with ``-dbPath``) and read back
every write with its before and after images. The stand-in pipeline (tests/helpers/fake_pipeline.py)
notes every run with the pid of the poller that ran it, so each extra run can be traced to the poller
that was killed while it ran.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import from_item, make_client
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.states import TERMINAL, Status

Image = dict[str, Any]


def record_history(settings: Settings) -> None:
    """Stream every write of the jobs table from now on (call it before inserting jobs)."""
    make_client(settings).update_table(
        TableName=settings.jobs_table,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


@dataclass(frozen=True)
class Write:
    old: Image | None
    new: Image | None


def read_history(settings: Settings) -> dict[str, list[Write]]:
    """Every write of the jobs table since ``record_history``, per job, in the order they happened."""
    client = make_client(settings)
    streams = boto3.client("dynamodbstreams", endpoint_url=settings.endpoint_url, region_name=settings.region)
    arn = client.describe_table(TableName=settings.jobs_table)["Table"]["LatestStreamArn"]
    found: list[tuple[int, str, Write]] = []
    shards = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    for shard in shards:
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        ).get("ShardIterator")
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                change = record["dynamodb"]
                old, new = change.get("OldImage"), change.get("NewImage")
                write = Write(from_item(old) if old else None, from_item(new) if new else None)
                job_id = str(from_item(change["Keys"])["job_id"])
                found.append((int(change["SequenceNumber"]), job_id, write))
            iterator = page.get("NextShardIterator") if page["Records"] else None
    history: dict[str, list[Write]] = defaultdict(list)
    for _, job_id, write in sorted(found, key=lambda entry: entry[0]):
        history[job_id].append(write)
    return dict(history)


def poller_of(worker_id: Any) -> int | None:
    """The pid inside a worker_id (``host:pid:slot:random``)."""
    parts = str(worker_id or "").rsplit(":", 3)
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


@dataclass(frozen=True)
class Run:
    """One run of the stand-in pipeline: its pid, the poller that ran it, whether it finished."""

    pid: int
    poller: int
    done: bool


def pipeline_runs(state: Path, job_id: str) -> list[Run]:
    path = state / f"{job_id}.runs"
    lines = path.read_text().splitlines() if path.exists() else []
    done = {int(line.split()[1]) for line in lines if line.startswith("done ")}
    runs = []
    for line in lines:
        if line.startswith("start "):
            words = line.split()
            poller = next(int(w.removeprefix("poller=")) for w in words if w.startswith("poller="))
            runs.append(Run(int(words[1]), poller, int(words[1]) in done))
    return runs


def _status(image: Image | None) -> str | None:
    return None if image is None else str(image.get("status"))


@dataclass
class JobAccount:
    """What happened to one job, and what of it breaks a guarantee (``problems``)."""

    job_id: str
    status: str | None
    claims: list[str] = field(default_factory=list)
    """worker_id of every claim and reclaim, in order."""
    takeovers: int = 0
    """Reclaims of the job from a lost worker (PROCESSING to PROCESSING under a new version)."""
    finisher: str | None = None
    """worker_id on the job when it became terminal."""
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def extra_runs(self) -> int:
        return max(0, len(self.runs) - 1)

    @property
    def rescued(self) -> bool:
        """Taken over from a lost worker (a claim from AWAITING_RECHECK or PENDING is not a rescue)."""
        return self.takeovers > 0


def account_job(
    job_id: str, writes: list[Write], runs: list[Run], killed: set[int], expected: str | None
) -> JobAccount:
    final = writes[-1].new if writes else None
    job = JobAccount(job_id, _status(final), runs=runs)
    terminal_writes = 0
    for write in writes:
        old, new = write.old, write.new
        if _status(new) == Status.PROCESSING and (old is None or old.get("version") != new.get("version")):
            job.claims.append(str(new.get("worker_id") if new else ""))
            if _status(old) == Status.PROCESSING:
                job.takeovers += 1
        if _status(old) in TERMINAL:
            kept = ("status", "version", "worker_id", "completed_at", "error_message")
            changed = [k for k in kept if (old or {}).get(k) != (new or {}).get(k)]
            if changed:
                job.problems.append(f"a {_status(old)} job was overwritten ({', '.join(changed)} changed)")
        elif _status(new) in TERMINAL:
            terminal_writes += 1
            job.finisher = str(new.get("worker_id") if new else "")
    if terminal_writes != 1:
        job.problems.append(f"{terminal_writes} writes into a terminal state (expected exactly one)")
    if expected is not None and job.status != expected:
        job.problems.append(f"ended {job.status}, expected {expected}")
    for run in runs[:-1]:
        if run.poller not in killed:
            job.problems.append(f"ran again after a run by poller {run.poller}, which was not killed")
    if runs and job.status == Status.COMPLETED:
        last = runs[-1]
        if not last.done:
            job.problems.append("COMPLETED although its last run did not finish")
        if poller_of(job.finisher) not in (last.poller, None):
            job.problems.append(f"completed by poller {poller_of(job.finisher)}, last run by {last.poller}")
    return job


@dataclass
class Ledger:
    jobs: dict[str, JobAccount]

    @property
    def problems(self) -> list[str]:
        return [f"{job.job_id}: {problem}" for job in self.jobs.values() for problem in job.problems]

    def summary(self) -> dict[str, Any]:
        statuses = Counter(str(job.status) for job in self.jobs.values())
        return {
            "statuses": dict(sorted(statuses.items())),
            "side_effects": sum(len(job.runs) for job in self.jobs.values()),
            "extra_side_effects": sum(job.extra_runs for job in self.jobs.values()),
            "rescued_jobs": sum(1 for job in self.jobs.values() if job.rescued),
        }


def account(
    settings: Settings, state: Path, expected: Mapping[str, str | None], killed: Iterable[int]
) -> Ledger:
    """The ledger of the jobs in ``expected`` (job_id -> the status it must end in, None: any)."""
    history = read_history(settings)
    dead = set(killed)
    return Ledger(
        {
            job_id: account_job(job_id, history.get(job_id, []), pipeline_runs(state, job_id), dead, status)
            for job_id, status in expected.items()
        }
    )


def report_problem(settings: Settings, report_id: str, section_map: str | None) -> str | None:
    """Why a report is not whole, or None: every section of the job's ``section_map`` (JSON) must be
    stored exactly once (one item per section: one run, never a duplicate under another timestamp)."""
    store = NarrativeReportStore(make_client(settings), settings.reports_table)
    stored = Counter(str(item["section"]) for item in store.items_for_report(report_id))
    wanted = set(json.loads(section_map or "{}").values())
    if set(stored) != wanted or any(count != 1 for count in stored.values()):
        return f"report {report_id}: sections stored {dict(stored)}, wanted each of {sorted(wanted)} once"
    return None
