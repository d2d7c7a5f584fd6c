"""Zero-setup mode: everything a job needs, in this process, on loopback.

An embedded DynamoDB-protocol server (moto's server behind its global lock) with the Delphi tables, an
embedded PostgreSQL with the Polis tables and a generated conversation, the loopback Anthropic fake
(unless the real API is asked for and a key is set), and the built-in pipeline as the FULL_PIPELINE
command. ``poll --embedded`` and the demo both run on it; ``export_lines`` is what another shell pastes
to point any command at it. Embedded DynamoDB keeps its data in memory only.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from contextlib import ExitStack
from types import TracebackType
from typing import Any

import psycopg2

from delphi_jobs.config import Settings
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.devtools.moto_server import MotoServer
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres, create_polis_schema
from delphi_jobs.devtools.sample_conversation import SampleConversation, generate_sample, load_sample
from delphi_jobs.dynamo import make_client
from delphi_jobs.tables import ensure_tables, table_specs

MEMORY_ONLY_NOTE = "embedded DynamoDB keeps its data in memory only: it is gone when this process exits"
FAKE_API_KEY = "demo-key-for-the-local-fake"
DEFAULT_MODEL = "claude-sonnet-4-5"
_PYTHON = shlex.quote(sys.executable)
PIPELINE_COMMAND = f"{_PYTHON} -m delphi_jobs pipeline --zid {{zid}} --rid {{report_id}} --write-math-main"
"""The built-in stand-in for run_delphi.py (see docs/pipeline.md); it writes math_main too, as there is
no Polis math worker on embedded servers."""


def _restore(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class EmbeddedServers:
    def __init__(self, settings: Settings, *, real_anthropic: bool = False) -> None:
        self._base = settings
        self._real_anthropic = real_anthropic and bool(settings.anthropic_api_key)
        self._stack = ExitStack()
        self._dynamo = MotoServer()
        self._postgres = EmbeddedPostgres()
        self.fake: FakeAnthropic | None = None
        self.settings = settings

    def start(self) -> EmbeddedServers:
        with ExitStack() as starting:  # a failed start stops what had started
            starting.enter_context(self._dynamo)
            starting.enter_context(self._postgres)
            changes: dict[str, Any] = {
                "endpoint_url": self._dynamo.endpoint_url,
                "database_url": self._postgres.url,
                "pipeline_command": self._base.pipeline_command or PIPELINE_COMMAND,
                "anthropic_model": self._base.anthropic_model or DEFAULT_MODEL,
            }
            if not self._real_anthropic:
                self.fake = starting.enter_context(FakeAnthropic(end_after_seconds=3.0))
                changes.update(anthropic_api_key=FAKE_API_KEY, anthropic_base_url=self.fake.base_url)
            self.settings = dataclasses.replace(self._base, **changes)
            conn = psycopg2.connect(self._postgres.url)
            create_polis_schema(conn)
            conn.close()
            ensure_tables(make_client(self.settings), table_specs(self.settings))
            self._stack = starting.pop_all()
        # Children (the FULL_PIPELINE command) inherit the poller's environment: point them here too,
        # until stop() puts back what was there (the demo also runs inside test processes).
        overridden = self.environment()
        previous = {name: os.environ.get(name) for name in overridden}
        os.environ.update(overridden)
        self._stack.callback(_restore, previous)
        return self

    def load_conversation(
        self, *, seed: int = 0, zid: int = 1, participants: int = 300, comments: int = 56, report_id: str
    ) -> SampleConversation:
        """A generated Polis conversation in the embedded PostgreSQL, mapped to ``report_id``."""
        sample = generate_sample(seed, zid=zid, participants=participants, comments=comments)
        conn = psycopg2.connect(str(self.settings.database_url))
        load_sample(conn, sample, report_id=report_id)
        conn.close()
        return sample

    def environment(self) -> dict[str, str]:
        """The settings as the environment names every delphi-jobs command reads (DESIGN 2.6)."""
        settings = self.settings
        env = {
            "DYNAMODB_ENDPOINT": str(settings.endpoint_url),
            "AWS_REGION": settings.region,
            "DATABASE_URL": str(settings.database_url),
            "DELPHI_PIPELINE_COMMAND": str(settings.pipeline_command),
            "ANTHROPIC_MODEL": str(settings.anthropic_model),
        }
        if settings.table_prefix:
            env["DELPHI_TABLE_PREFIX"] = settings.table_prefix
        if self.fake is not None:
            env.update(ANTHROPIC_API_KEY=FAKE_API_KEY, ANTHROPIC_BASE_URL=self.fake.base_url)
        return env

    def export_lines(self) -> list[str]:
        """A block another shell can paste (the real API key, if used, is never printed)."""
        return [f"export {name}={shlex.quote(value)}" for name, value in sorted(self.environment().items())]

    def describe(self) -> list[str]:
        anthropic = "the real API" if self.fake is None else f"loopback fake at {self.fake.base_url}"
        return [
            f"DynamoDB (embedded, moto): {self._dynamo.endpoint_url}  ({MEMORY_ONLY_NOTE})",
            f"PostgreSQL (embedded):     {self._postgres.url}",
            f"Anthropic:                 {anthropic}",
            "point other shells here with:",
            *("  " + line for line in self.export_lines()),
        ]

    def stop(self) -> None:
        """Stop every server and remove the embedded PostgreSQL's folder."""
        self._stack.close()

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
