"""Schemathesis against the published ``/openapi.json`` of a running ``delphi-jobs serve`` (moto tier):
generated requests, valid and invalid, to every operation; no answer may be a server error or
contradict the schema (status codes, content types, headers, bodies), invalid input must be refused
with a 4xx and a missing token with a 401. Schemathesis's own command line runs it (its pytest plugin
does not load under this pytest).

Bounded for the suite's time: the fuzzing phase (valid and invalid input, 5 examples per operation)
and the stateful phase (along the OpenAPI links from POST /jobs) take ~15 s. The coverage phase
(boundary values of every parameter, ~500 requests whatever ``--max-examples`` says) adds ~35 s of
Schemathesis's own work and is left to a run by hand (``--phases coverage``); the boundaries it found
are regression tests in test_api.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from delphi_jobs.config import Settings
from tests.api_server import ApiServer
from tests.pollers import command_env

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SECRET = "schema-token-0123456789abcdef"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "ignored_auth",
)


def test_api_conforms_to_its_schema(moto_settings: Settings, tmp_path: Path) -> None:
    with ApiServer(moto_settings, token=f"ops:{SECRET}") as server:
        argv = [
            str(SCHEMATHESIS),
            "run",
            f"{server.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {SECRET}",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "fuzzing,stateful",
            "--max-examples",
            "5",
            "--seed",
            "13",
            "--report-dir",
            str(tmp_path),
        ]
        # The timeout allows for a loaded 2-core machine (the run takes ~15 s alone).
        done = subprocess.run(  # noqa: S603
            argv,
            env=command_env() | {"NO_COLOR": "1"},
            cwd=tmp_path,  # its cache of crashes stays out of the checkout: every run starts afresh
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert server.events("api.request"), "schemathesis sent no request"
        assert not server.events("api.internal_error"), server.output[-3000:]
