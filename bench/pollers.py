"""Real pollers as subprocesses (``python -m delphi_jobs poll``, the same entry point as the
``delphi-jobs`` command), observed only from outside: their DynamoDB calls through
``DELPHI_REQUEST_LOG``, their CPU and memory through /proc, their work through the job records.

Each poller serves the in-process no-op job type (``DELPHI_EXTRA_HANDLERS``) and runs FULL_PIPELINE
jobs as ``/bin/true`` (``DELPHI_PIPELINE_COMMAND``), so one set of pollers serves both modes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.harness import REPO, Tables, cpu_seconds, rss_mb
from bench.noop import SPEC as NOOP_SPEC
from delphi_jobs import requestlog
from delphi_jobs.childguard import descendants


class Poller:
    def __init__(self, tables: Tables, folder: Path, index: int, *flags: str) -> None:
        self.calls_path = folder / f"poller-{index}.calls"
        self.output = folder / f"poller-{index}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DELPHI_", "DYNAMODB_"))}
        env.update(
            {
                "DELPHI_EXTRA_HANDLERS": NOOP_SPEC,
                "DELPHI_REQUEST_LOG": str(self.calls_path),
                "DELPHI_PIPELINE_COMMAND": "/bin/true",
                "PYTHONPATH": str(REPO),  # where bench.noop is imported from
            }
        )
        settings = tables.settings
        argv = [
            sys.executable,
            "-m",
            "delphi_jobs",
            "poll",
            "--endpoint-url",
            str(settings.endpoint_url),
            "--table-prefix",
            settings.table_prefix,
            "--log-format",
            "json",
            *flags,
        ]
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(  # noqa: S603 - an argument list
                argv, env=env, stdout=sink, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def calls(self) -> list[tuple[float, str]]:
        return requestlog.read(str(self.calls_path)) if self.calls_path.exists() else []

    def cpu(self) -> float:
        """The poller's CPU with its reaped children's and that of the processes still below it: the
        child guard lives as long as the poller, so its CPU (and that of the commands it reaped) is
        never in the poller's own account."""
        return cpu_seconds(self.pid) + sum(_below(self.pid, cpu_seconds))

    def rss(self) -> float:
        return rss_mb(self.pid)

    def children_rss(self) -> float:
        """VmRSS of every live process below the poller: its child guard once a FULL_PIPELINE job ran
        (a long-lived part of the poller since issue 12), and any command still running."""
        return sum(_below(self.pid, rss_mb))

    def wait(self, timeout: float) -> None:
        """Until the poller exits on its own (--max-jobs, --exit-when-idle); it must exit 0."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise TimeoutError(f"poller did not exit in {timeout:.0f}s; see {self.output}") from None
        if code != 0:
            raise RuntimeError(f"poller exited {code}: {self.output.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM, the way operators stop it; a poller that ignores it is killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _below(pid: int, measure: Callable[[int], float]) -> list[float]:
    """``measure`` of every live process below ``pid``; one that ends meanwhile (a job's command)
    is left out."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError, RuntimeError):
            found.append(measure(child))
    return found


class Fleet:
    """``count`` pollers with the same flags, stopped together."""

    def __init__(self, tables: Tables, folder: Path, count: int, *flags: str) -> None:
        self.pollers = [Poller(tables, folder, i, *flags) for i in range(count)]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        for poller in self.pollers:
            poller.stop()

    def wait_polling(self) -> None:
        """Until every poller has made a DynamoDB call: start-up (imports) is over. Eight pollers
        starting at once on a loaded 2-core machine can take over a minute."""
        deadline = time.monotonic() + 60 + 15 * len(self.pollers)
        while not all(p.calls() for p in self.pollers):
            for poller in self.pollers:
                if poller.process.poll() is not None:
                    raise RuntimeError(f"poller exited early: {poller.output.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.pollers)} pollers did not all start polling")
            time.sleep(0.05)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.pollers)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the idle pollers while a baseline runs beside them, so they take no CPU from it."""
        for poller in self.pollers:
            poller.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for poller in self.pollers:
                poller.process.send_signal(signal.SIGCONT)

    def calls(self) -> list[tuple[float, str]]:
        return sorted(call for p in self.pollers for call in p.calls())


def flags(interval: float, workers: int, *more: str) -> tuple[str, ...]:
    return ("--interval", str(interval), "--max-workers", str(workers), *more)


def operations(
    calls: Sequence[tuple[float, str]], start: float = 0.0, end: float = float("inf")
) -> Counter[str]:
    """How many calls of each operation were made in [start, end)."""
    return Counter(op for t, op in calls if start <= t < end)


def per_job(counts: Counter[str], jobs: int) -> dict[str, float]:
    """Requests per job, in total and per operation (keys ``op:Query`` ...)."""
    return {"requests_per_job": sum(counts.values()) / jobs} | {
        f"op:{op}": n / jobs for op, n in sorted(counts.items())
    }


def polls(calls: Sequence[tuple[float, str]], until: float, gap: float) -> int:
    """Polls of a one-worker poller up to ``until``: runs of Query calls, split by any other call or
    by a pause longer than ``gap`` (the poll interval's sleep). Works whatever a poll is made of."""
    count = 0
    previous: tuple[float, str] | None = None
    for moment, op in calls:
        if moment > until:
            break
        if op == "Query" and (previous is None or previous[1] != "Query" or moment - previous[0] > gap):
            count += 1
        previous = (moment, op)
    return count
