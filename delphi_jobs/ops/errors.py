"""Failures an operator can act on, and the translation of DynamoDB's errors into them.

Every face maps ``code`` to its own signal: the CLI to an exit code, the HTTP API to a status and the
``{"error": {"code", "message", "hint", "retryable"}}`` envelope. Messages are one line.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from delphi_jobs.config import Settings
from delphi_jobs.dynamo import error_code
from delphi_jobs.states import operator_actions
from delphi_jobs.store import StoreError, StoreUnavailable

_RETRYABLE_CODES = {
    "InternalServerError",
    "ServiceUnavailable",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
}


class OpsError(Exception):
    """An action could not be done; ``code`` says which kind of failure, ``hint`` what to do."""

    code = "error"
    retryable = False

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotFound(OpsError):
    code = "not_found"


class Refused(OpsError):
    """The state machine does not allow the action now; says the job's state and what is allowed."""

    code = "refused"

    def __init__(self, message: str, *, status: str, allowed: tuple[str, ...], hint: str | None = None):
        super().__init__(message, hint)
        self.status = status
        self.allowed = allowed

    @classmethod
    def in_state(
        cls, message: str, status: str, hint: str | None = None, *, refused: str | None = None
    ) -> Refused:
        """Refused for a job in ``status``: the allowed actions come from the state table, less the
        ``refused`` one (the table allows pausing a PENDING job; DELPHI_LEGACY_STATUSES does not)."""
        allowed = tuple(name for name in operator_actions(status) if name != refused)
        default = f"allowed now: {', '.join(allowed)}" if allowed else "nothing can be done to it now"
        return cls(message, status=status, allowed=allowed, hint=hint or default)


class Invalid(OpsError):
    """Input the action cannot use; the message names the field."""

    code = "invalid"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unavailable(OpsError):
    """DynamoDB could not be reached or is overloaded: the same request may work later."""

    code = "unavailable"
    retryable = True


class Busy(OpsError):
    """The job kept changing under the action (other writers won each time): try again."""

    code = "busy"
    retryable = True


class TableMissing(OpsError):
    code = "table_missing"


class Backend(OpsError):
    """DynamoDB refused the request for a reason no retry fixes (credentials, permissions)."""

    code = "dynamodb"


def where(settings: Settings) -> str:
    return settings.endpoint_url or f"AWS DynamoDB in {settings.region}"


BackendFailure = BotoCoreError | ClientError | StoreError
"""What reaching DynamoDB can raise: botocore's errors, or the job store's mapping of them."""


def translate(exc: BackendFailure, settings: Settings, client: Any = None) -> OpsError:
    """The OpsError for a failure to reach or use DynamoDB; ``client`` serves to name a missing table."""
    if isinstance(exc, StoreError):
        # The store maps botocore's errors; its cause still says what happened on the wire.
        cause = exc.__cause__
        if isinstance(cause, BotoCoreError | ClientError):
            return translate(cause, settings, client)
        if isinstance(exc, StoreUnavailable):
            return Unavailable(f"DynamoDB at {where(settings)}: {exc}")
        return Backend(f"DynamoDB at {where(settings)} refused the request: {exc}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
        return Unavailable(
            f"cannot reach DynamoDB at {where(settings)}",
            hint="is it running? check --endpoint-url / DYNAMODB_ENDPOINT",
        )
    if isinstance(exc, ReadTimeoutError):
        return Unavailable(f"DynamoDB at {where(settings)} did not answer in time")
    if isinstance(exc, NoCredentialsError):
        return Backend(
            "no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE (local endpoints need none)",
        )
    if isinstance(exc, ClientError):
        code = error_code(exc) or "unknown"
        if code == "ResourceNotFoundException":
            missing = _missing_tables(settings, client)
            if missing:
                what = f"table{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                what += f" {'do' if len(missing) > 1 else 'does'} not exist"
            else:
                what = f"a table or index of {settings.jobs_table} does not exist"
            return TableMissing(
                f"{what} at {where(settings)}",
                hint="run `delphi-jobs create-tables` with the same --endpoint-url and --table-prefix",
            )
        if code in _RETRYABLE_CODES:
            return Unavailable(f"DynamoDB at {where(settings)} is overloaded or failing ({code})")
        return Backend(f"DynamoDB at {where(settings)} refused the request: {code}")
    return Unavailable(f"DynamoDB at {where(settings)}: {exc}")


def _missing_tables(settings: Settings, client: Any) -> list[str]:
    """Which of the tables the operator tools use are absent (one ListTables; empty if that fails)."""
    if client is None:
        return []
    try:
        present: set[str] = set()
        for page in client.get_paginator("list_tables").paginate():
            present.update(page.get("TableNames", []))
    except (BotoCoreError, ClientError):
        return []
    return [name for name in (settings.jobs_table, settings.reports_table) if name not in present]
