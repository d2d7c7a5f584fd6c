"""A stand-in for the Delphi app's run_delphi.py, run by the FULL_PIPELINE handler's original command
mapping (``python run_delphi.py --zid=Z ...`` in DELPHI_APP_PATH). Its behaviour is chosen by the zid:

1: a few lines on stdout and stderr (as Python logging writes), then the line the report client waits
   for, exit 0 | 3: exit 1 (the script's own failure) | 4: hangs (timeouts) |
5: the first run hangs until something kills it, later runs succeed.
Every run appends one JSON line (pid, cwd, argv, environment markers) to $FAKE_APP_STATE/{DELPHI_JOB_ID}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    zid = int(next(a for a in sys.argv[1:] if a.startswith("--zid=")).split("=", 1)[1])
    runs = Path(os.environ["FAKE_APP_STATE"]) / os.environ["DELPHI_JOB_ID"]
    earlier = runs.read_text().splitlines() if runs.exists() else []
    run = {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "argv": sys.argv[1:],
        "via_path": os.environ.get("VIA_PATH_SHIM") == "1",
        "report_id": os.environ.get("DELPHI_REPORT_ID"),
    }
    with runs.open("a") as sink:
        sink.write(json.dumps(run) + "\n")
    if zid == 3:
        print("Data reset failed with exit code 2. Aborting pipeline.", flush=True)
        return 1
    if zid == 4 or (zid == 5 and not earlier):
        print("working", flush=True)
        time.sleep(1000)
    print("Running PCA", flush=True)
    print("INFO:umap_narrative:computed 3 layers", file=sys.stderr, flush=True)
    print(f"Results stored in DynamoDB for conversation {zid}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
