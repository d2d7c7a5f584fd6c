"""Settings from the environment where they touch compatibility with the original deployment."""

from __future__ import annotations

import pytest

from delphi_jobs.config import ConfigError, Settings

PARTS = {
    "DATABASE_HOST": "db",
    "DATABASE_USER": "polis",
    "DATABASE_PASSWORD": "p@ss",
    "DATABASE_NAME": "polis",
}


def test_database_parts_require_ssl_by_default_as_the_original() -> None:
    assert Settings.from_env(PARTS).database_url == "postgresql://polis:p%40ss@db:5432/polis?sslmode=require"
    compose = Settings.from_env({**PARTS, "DATABASE_SSL_MODE": "disable"})
    assert str(compose.database_url).endswith("?sslmode=disable")


@pytest.mark.parametrize(
    ("url", "mode", "expected"),
    [
        ("postgresql://u@h/db", "", "postgresql://u@h/db"),  # the URL as given
        ("postgresql://u@h/db", "disable", "postgresql://u@h/db?sslmode=disable"),
        (
            "postgresql://u@h/db?connect_timeout=5",
            "require",
            "postgresql://u@h/db?connect_timeout=5&sslmode=require",
        ),
        ("postgresql://u@h/db?sslmode=verify-full", "disable", "postgresql://u@h/db?sslmode=verify-full"),
        ("host=h dbname=db", "require", "host=h dbname=db sslmode=require"),
    ],
)
def test_database_url_keeps_its_parameters_and_gets_an_explicit_ssl_mode(
    url: str, mode: str, expected: str
) -> None:
    assert Settings.from_env({"DATABASE_URL": url, "DATABASE_SSL_MODE": mode}).database_url == expected


def test_fidelity_settings() -> None:
    settings = Settings.from_env(
        {
            "DELPHI_ALLOWED_MODELS": " claude-opus-4-20250514, ,claude-x ",
            "DELPHI_LEGACY_STATUSES": "true",
            "INSTANCE_SIZE": "Large",
            "DELPHI_RETRY_BASE_SECONDS": "0.5",
            "DELPHI_JOB_ID": "job-1",
        }
    )
    assert settings.allowed_models == ("claude-opus-4-20250514", "claude-x")
    assert settings.legacy_statuses and settings.instance_size == "large"
    assert (settings.retry_base_seconds, settings.pipeline_job_id) == (0.5, "job-1")
    defaults = Settings.from_env({})
    assert (defaults.allowed_models, defaults.legacy_statuses, defaults.instance_size) == (
        (),
        False,
        "default",
    )
    with pytest.raises(ConfigError, match="DELPHI_LEGACY_STATUSES"):
        Settings.from_env({"DELPHI_LEGACY_STATUSES": "maybe"})
