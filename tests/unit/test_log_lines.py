"""Log lines stay whole when worker threads print job lines while others log JSON to the same stdout
(a collector parses every line; a job line inside a JSON line broke both)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import threading
from delphi_jobs.logs import configure, get_logger, print_line
configure("INFO", "json")
log = get_logger(component="probe")
def events():
    for i in range(3000):
        log.info("event", n=i, text="x" * 200)
def lines():
    for i in range(3000):
        print_line(f"[DELPHI JOB deadbeef] INFO: line {i} " + "y" * 200)
threads = [threading.Thread(target=events), threading.Thread(target=lines), threading.Thread(target=events)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_json_events_and_job_lines_never_interleave() -> None:
    out = subprocess.run(  # noqa: S603 - an argument list
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    broken = []
    for line in out:
        if line.startswith("[DELPHI JOB deadbeef] INFO: line "):
            continue
        try:
            json.loads(line)
        except ValueError:
            broken.append(line[:120])
    assert len(out) == 9000 and not broken, broken[:3]
