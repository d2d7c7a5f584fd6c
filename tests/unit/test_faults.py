"""The crash points of delphi_jobs/faults.py: armed only by DELPHI_FAULT, a misspelt point is a
configuration error, and an armed point kills its process with SIGKILL the n-th time it is reached."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from delphi_jobs import faults
from delphi_jobs.config import ConfigError, Settings


def test_specs_name_points_and_counts() -> None:
    assert faults.parse("after_claim:3, heartbeat") == {"after_claim": 3, "heartbeat": 1}
    assert faults.parse("") == {}
    for bad in ("after_claim:0", "after_claim:x", "after_clam:1"):
        with pytest.raises(faults.FaultSpecError):
            faults.parse(bad)


def test_settings_reject_an_unknown_point() -> None:
    assert Settings.from_env({"DELPHI_FAULT": "shutdown:2"}).fault == "shutdown:2"
    assert Settings.from_env({}).fault is None
    with pytest.raises(ConfigError, match="DELPHI_FAULT: unknown fault point 'sutdown'"):
        Settings.from_env({"DELPHI_FAULT": "sutdown:2"})


def test_an_armed_point_kills_on_its_nth_visit() -> None:
    program = (
        "from delphi_jobs import faults\n"
        "faults.point('heartbeat')\n"  # not armed yet: nothing happens
        "faults.arm('heartbeat:2')\n"
        "faults.point('after_claim'); faults.point('heartbeat'); print('first', flush=True)\n"
        "faults.point('heartbeat'); print('second', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)  # noqa: S603
    assert done.returncode == -signal.SIGKILL
    assert "first" in done.stdout and "second" not in done.stdout
    assert "fault point reached: SIGKILL" in done.stdout and "heartbeat" in done.stdout
