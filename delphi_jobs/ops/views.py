"""What the operator faces show of a job, and the one conversion of results into JSON values.

Views are built from a parsed ``Job`` and a moment ``now`` (ages and leases are relative), so the CLI
table, ``--json`` and the HTTP API all say the same thing about the same record.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from boto3.dynamodb.types import Binary

from delphi_jobs.model import (
    Job,
    JobValidationError,
    decode_json_field,
    format_timestamp,
    parse_timestamp,
)

JSON_ATTRIBUTES = (
    "job_config",
    "job_results",
    "logs",
    "progress",
    "section_map",
    "batch_submission",
    "environment",
)
"""Attributes that hold a JSON document as a string; shown decoded."""


@dataclasses.dataclass(frozen=True)
class JobSummary:
    job_id: str
    job_type: str
    status: str
    conversation_id: str | None
    report_id: str | None
    priority: int
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    worker_id: str | None
    retry_count: int
    max_retries: int
    lock_expires_at: datetime | None
    error_message: str | None
    age_seconds: float | None
    """Since created_at."""


def summarize(job: Job, now: datetime) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        job_type=job.job_type,
        status=job.status,
        conversation_id=job.conversation_id,
        report_id=job.effective_report_id,
        priority=job.priority,
        created_at=job.created_at,
        updated_at=timestamp_of(job, "updated_at"),
        started_at=job.started_at,
        worker_id=job.worker_id,
        retry_count=job.retry_count,
        max_retries=job.max_retries,
        lock_expires_at=job.lock_expires_at,
        error_message=job.error_message,
        age_seconds=(now - job.created_at).total_seconds() if job.created_at else None,
    )


def timestamp_of(job: Job, name: str) -> datetime | None:
    """A timestamp attribute the Job does not parse itself; unparseable reads as absent."""
    try:
        return parse_timestamp(job.item.get(name), name)
    except JobValidationError:
        return None


def decoded_attributes(job: Job) -> dict[str, Any]:
    """Every attribute as stored, with the JSON documents decoded (a malformed one is kept as text)."""
    shown: dict[str, Any] = {}
    for name, value in sorted(job.item.items()):
        if name in JSON_ATTRIBUTES and isinstance(value, str):
            try:
                shown[name] = decode_json_field(value, name)
            except JobValidationError:
                shown[name] = value
        else:
            shown[name] = value
    return shown


def jsonable(value: Any) -> Any:
    """Results -> JSON values: dataclasses as objects, times as the Polis server writes them,
    DynamoDB numbers as ints where whole. What a hand-made record may hold and JSON cannot carry is
    shown, not refused: binary attributes as base64 text, a NaN or infinity (which Python's JSON parser
    accepts in a job's JSON fields) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Binary):
        value = value.value  # type: ignore[attr-defined]  # boto3-stubs leave out Binary.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value
