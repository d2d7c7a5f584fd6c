"""A bare claiming worker for the race test: claims and completes jobs until the queue is empty."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from delphi_jobs.config import Settings
from delphi_jobs.queue import Claim, JobQueue
from delphi_jobs.states import Status
from delphi_jobs.store import open_store


def main(endpoint: str, prefix: str, worker_id: str, out: str, start_flag: str) -> None:
    queue = JobQueue(open_store(Settings(endpoint_url=endpoint, table_prefix=prefix)), page_size=10)
    while not Path(start_flag).exists():
        time.sleep(0.01)
    idle = 0
    with open(out, "w") as sink:
        while idle < 3:
            candidates = queue.find_candidates()
            idle = idle + 1 if not candidates else 0
            for job in candidates:
                claim = queue.claim(job, worker_id, 60)
                if not isinstance(claim, Claim):
                    continue
                print(job.job_id, file=sink, flush=True)
                assert (
                    queue.finish(claim, Status.COMPLETED, results={"worker": worker_id}) == Status.COMPLETED
                )
                break


if __name__ == "__main__":
    main(*sys.argv[1:])
