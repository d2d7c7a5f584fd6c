"""Real servers for the tests (DESIGN 6): moto's server in process and DynamoDB Local (both tiers run
the same tests), embedded PostgreSQL. Each test gets its own table-name prefix, so tests never share
state and can run in any order."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import dynamodb_local
from delphi_jobs.devtools.fake_anthropic import FakeAnthropic
from delphi_jobs.devtools.moto_server import MotoServer
from delphi_jobs.devtools.postgres_server import EmbeddedPostgres, create_polis_schema
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import JobStore, open_store
from delphi_jobs.store.memory import MemoryJobStore
from delphi_jobs.tables import ensure_tables, table_specs

# No test may pick up real credentials or a real endpoint from the developer's environment.
for _name in (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "DYNAMODB_ENDPOINT",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "DATABASE_URL",
):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with MotoServer() as server:
        yield server.endpoint_url


def require_ddblocal() -> None:
    """Skip the test when DynamoDB Local is not installed, or fail when CI requires it."""
    reason = dynamodb_local.unavailable_reason()
    if reason:
        if os.environ.get("DELPHI_REQUIRE_DDBLOCAL"):
            pytest.fail(f"DynamoDB Local tier required but unavailable: {reason}")
        pytest.skip(f"DynamoDB Local tier: {reason}")


@pytest.fixture(scope="session")
def ddblocal_endpoint() -> Iterator[str]:
    require_ddblocal()
    with dynamodb_local.DynamoDBLocal() as server:
        yield server.endpoint_url


@pytest.fixture(params=["moto", "ddblocal"])
def dynamo_endpoint(request: pytest.FixtureRequest) -> str:
    """Both DynamoDB tiers; the DynamoDB Local one is skipped with its reason when not installed."""
    return str(request.getfixturevalue(f"{request.param}_endpoint"))


def fresh_settings(endpoint: str, **overrides: Any) -> Settings:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    return Settings(endpoint_url=endpoint, region="us-east-1", table_prefix=prefix, **overrides)


@pytest.fixture
def settings(dynamo_endpoint: str) -> Settings:
    settings = fresh_settings(dynamo_endpoint)
    ensure_tables(make_client(settings), table_specs(settings))
    return settings


@pytest.fixture
def moto_settings(moto_endpoint: str) -> Settings:
    """Fresh tables on the moto tier only, for subprocess tests that need one fast server."""
    settings = fresh_settings(moto_endpoint)
    ensure_tables(make_client(settings), table_specs(settings))
    return settings


@pytest.fixture
def client(settings: Settings) -> Any:
    return make_client(settings)


@pytest.fixture(params=["memory", "moto", "ddblocal"])
def store(request: pytest.FixtureRequest) -> JobStore:
    """The JobStore on every backend: the shared lifecycle suite holds them to one behaviour."""
    if request.param == "memory":
        return MemoryJobStore("Delphi_JobQueue")
    settings = fresh_settings(str(request.getfixturevalue(f"{request.param}_endpoint")))
    ensure_tables(make_client(settings), table_specs(settings))
    return open_store(settings)


@pytest.fixture
def queue(store: JobStore) -> JobQueue:
    return JobQueue(store)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """The loopback Anthropic fake, fresh for each test (faults and batches are per test)."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


def new_polis_database(server: EmbeddedPostgres) -> str:
    """A fresh database with the Polis schema on ``server``; returns its URL."""
    import psycopg2

    name = f"polis_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server.url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = server.url.replace("/postgres?", f"/{name}?", 1)
    conn = psycopg2.connect(url)
    create_polis_schema(conn)
    conn.close()
    return url


@pytest.fixture
def pg_url(postgres_server: EmbeddedPostgres) -> str:
    return new_polis_database(postgres_server)
