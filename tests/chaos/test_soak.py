"""Soak with chaos, the CI profile (tests/chaos/soak.py; the full profile is a command,
docs/reliability.md#soak-with-chaos)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from tests.chaos.soak import CI, MODEL, PIPELINE_JOB, REPORT, ZID, Soak
from tests.narrative_env import narrative_fixtures

pytestmark = pytest.mark.chaos


analysed_db, env = narrative_fixtures(ZID, REPORT, model=MODEL, pipeline_job=PIPELINE_JOB, tables="ddb")


def test_soak_with_chaos(env: Settings, fake: FakeAnthropic, tmp_path: Path) -> None:
    fake.end_after_seconds = 1.0  # checkers look at least twice
    settings = dataclasses.replace(env, batch_recheck_seconds=0.5)
    report = Soak(settings, tmp_path, CI, fake).run()
    print(json.dumps(asdict(report), indent=2))  # the numbers, for -s and for docs/reliability.md
    assert report.problems == []
    assert report.kills >= 3, "the chaos killed working pollers"
    assert report.jobs_total >= CI.jobs
    assert report.extra_side_effects == report.extra_side_effects_by_killed_pollers
