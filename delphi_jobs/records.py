"""New job records in the Polis server's own shape (DESIGN 2.1): the one definition of that shape.

``delphi-jobs submit`` (and the HTTP API) write these, so a job an operator submits is exactly what the
server would have written; the tests and the demo insert the same records with a plain ``PutItem``,
the way the server does, so what the daemon is tested on is what production hands it.
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


def _new_server_job(job_id: str, now: str) -> dict[str, Any]:
    """The fields both server producers write for a new, unclaimed job."""
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
) -> dict[str, Any]:
    """A FULL_PIPELINE job as the server writes it; ``settings`` go where the server keeps them (the
    top level of job_config: stages[0] holds the PCA stage's own config)."""
    stamp = format_timestamp(now or utcnow())
    config: dict[str, Any] = {
        "job_type": FULL_PIPELINE,
        "stages": [
            {"stage": "PCA", "config": {"n_components": 2, "normalize": True}},
            {"stage": "UMAP", "config": {"n_neighbors": 15, "min_dist": 0.1}},
            {"stage": "REPORT", "config": {"model": "claude-sonnet-4-5", "include_topics": True}},
        ],
        "visualizations": ["basic", "enhanced", "multilayer"],
        "include_moderation": False,
        **(settings or {}),
    }
    return {
        **_new_server_job(str(uuid.uuid4()), stamp),
        "job_type": FULL_PIPELINE,
        "priority": priority,
        "conversation_id": str(zid),
        "report_id": report_id or str(zid),
        "retry_count": 0,
        "max_retries": DEFAULT_MAX_RETRIES,
        "timeout_seconds": timeout_seconds,
        "job_config": encode_json(config),
        "job_results": "{}",
        "logs": encode_json({"entries": [{"timestamp": stamp, "level": "INFO", "message": "Job created"}]}),
        "created_by": created_by,
    }


def narrative(
    report_id: str,
    zid: int | str,
    *,
    model: str = "claude-sonnet-4-5",
    priority: int = DEFAULT_PRIORITY,
    settings: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A CREATE_NARRATIVE_BATCH job as the server writes it: settings nested in stages[0].config, no
    timeout_seconds, retry_count or created_by (callers add what the server would not write)."""
    moment = now or utcnow()
    stamp = format_timestamp(moment)
    job_id = f"batch_report_{report_id}_{int(moment.timestamp())}_{uuid.uuid4().hex[:8]}"
    config = {
        "model": model,
        "max_batch_size": 20,
        "no_cache": False,
        "report_id": report_id,
        "include_moderation": False,
        **(settings or {}),
    }
    return {
        **_new_server_job(job_id, stamp),
        "job_type": CREATE_NARRATIVE_BATCH,
        "priority": priority,
        "conversation_id": str(zid),
        "report_id": report_id,
        "job_config": encode_json(
            {"job_type": CREATE_NARRATIVE_BATCH, "stages": [{"stage": NARRATIVE_STAGE, "config": config}]}
        ),
        "job_results": "{}",
        "logs": encode_json({"entries": []}),
        "environment": encode_json({"ANTHROPIC_MODEL": model, "NODE_ENV": "production"}),
    }
