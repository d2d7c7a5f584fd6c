"""Connections to the Polis PostgreSQL database (read only for the daemon, DESIGN 2.5)."""

from __future__ import annotations

from typing import Any

import psycopg2

from delphi_jobs.config import Settings


class DatabaseNotConfigured(RuntimeError):
    """Neither DATABASE_URL nor DATABASE_HOST is set."""


def connect(settings: Settings, *, connect_timeout: int = 10) -> Any:
    """Open a psycopg2 connection; sslmode comes from the URL (DATABASE_SSL_MODE builds it in)."""
    if not settings.database_url:
        raise DatabaseNotConfigured("no database configured: set DATABASE_URL or DATABASE_HOST")
    return psycopg2.connect(settings.database_url, connect_timeout=connect_timeout)
