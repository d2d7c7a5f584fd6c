"""New job records in the Polis server's own shape, attribute for attribute: the one definition of it.

``delphi-jobs submit`` (and the HTTP API) write these, so a job an operator submits is exactly what the
server would have written; the tests and the demo insert the same records with a plain ``PutItem``,
the way the server does, so what the daemon is tested on is what production hands it. The shapes were
read from the Polis server's ``jobs.ts`` (FULL_PIPELINE; ``edge`` and the versions with the admission
guard) and ``batchReports.ts`` (CREATE_NARRATIVE_BATCH); docs/contract.md lists them. JSON attributes
are ``JSON.stringify``'s: compact, keys in the server's order.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from delphi_jobs.model import (
    CREATE_NARRATIVE_BATCH,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PRIORITY,
    FULL_PIPELINE,
    UNCLAIMED_WORKER,
    encode_json,
    format_timestamp,
    utcnow,
)

SERVER_PIPELINE_TIMEOUT = 14400
"""What the server writes as ``timeout_seconds`` on FULL_PIPELINE jobs (4 h)."""
NARRATIVE_STAGE = "CREATE_NARRATIVE_BATCH_CONFIG_STAGE"
UI_MODEL = "claude-opus-4-20250514"
"""The model the report client sends in both requests (nothing in the original used it)."""
SERVER_DEFAULT_MODEL = "claude-3-7-sonnet-20250219"
"""jobs.ts's REPORT model when the request names none."""


def _new_server_job(job_id: str, now: str) -> dict[str, Any]:
    """The fields both server routes write for a new, unclaimed job."""
    return {
        "job_id": job_id,
        "status": "PENDING",
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "started_at": "",
        "completed_at": "",
        "worker_id": UNCLAIMED_WORKER,
    }


def full_pipeline(
    zid: int | str,
    report_id: str | None = None,
    *,
    priority: int = DEFAULT_PRIORITY,
    timeout_seconds: int = SERVER_PIPELINE_TIMEOUT,
    settings: Mapping[str, Any] | None = None,
    created_by: str = "api",
    now: datetime | None = None,
    model: str = UI_MODEL,
    include_moderation: bool = False,
    max_votes: int | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """``POST /api/v3/delphi/jobs`` on ``edge``: the PCA stage first (``max_votes`` and ``batch_size``
    only when given), the REPORT stage's model (unused by anything), ``include_moderation`` at the top
    level, where ``settings`` go too. The report client always sends ``report_id``; without one the
    server's put fails, so none is written (a submit without a report)."""
    pca: dict[str, Any] = {}
    if max_votes:
        pca["max_votes"] = max_votes
    if batch_size:
        pca["batch_size"] = batch_size
    config = {
        "stages": [
            {"stage": "PCA", "config": pca},
            {"stage": "UMAP", "config": {"n_neighbors": 15, "min_dist": 0.1}},
            {"stage": "REPORT", "config": {"model": model, "include_topics": True}},
        ],
        "visualizations": ["basic", "enhanced", "multilayer"],
        "include_moderation": include_moderation,
        **(settings or {}),
    }
    return _pipeline_record(zid, report_id, config, priority, timeout_seconds, created_by, now)


def full_pipeline_guarded(
    zid: int | str,
    report_id: str | None = None,
    *,
    include_moderation: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The same route in the servers with the admission guard: ``job_config`` is only
    ``{"include_moderation": b}`` (run_delphi.py reads nothing else); every other attribute as on edge."""
    config = {"include_moderation": include_moderation}
    return _pipeline_record(zid, report_id, config, DEFAULT_PRIORITY, SERVER_PIPELINE_TIMEOUT, "api", now)


def _pipeline_record(
    zid: int | str,
    report_id: str | None,
    config: Mapping[str, Any],
    priority: int,
    timeout_seconds: int,
    created_by: str,
    now: datetime | None,
) -> dict[str, Any]:
    stamp = format_timestamp(now or utcnow())
    entry = {"timestamp": stamp, "level": "INFO", "message": f"Job created for conversation {zid}"}
    record: dict[str, Any] = {
        **_new_server_job(str(uuid.uuid4()), stamp),
        "job_type": FULL_PIPELINE,
        "priority": priority,
        "conversation_id": str(zid),
        "report_id": report_id,
        "retry_count": 0,
        "max_retries": DEFAULT_MAX_RETRIES,
        "timeout_seconds": timeout_seconds,
        "job_config": encode_json(config),
        "job_results": "{}",
        "logs": encode_json({"entries": [entry], "log_location": ""}),
        "created_by": created_by,
    }
    return {name: value for name, value in record.items() if value is not None}


def narrative(
    report_id: str,
    zid: int | str,
    *,
    model: str = UI_MODEL,
    priority: int = DEFAULT_PRIORITY,
    settings: Mapping[str, Any] | None = None,
    now: datetime | None = None,
    include_moderation: bool | None = False,
    max_batch_size: int = 20,
    no_cache: bool = False,
) -> dict[str, Any]:
    """``POST /api/v3/delphi/batchReports`` (the same with and without the guard): settings nested in
    stages[0].config, an ``environment`` of strings, no timeout_seconds, retry_count or created_by.
    ``model`` is the request's, else the server's own ANTHROPIC_MODEL (newer clients send none);
    ``include_moderation`` None: the request had none, and JSON.stringify leaves it out."""
    moment = now or utcnow()
    stamp = format_timestamp(moment)
    job_id = f"batch_report_{report_id}_{int(moment.timestamp())}_{uuid.uuid4().hex[:8]}"
    config = {
        "model": model,
        "max_batch_size": max_batch_size,
        "no_cache": no_cache,
        "report_id": report_id,
        "include_moderation": include_moderation,
        **(settings or {}),
    }
    stage = {"stage": NARRATIVE_STAGE, "config": {k: v for k, v in config.items() if v is not None}}
    environment = {
        "NARRATIVE_BATCH_MODEL": model,
        "NARRATIVE_BATCH_MAX_SIZE": str(max_batch_size),
        "NARRATIVE_BATCH_NO_CACHE": "1" if no_cache else "0",
    }
    return {
        **_new_server_job(job_id, stamp),  # updated_at: a second clock read there, often 1 ms later
        "job_type": CREATE_NARRATIVE_BATCH,
        "priority": priority,
        "conversation_id": str(zid),
        "report_id": report_id,
        "job_config": encode_json({"job_type": CREATE_NARRATIVE_BATCH, "stages": [stage]}),
        "job_results": "{}",
        "logs": encode_json({"entries": []}),
        "environment": encode_json(environment),
    }
