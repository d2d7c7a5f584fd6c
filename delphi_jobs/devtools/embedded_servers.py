"""Zero-setup mode: an embedded DynamoDB-protocol server (moto's server behind its global lock) and an
embedded PostgreSQL with the Polis tables, in this process, on loopback.

Embedded DynamoDB keeps its data in memory only: everything is gone when the process exits.
"""

from __future__ import annotations

import dataclasses
import os
from types import TracebackType

import psycopg2

from delphi_jobs.config import Settings
from delphi_jobs.devtools.moto_server import MotoServer
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres, create_polis_schema
from delphi_jobs.dynamo import make_client
from delphi_jobs.tables import ensure_tables, table_specs

MEMORY_ONLY_NOTE = "embedded DynamoDB keeps its data in memory only: it is gone when this process exits"


class EmbeddedServers:
    def __init__(self, settings: Settings) -> None:
        self._base = settings
        self._dynamo = MotoServer()
        self._postgres = EmbeddedPostgres()
        self.settings = settings

    def start(self) -> EmbeddedServers:
        self._dynamo.start()
        self._postgres.start()
        conn = psycopg2.connect(self._postgres.url)
        create_polis_schema(conn)
        conn.close()
        self.settings = dataclasses.replace(
            self._base, endpoint_url=self._dynamo.endpoint_url, database_url=self._postgres.url
        )
        ensure_tables(make_client(self.settings), table_specs(self.settings))
        # Children (the FULL_PIPELINE command) inherit the poller's environment: point them here too.
        os.environ["DYNAMODB_ENDPOINT"] = self._dynamo.endpoint_url
        os.environ["DATABASE_URL"] = self._postgres.url
        if self.settings.table_prefix:
            os.environ["DELPHI_TABLE_PREFIX"] = self.settings.table_prefix
        return self

    def describe(self) -> list[str]:
        return [
            f"DynamoDB (embedded, moto): {self._dynamo.endpoint_url}  ({MEMORY_ONLY_NOTE})",
            f"PostgreSQL (embedded):     {self._postgres.url}",
            f"point other commands here: DYNAMODB_ENDPOINT={self._dynamo.endpoint_url} "
            f"DATABASE_URL='{self._postgres.url}'",
        ]

    def stop(self) -> None:
        self._dynamo.stop()
        self._postgres.stop()

    def __enter__(self) -> EmbeddedServers:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
