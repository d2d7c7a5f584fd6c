"""What every benchmark shares: one DynamoDB Local per run, fresh tables per measurement, producer
records loaded in bulk, waiting for a queue to drain, and the small statistics the reports use.

The dev-tools package (the DynamoDB Local runner and the producers' record shapes) is imported here
and only here, so a move of either is a one-line change for the whole suite.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.noop import JOB_TYPE as NOOP_JOB_TYPE
from delphi_jobs.config import Settings
from delphi_jobs.devtools import dynamodb_local
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.dynamo import make_client, to_item
from delphi_jobs.model import format_timestamp, parse_timestamp, utcnow
from delphi_jobs.tables import STATUS_CREATED_INDEX, ensure_tables, table_specs

REPO = Path(__file__).resolve().parents[1]
BATCH = 25  # BatchWriteItem's limit


def log(message: str) -> None:
    """Progress goes to stderr: stdout carries only the JSON result."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- records ------------------------------------------------------------------------------------


def noop_job(**changes: Any) -> dict[str, Any]:
    """The Polis server's FULL_PIPELINE record with the benchmarks' in-process no-op job type."""
    return records.server_full_pipeline(1, job_type=NOOP_JOB_TYPE, **changes)


def true_job(**changes: Any) -> dict[str, Any]:
    """The Polis server's FULL_PIPELINE record exactly; pollers run it as ``/bin/true``."""
    return records.server_full_pipeline(1, **changes)


def finished_job() -> dict[str, Any]:
    """A FULL_PIPELINE record as a poller left it yesterday (older than every job loaded today)."""
    now = format_timestamp(utcnow() - timedelta(days=1))
    return records.server_full_pipeline(
        1,
        created_at=now,
        updated_at=now,
        status="COMPLETED",
        version=3,
        worker_id="bench:1:0:000000",
        started_at=now,
        completed_at=now,
        job_results=json.dumps({"result_type": "SUCCESS", "completed_at": now}),
    )


def backed_off_job() -> dict[str, Any]:
    """A job that failed once and waits out its retry backoff (run_after an hour ahead)."""
    later = format_timestamp(utcnow() + timedelta(hours=1))
    return noop_job(retry_count=1, run_after=later, error_message="pipeline exited with code 1")


# ---- server and tables --------------------------------------------------------------------------


class Server:
    """One DynamoDB Local for a whole run (its start-up costs seconds); ``heap`` as -Xmx.

    ``table_flags``: create every table set with ``delphi-jobs create-tables FLAGS`` instead of the
    in-process default, to measure tables as an option of that command makes them (an index)."""

    def __init__(self, heap: str, table_flags: Sequence[str] = ()) -> None:
        reason = dynamodb_local.unavailable_reason()
        if reason:
            raise SystemExit(f"bench needs DynamoDB Local: {reason}")
        self._server = dynamodb_local.DynamoDBLocal(heap=heap)
        self._table_flags = list(table_flags)

    def __enter__(self) -> Server:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def endpoint(self) -> str:
        return self._server.endpoint_url

    @property
    def pid(self) -> int:
        assert self._server.pid is not None
        return self._server.pid

    @contextmanager
    def tables(self) -> Iterator[Tables]:
        """Fresh tables under a new prefix, deleted afterwards so big backlogs do not pile up."""
        settings = Settings(endpoint_url=self.endpoint, table_prefix=f"b{uuid.uuid4().hex[:8]}_")
        client = make_client(settings)
        if self._table_flags:
            command = [
                "create-tables",
                "--endpoint-url",
                self.endpoint,
                "--table-prefix",
                settings.table_prefix,
            ]
            subprocess.run(  # noqa: S603 - an argument list
                [sys.executable, "-m", "delphi_jobs", *command, *self._table_flags],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        else:
            ensure_tables(client, table_specs(settings))
        try:
            yield Tables(settings, client)
        finally:
            for spec in table_specs(settings):
                client.delete_table(TableName=spec.name)


class Tables:
    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self.client = client
        self.name = settings.jobs_table

    def load(self, jobs: Sequence[dict[str, Any]], threads: int = 4) -> None:
        """BatchWriteItem from parallel threads: the fastest way to build a 100,000-job table."""

        def write(chunk: Sequence[dict[str, Any]]) -> None:
            pending: dict[str, Any] = {self.name: [{"PutRequest": {"Item": to_item(j)}} for j in chunk]}
            while pending:
                pending = self.client.batch_write_item(RequestItems=pending).get("UnprocessedItems", {})

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(write, [jobs[i : i + BATCH] for i in range(0, len(jobs), BATCH)]))

    def put(self, job: dict[str, Any]) -> None:
        """One job as a producer inserts it: a plain PutItem."""
        records.put_raw(self.client, self.name, job)

    def count(self, status: str) -> int:
        request = status_query(self.name, status, Select="COUNT")
        total = 0
        while True:
            page = self.client.query(**request)
            total += int(page["Count"])
            if "LastEvaluatedKey" not in page:
                return total
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def wait_drained(self, timeout: float, every: float = 0.25) -> float:
        """Until nothing is PENDING or PROCESSING; returns the time.time() it was seen."""
        deadline = time.monotonic() + timeout
        while self.count("PENDING") + self.count("PROCESSING"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: jobs left after {timeout:.0f}s")
            time.sleep(every)
        return time.time()

    def times(self, job_ids: Iterable[str] | None = None) -> dict[str, tuple[float | None, float | None]]:
        """job_id -> (started_at, completed_at) as unix times, from the records the poller wrote."""
        wanted = set(job_ids) if job_ids is not None else None
        request: dict[str, Any] = {
            "TableName": self.name,
            "ProjectionExpression": "job_id, started_at, completed_at",
        }
        found: dict[str, tuple[float | None, float | None]] = {}
        while True:
            page = self.client.scan(**request)
            for item in page["Items"]:
                job_id = item["job_id"]["S"]
                if wanted is None or job_id in wanted:
                    found[job_id] = (_unix(item, "started_at"), _unix(item, "completed_at"))
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def newest(self, status: str, limit: int) -> list[tuple[float | None, float | None]]:
        """(started_at, completed_at) of the ``limit`` most recently created jobs in ``status``."""
        request = status_query(
            self.name, status, ProjectionExpression="started_at, completed_at", ScanIndexForward=False
        )
        found: list[tuple[float | None, float | None]] = []
        while len(found) < limit:
            page = self.client.query(**request, Limit=limit - len(found))
            found += [(_unix(item, "started_at"), _unix(item, "completed_at")) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    def started(self, job_id: str) -> float | None:
        item = self.client.get_item(TableName=self.name, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return _unix(item.get("Item", {}), "started_at")

    def status(self, job_id: str) -> str | None:
        item = self.client.get_item(TableName=self.name, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        status = item.get("Item", {}).get("status", {}).get("S")
        return str(status) if status is not None else None


def status_query(table: str, status: str, **more: Any) -> dict[str, Any]:
    """A Query request for one status on StatusCreatedIndex."""
    return {
        "TableName": table,
        "IndexName": STATUS_CREATED_INDEX,
        "KeyConditionExpression": "#s = :s",
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": {":s": {"S": status}},
        **more,
    }


def _unix(item: dict[str, Any], name: str) -> float | None:
    moment = parse_timestamp(item.get(name, {}).get("S"), name)
    return moment.timestamp() if moment else None


def throughput(times: dict[str, tuple[float | None, float | None]]) -> float:
    """Jobs per second from the first claim to the last completion, as the records say."""
    starts = [s for s, _ in times.values() if s is not None]
    ends = [e for _, e in times.values() if e is not None]
    if len(ends) != len(times):
        raise RuntimeError(f"{len(times) - len(ends)} of {len(times)} jobs did not complete")
    return len(times) / max(1e-3, max(ends) - min(starts))


# ---- /proc --------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and of the children it has reaped (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / _TICKS  # utime stime cutime cstime


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) of a live process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ---- statistics ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def repeat(times: int, measure: Callable[[int], dict[str, float]]) -> dict[str, Any]:
    """Run ``measure(rep)`` ``times`` times; see ``medians``."""
    return medians([measure(i) for i in range(times)])


def medians(runs: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Each key's median over the runs (0 where a run lacks it), with the runs kept for the record."""
    keys = dict.fromkeys(key for run in runs for key in run)
    return {key: round(median([run.get(key, 0.0) for run in runs]), 4) for key in keys} | {"runs": list(runs)}


def r(value: float, digits: int = 2) -> float:
    return round(value, digits)


# ---- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What a reader needs to judge the numbers: the hardware, its load, the software versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal"))
    install = dynamodb_local.find_install()
    assert install is not None
    with zipfile.ZipFile(install / "DynamoDBLocal.jar") as jar:
        pom = jar.read("META-INF/maven/software/amazon/dynamodb/DynamoDBLocal/pom.properties").decode()
    version = next(line.split("=", 1)[1] for line in pom.splitlines() if line.startswith("version="))
    commit = subprocess.run(  # noqa: S603 - fixed argument list
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": r(memory / 1024 / 1024, 1),
        "python": platform.python_version(),
        "dynamodb_local": f"{version} ({install.name})",
        "load_average_start": list(os.getloadavg()),
    }


@dataclass
class Context:
    """What a benchmark gets: the server, the profile's name, a scratch folder for poller files and
    the throughput cells asked for on the command line (``--cells``; None: the profile's grid)."""

    server: Server
    profile: str
    scratch: Path
    cells: list[tuple[int, int]] | None = None
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def folder(self, name: str) -> Path:
        """A new folder for one measurement's request logs and poller output."""
        path = self.scratch / f"{next(self._counter):03d}-{name}"
        path.mkdir()
        return path
