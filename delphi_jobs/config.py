"""Settings: one frozen object built from flags and the environment (DESIGN 2.6).

Everything that reads an environment variable does it here, so the rest of the code takes a
``Settings`` and tests can build one without touching ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit

from delphi_jobs import faults, redact

JOBS_TABLE = "Delphi_JobQueue"
REPORTS_TABLE = "Delphi_NarrativeReports"
CLUSTER_ASSIGNMENTS_TABLE = "Delphi_CommentHierarchicalClusterAssignments"
TOPIC_NAMES_TABLE = "Delphi_CommentClustersLLMTopicNames"
STRUCTURE_KEYWORDS_TABLE = "Delphi_CommentClustersStructureKeywords"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE_WORDS = {"1", "true", "yes", "on"}
CONTAINER_STOP_TIMEOUT = 10.0
"""What ``docker stop`` and ``podman stop`` wait between SIGTERM and SIGKILL unless told otherwise."""
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_KILL_GRACE = 3.0
HAND_BACK_BUDGET = 2.0
"""Left of a stop timeout for the hand-back writes and the exit. The defaults fit a container engine's
default stop timeout (5 + 3 + 2 = 10 s, issue 11); raise the graces only with the stop timeout."""


DEFAULT_PAUSE_TIMEOUT = 24 * 3600.0


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the setting."""


MIN_TOKEN_LENGTH = 16
"""An API token shorter than this is refused: guessable secrets are worse than none, which at least
keep the API on loopback."""


@dataclass(frozen=True)
class ApiToken:
    """A bearer token of the HTTP API and the label that names its holder in job histories."""

    label: str
    secret: str = field(repr=False)


def parse_api_tokens(raw: str) -> tuple[ApiToken, ...]:
    """``DELPHI_API_TOKEN``: ``SECRET`` or ``LABEL:SECRET``, several separated by commas (one per
    operator, so that each one's actions carry their own label). Never echoes a secret in an error."""
    tokens: list[ApiToken] = []
    for number, part in enumerate((p.strip() for p in raw.split(",") if p.strip()), start=1):
        label, colon, secret = part.partition(":")
        if not colon:
            label, secret = "api", part
        label = label.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", label):
            raise ConfigError(
                f"DELPHI_API_TOKEN: token {number}'s label must be 1-64 letters, digits or _.@- characters"
            )
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"DELPHI_API_TOKEN: token {number} ({label}) is shorter than {MIN_TOKEN_LENGTH} characters"
            )
        tokens.append(ApiToken(label, secret))
    return tuple(tokens)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _comma_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list, blanks and repeats dropped."""
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def parse_names(raw: str) -> tuple[str, ...] | None:
    """Job type names (``FULL_PIPELINE,AWAITING_NARRATIVE_BATCH``); empty means not given."""
    return tuple(dict.fromkeys(name.upper() for name in _comma_list(raw))) or None


_FALSE_WORDS = {"", "0", "false", "no", "off"}


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in _TRUE_WORDS | _FALSE_WORDS:
        raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")
    return raw in _TRUE_WORDS


def _database_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_URL wins; otherwise compose one from the DATABASE_* parts the deployment sets.

    The original Delphi code always connected with ``sslmode=DATABASE_SSL_MODE`` (default ``require``).
    Built from parts, so do we; a DATABASE_URL keeps its own parameters and gets ``sslmode`` only when
    DATABASE_SSL_MODE is set and the URL names none (docs/compatibility.md)."""
    ssl_mode = env.get("DATABASE_SSL_MODE", "").strip()
    url = env.get("DATABASE_URL", "").strip()
    if url:
        if not ssl_mode or "sslmode" in url:
            return url
        if not url.startswith(("postgresql://", "postgres://")):
            return f"{url} sslmode={ssl_mode}"  # a libpq key=value string
        return url + ("&" if urlsplit(url).query else "?") + f"sslmode={quote(ssl_mode, safe='')}"
    host = env.get("DATABASE_HOST", "").strip()
    if not host:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address (::1) must be bracketed inside a URL
    user = quote(env.get("DATABASE_USER", "postgres"), safe="")
    password = env.get("DATABASE_PASSWORD", "")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    port = env.get("DATABASE_PORT", "5432").strip() or "5432"
    name = env.get("DATABASE_NAME", "polis").strip() or "polis"
    return f"postgresql://{auth}@{host}:{port}/{name}?sslmode={quote(ssl_mode or 'require', safe='')}"


@dataclass(frozen=True)
class Settings:
    endpoint_url: str | None = None
    region: str = "us-east-1"
    table_prefix: str = ""
    poll_interval: float = 2.0
    max_workers: int = 1
    log_level: str = "INFO"
    log_format: str = "auto"
    lease_seconds: float = 60.0
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE
    kill_grace_seconds: float = DEFAULT_KILL_GRACE
    app_path: str = "/app"
    pipeline_command: str | None = None
    database_url: str | None = field(default=None, repr=False)
    math_env: str = "prod"
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_model: str | None = None
    anthropic_base_url: str | None = None
    batch_recheck_seconds: float = 60.0
    job_types: tuple[str, ...] | None = None
    """The job types this poller serves; None: every type whose requirements are met."""
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    metrics_sample_seconds: float = 30.0
    health_stale_seconds: float = 60.0
    pause_timeout_seconds: float = DEFAULT_PAUSE_TIMEOUT
    """A job PAUSED longer than this is cancelled by whichever poller notices first."""
    create_tables: bool = False
    """``poll`` creates (or verifies) the tables before it starts: a fresh container's first run."""
    allowed_models: tuple[str, ...] = ()
    """Models a narrative job may ask for; any other wish runs on ANTHROPIC_MODEL (the operator pays)."""
    legacy_statuses: bool = False
    """Write only the original five statuses: a cancel becomes FAILED with a marker, pausing is refused
    (for Polis readers that treat any other status as running for ever)."""
    instance_size: str = "default"
    """``large`` takes only conversations with more than 5,000 comments; any other class takes all."""
    retry_base_seconds: float = 30.0
    """First backoff before a job runs again after a retryable failure or a lost worker (doubles)."""
    pipeline_job_id: str | None = None
    """DELPHI_JOB_ID: set by the poller in a FULL_PIPELINE child's environment (the stand-in pipeline
    names its topic rows with it)."""
    request_log: str | None = None
    """Append every DynamoDB call to this file (``requestlog``), for the benchmarks."""
    extra_handlers: tuple[str, ...] = ()
    """``module:factory`` specs of handlers for job types beyond the built-in ones (benchmarks, tests)."""
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    """Bearer tokens of ``serve``; none: no token asked, and only a loopback address may be bound."""
    api_max_body_bytes: int = 65536
    fault: str | None = None
    """``DELPHI_FAULT``: crash points armed for the chaos tests (faults.py); never set in production."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); non-None overrides (flags) win."""
        env = os.environ if env is None else env
        endpoint = env.get("DYNAMODB_ENDPOINT", "").strip() or None
        settings = cls(
            endpoint_url=endpoint,
            region=env.get("AWS_REGION", "").strip() or "us-east-1",
            table_prefix=env.get("DELPHI_TABLE_PREFIX", ""),
            poll_interval=_float(env, "POLL_INTERVAL", 2.0),
            max_workers=_int(env, "MAX_WORKERS", 1),
            log_level=(env.get("LOG_LEVEL", "").strip() or "INFO").upper(),
            log_format=env.get("DELPHI_LOG_FORMAT", "").strip() or "auto",
            lease_seconds=_float(env, "DELPHI_LEASE_SECONDS", 60.0),
            shutdown_grace_seconds=_float(env, "DELPHI_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE),
            kill_grace_seconds=_float(env, "DELPHI_KILL_GRACE_SECONDS", DEFAULT_KILL_GRACE),
            app_path=env.get("DELPHI_APP_PATH", "").strip() or "/app",
            pipeline_command=env.get("DELPHI_PIPELINE_COMMAND", "").strip() or None,
            database_url=_database_url(env),
            math_env=env.get("MATH_ENV", "").strip() or "prod",
            anthropic_api_key=env.get("ANTHROPIC_API_KEY", "").strip() or None,
            anthropic_model=env.get("ANTHROPIC_MODEL", "").strip() or None,
            anthropic_base_url=env.get("ANTHROPIC_BASE_URL", "").strip() or None,
            batch_recheck_seconds=_float(env, "DELPHI_BATCH_RECHECK_SECONDS", 60.0),
            job_types=parse_names(env.get("DELPHI_JOB_TYPES", "")),
            metrics_port=_int(env, "DELPHI_METRICS_PORT", 0) or None,
            metrics_host=env.get("DELPHI_METRICS_HOST", "").strip() or "0.0.0.0",
            metrics_sample_seconds=_float(env, "DELPHI_METRICS_SAMPLE_SECONDS", 30.0),
            health_stale_seconds=_float(env, "DELPHI_HEALTH_STALE_SECONDS", 60.0),
            pause_timeout_seconds=_float(env, "DELPHI_PAUSE_TIMEOUT", DEFAULT_PAUSE_TIMEOUT),
            create_tables=env.get("DELPHI_CREATE_TABLES", "").strip().lower() in _TRUE_WORDS,
            allowed_models=_comma_list(env.get("DELPHI_ALLOWED_MODELS", "")),
            legacy_statuses=_bool(env, "DELPHI_LEGACY_STATUSES"),
            instance_size=env.get("INSTANCE_SIZE", "").strip().lower() or "default",
            retry_base_seconds=_float(env, "DELPHI_RETRY_BASE_SECONDS", 30.0),
            pipeline_job_id=env.get("DELPHI_JOB_ID", "").strip() or None,
            request_log=env.get("DELPHI_REQUEST_LOG", "").strip() or None,
            extra_handlers=_comma_list(env.get("DELPHI_EXTRA_HANDLERS", "")),
            api_host=env.get("DELPHI_API_HOST", "").strip() or "127.0.0.1",
            api_port=_int(env, "DELPHI_API_PORT", 8080),
            api_tokens=parse_api_tokens(env.get("DELPHI_API_TOKEN", "")),
            api_max_body_bytes=_int(env, "DELPHI_API_MAX_BODY_BYTES", 65536),
            fault=env.get("DELPHI_FAULT", "").strip() or None,
        )
        settings = settings.with_overrides(**overrides)
        settings.validate()
        redact.remember_settings(settings)  # from here on no error message can leak them
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        """Apply flag values; None means the flag was not given. An empty endpoint means real AWS."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if given.get("endpoint_url") == "":
            given["endpoint_url"] = None
        return replace(self, **given) if given else self

    def validate(self) -> None:
        if self.poll_interval < 0:
            raise ConfigError(f"poll interval must be >= 0, got {self.poll_interval}")
        if self.max_workers < 1:
            raise ConfigError(f"max workers must be >= 1, got {self.max_workers}")
        if self.lease_seconds <= 0:
            raise ConfigError(f"lease seconds must be > 0, got {self.lease_seconds}")
        if self.retry_base_seconds < 0:
            raise ConfigError(f"retry base seconds must be >= 0, got {self.retry_base_seconds}")
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError(f"log format must be auto, json or console, got {self.log_format!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics port must be 0..65535, got {self.metrics_port}")
        if not 0 <= self.api_port <= 65535:
            raise ConfigError(f"API port must be 0..65535, got {self.api_port}")
        if self.api_max_body_bytes < 1024:
            raise ConfigError(f"API body limit must be at least 1024 bytes, got {self.api_max_body_bytes}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.endpoint_url is not None:
            parts = urlsplit(self.endpoint_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"DynamoDB endpoint must be a URL like http://localhost:8000, got {self.endpoint_url!r}"
                )
        if self.fault:
            try:
                faults.parse(self.fault)
            except faults.FaultSpecError as exc:
                raise ConfigError(f"DELPHI_FAULT: {exc}") from None

    @property
    def is_local_endpoint(self) -> bool:
        return self.endpoint_url is not None

    @property
    def jobs_table(self) -> str:
        return self.table_prefix + JOBS_TABLE

    @property
    def reports_table(self) -> str:
        return self.table_prefix + REPORTS_TABLE

    @property
    def cluster_assignments_table(self) -> str:
        return self.table_prefix + CLUSTER_ASSIGNMENTS_TABLE

    @property
    def topic_names_table(self) -> str:
        return self.table_prefix + TOPIC_NAMES_TABLE

    @property
    def structure_keywords_table(self) -> str:
        return self.table_prefix + STRUCTURE_KEYWORDS_TABLE
