"""Job records exactly as the existing producers write them, attribute for attribute (docs/contract.md).

Contract tests and the demo insert these with a plain ``PutItem`` (not ``JobQueue.enqueue``), the way
the producers do, so what the daemon processes is what production hands it. The Polis server's shapes
are defined once, in ``delphi_jobs.records`` (``delphi-jobs submit`` writes them too); the Python
producers' are here: the batch checker row the original narrative script wrote, and the Delphi CLI's
records (``delphi/scripts/delphi_cli.py``). Those use ``json.dumps``' spacing (``", "``, ``": "``)
and naive local timestamps, kept byte for byte.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from delphi_jobs import records
from delphi_jobs.dynamo import to_item
from delphi_jobs.model import utcnow

UI_MODEL = records.UI_MODEL


def server_full_pipeline(
    zid: int | str,
    report_id: str | None = None,
    *,
    model: str = UI_MODEL,
    include_moderation: bool = False,
    now: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """The server's FULL_PIPELINE record on ``edge``; ``changes`` replace attributes."""
    record = records.full_pipeline(
        zid, report_id, model=model, include_moderation=include_moderation, now=now
    )
    return {**record, **changes}


def server_full_pipeline_guarded(
    zid: int | str, report_id: str | None = None, *, include_moderation: bool = False, **changes: Any
) -> dict[str, Any]:
    """The server's FULL_PIPELINE record with the admission guard (``job_config`` minimal)."""
    return {**records.full_pipeline_guarded(zid, report_id, include_moderation=include_moderation), **changes}


def server_narrative(
    report_id: str,
    zid: int | str,
    model: str = UI_MODEL,
    *,
    include_moderation: bool | None = False,
    **changes: Any,
) -> dict[str, Any]:
    """The server's CREATE_NARRATIVE_BATCH record; ``changes`` replace attributes."""
    return {
        **records.narrative(report_id, zid, model=model, include_moderation=include_moderation),
        **changes,
    }


def _naive_now() -> str:
    """Python's ``datetime.now().isoformat()`` on a UTC host: naive, microseconds unless they are 0."""
    return utcnow().replace(tzinfo=None).isoformat()


def original_checker(
    parent_id: str, batch_id: str, zid: int | str, report_id: str, **changes: Any
) -> dict[str, Any]:
    """The AWAITING_NARRATIVE_BATCH row the original narrative script wrote after submitting a batch:
    naive local timestamps, priority 50 whatever the parent's, and no worker_id, started_at,
    completed_at, job_config, job_results, timeout_seconds or retry counters. ``report_id`` was the
    parent's, else the zid (DELPHI_REPORT_ID)."""
    now = _naive_now()
    record: dict[str, Any] = {
        "job_id": f"batch_check_{parent_id}_{int(time.time())}",
        "status": "PENDING",
        "job_type": "AWAITING_NARRATIVE_BATCH",
        "batch_job_id": parent_id,
        "batch_id": batch_id,
        "conversation_id": str(zid),
        "report_id": report_id,
        "created_at": now,
        "updated_at": now,
        "priority": 50,
        "version": 1,
        "logs": json.dumps({"entries": []}),
    }
    return {**record, **changes}


def cli_job(
    zid: int | str,
    job_type: str = "FULL_PIPELINE",
    *,
    model: str | None = None,
    report_id: str | None = None,
    max_batch_size: int = 100,
    no_cache: bool = False,
    **changes: Any,
) -> dict[str, Any]:
    """``delphi_cli.py submit``: the server's pipeline record (the server's route was modelled on it)
    but naive local timestamps, ``timeout_seconds`` 7200, ``created_by`` delphi_cli, Python's JSON
    spacing, no top-level ``report_id`` (a narrative job carries it in its stage config only) and no
    ``include_moderation``. ``model`` None is the REPORT stage's ``null`` (no ANTHROPIC_MODEL there)."""
    now = _naive_now()
    config: dict[str, Any]
    if job_type == "CREATE_NARRATIVE_BATCH":
        stage = {
            "model": model,
            "max_batch_size": max_batch_size,
            "no_cache": no_cache,
            "report_id": report_id,
        }
        config = {"job_type": job_type, "stages": [{"stage": records.NARRATIVE_STAGE, "config": stage}]}
    else:
        config = {
            "stages": [
                {"stage": "PCA", "config": {}},
                {"stage": "UMAP", "config": {"n_neighbors": 15, "min_dist": 0.1}},
                {"stage": "REPORT", "config": {"model": model, "include_topics": True}},
            ],
            "visualizations": ["basic", "enhanced", "multilayer"],
        }
    entry = {"timestamp": now, "level": "INFO", "message": f"Job created for conversation {zid}"}
    record = {
        **records.full_pipeline(zid, timeout_seconds=7200, created_by="delphi_cli"),
        "created_at": now,
        "updated_at": now,
        "job_type": job_type,
        "job_config": json.dumps(config),
        "job_results": json.dumps({}),
        "logs": json.dumps({"entries": [entry], "log_location": ""}),
    }
    return {**record, **changes}


def hand_made(job_id: str, zid: int | str, **changes: Any) -> dict[str, Any]:
    """What an operator's script writes: no version, job_type, report_id or logs."""
    record: dict[str, Any] = {
        "job_id": job_id,
        "status": "PENDING",
        "conversation_id": str(zid),
        "created_at": _naive_now(),
        "worker_id": "none",
        "priority": 50,
    }
    record.update(changes)
    return record


def put_raw(client: Any, table: str, record: dict[str, Any]) -> None:
    """Insert a record as a producer does: a plain PutItem, no help from the queue."""
    client.put_item(TableName=table, Item=to_item(record))
