"""Job records exactly as the existing producers write them (DESIGN 2.1).

Contract tests and the demo insert these with a plain ``PutItem`` (not ``JobQueue.enqueue``), the way
the Polis server does, so what the daemon processes is what production hands it.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from delphi_jobs.dynamo import to_item
from delphi_jobs.model import format_timestamp, utcnow


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
        "worker_id": "none",
    }


def server_full_pipeline(zid: int | str, report_id: str | None = None, **changes: Any) -> dict[str, Any]:
    now = format_timestamp(utcnow())
    record: dict[str, Any] = {
        **_new_server_job(str(uuid.uuid4()), now),
        "job_type": "FULL_PIPELINE",
        "priority": 50,
        "conversation_id": str(zid),
        "report_id": report_id or str(zid),
        "retry_count": 0,
        "max_retries": 3,
        "timeout_seconds": 14400,
        "job_config": json.dumps(
            {
                "job_type": "FULL_PIPELINE",
                "stages": [
                    {"stage": "PCA", "config": {"n_components": 2, "normalize": True}},
                    {"stage": "UMAP", "config": {"n_neighbors": 15, "min_dist": 0.1}},
                    {"stage": "REPORT", "config": {"model": "claude-sonnet-4-5", "include_topics": True}},
                ],
                "visualizations": ["basic", "enhanced", "multilayer"],
                "include_moderation": False,
            }
        ),
        "job_results": "{}",
        "logs": json.dumps({"entries": [{"timestamp": now, "level": "INFO", "message": "Job created"}]}),
        "created_by": "api",
    }
    record.update(changes)
    return record


def server_narrative(
    report_id: str, zid: int | str, model: str = "claude-sonnet-4-5", **changes: Any
) -> dict[str, Any]:
    now = format_timestamp(utcnow())
    job_id = f"batch_report_{report_id}_{int(time.time())}_{uuid.uuid4().hex[:8]}"
    config = {
        "model": model,
        "max_batch_size": 20,
        "no_cache": False,
        "report_id": report_id,
        "include_moderation": False,
    }
    record: dict[str, Any] = {
        **_new_server_job(job_id, now),
        "job_type": "CREATE_NARRATIVE_BATCH",
        "priority": 50,
        "conversation_id": str(zid),
        "report_id": report_id,
        "job_config": json.dumps(
            {
                "job_type": "CREATE_NARRATIVE_BATCH",
                "stages": [{"stage": "CREATE_NARRATIVE_BATCH_CONFIG_STAGE", "config": config}],
            }
        ),
        "job_results": "{}",
        "logs": json.dumps({"entries": []}),
        "environment": json.dumps({"ANTHROPIC_MODEL": model, "NODE_ENV": "production"}),
    }
    record.update(changes)
    return record


def hand_made(job_id: str, zid: int | str, **changes: Any) -> dict[str, Any]:
    """What an operator's script writes: no version, job_type, report_id or logs."""
    record: dict[str, Any] = {
        "job_id": job_id,
        "status": "PENDING",
        "conversation_id": str(zid),
        "created_at": utcnow().replace(tzinfo=None).isoformat(),
        "worker_id": "none",
        "priority": 50,
    }
    record.update(changes)
    return record


def put_raw(client: Any, table: str, record: dict[str, Any]) -> None:
    """Insert a record as a producer does: a plain PutItem, no help from the queue."""
    client.put_item(TableName=table, Item=to_item(record))
