"""What a poller loads at start (issue 12: memory). The Anthropic SDK (with pydantic and httpx, about
50 MB) is loaded by the first narrative job, not by a poller that merely serves narrative types."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import sys
from delphi_jobs.config import Settings
from delphi_jobs.handlers import default_registry
registry = default_registry(Settings.from_env())
print(",".join(registry.served))
print(",".join(sorted({"anthropic", "pydantic", "httpx"} & set(sys.modules))) or "-")
"""


def test_serving_narrative_types_does_not_load_the_sdk() -> None:
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "DATABASE_URL": "postgresql://user:secret@127.0.0.1:1/polis",
        "DYNAMODB_ENDPOINT": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
    }
    out = subprocess.run(  # noqa: S603 - an argument list
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    served, loaded = out.stdout.split()
    assert served == "AWAITING_NARRATIVE_BATCH,CREATE_NARRATIVE_BATCH,FULL_PIPELINE"
    assert loaded == "-", f"loaded at start: {loaded}"
