"""The benchmarks' in-process no-op job type, loaded into a real poller by
``DELPHI_EXTRA_HANDLERS=bench.noop:NoopHandler``: a job that costs only the poller's own work (poll,
claim, lease, outcome write), so what is measured is the daemon, not a child process."""

from __future__ import annotations

from delphi_jobs.handlers.base import Completed, JobContext, Outcome
from delphi_jobs.model import Job

JOB_TYPE = "BENCH_NOOP"
SPEC = "bench.noop:NoopHandler"


class NoopHandler:
    job_type = JOB_TYPE
    state_type = None

    def validate(self, job: Job) -> list[str]:
        return []

    def run(self, ctx: JobContext) -> Outcome:
        return Completed()
