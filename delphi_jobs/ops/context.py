"""What every operator action works on: the settings, one DynamoDB client, the queue and report stores.

Operator tools talk to DynamoDB with short timeouts and few retries, so that a command against a
server that is down fails in a few seconds with one line, instead of retrying for a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import utcnow
from delphi_jobs.queue import JobQueue
from delphi_jobs.reports import NarrativeReportStore
from delphi_jobs.store import DynamoJobStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ADMIN_ATTEMPTS = 2
ADMIN_CONNECT_TIMEOUT = 2.0
ADMIN_READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class OpsContext:
    settings: Settings
    client: DynamoDBClient
    """For what is not a job: the report table, table verification."""
    queue: JobQueue
    reports: NarrativeReportStore
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def connect(cls, settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> OpsContext:
        client = admin_client(settings)
        return cls(
            settings=settings,
            client=client,
            queue=JobQueue.for_settings(DynamoJobStore(client, settings.jobs_table), settings, clock=clock),
            reports=NarrativeReportStore(client, settings.reports_table),
            clock=clock,
        )


def admin_client(settings: Settings) -> DynamoDBClient:
    """A client whose calls give up within seconds (an operator is waiting at a terminal)."""
    return make_client(
        settings,
        max_attempts=ADMIN_ATTEMPTS,
        connect_timeout=ADMIN_CONNECT_TIMEOUT,
        read_timeout=ADMIN_READ_TIMEOUT,
    )
