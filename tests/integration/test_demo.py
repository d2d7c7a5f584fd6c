"""`delphi-jobs demo` end to end (a smaller conversation): exit code AND what landed in the stores."""

from __future__ import annotations

import io
import json
import re

from delphi_jobs.config import Settings
from delphi_jobs.devtools.demo import REPORT_ID, DemoOptions, run_demo
from tests.narrative_env import GLOBALS


def test_demo_runs_everything_and_stores_the_report() -> None:
    out = io.StringIO()
    result = run_demo(DemoOptions(participants=120, comments=30, seed=3, timeout=100), Settings(), out)
    text = out.getvalue()
    assert result.exit_code == 0, text
    assert [j.job_type for j in result.jobs] == [
        "FULL_PIPELINE",
        "CREATE_NARRATIVE_BATCH",
        "AWAITING_NARRATIVE_BATCH",
    ]
    assert all(j.status == "COMPLETED" for j in result.jobs)
    parent, checker = result.jobs[1], result.jobs[2]
    assert checker.batch_job_id == parent.job_id

    assert set(result.sections) >= GLOBALS
    topics = set(result.sections) - GLOBALS
    # keyed by the pipeline job's id, as the real pipeline's: the names the report client rebuilds
    assert topics and all(name.startswith(f"{result.jobs[0].job_id}_") for name in topics)
    for item in result.sections.values():
        assert item["job_id"] == parent.job_id and item["report_id"] == REPORT_ID
        assert json.loads(item["report_data"])["paragraphs"]

    groups = re.search(r"Opinion groups found: (\d+)", text)
    assert groups and int(groups.group(1)) >= 2, "the built-in pipeline found the planted groups"
    assert "in memory only" in text
    for name in result.sections:
        assert name in text
    assert "Traceback" not in text
