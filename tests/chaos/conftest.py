"""Fixtures of the chaos tests: DynamoDB Local tables whose every write is recorded."""

from __future__ import annotations

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.tables import ensure_tables, table_specs
from tests.chaos.ledger import record_history
from tests.conftest import fresh_settings


@pytest.fixture
def ddb(ddblocal_endpoint: str) -> Settings:
    """Fresh tables on DynamoDB Local whose every write is recorded (tests/chaos/ledger.py)."""
    settings = fresh_settings(ddblocal_endpoint)
    ensure_tables(make_client(settings), table_specs(settings))
    record_history(settings)
    return settings
