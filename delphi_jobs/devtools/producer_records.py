"""Job records exactly as the existing producers write them (DESIGN 2.1).

Contract tests and the demo insert these with a plain ``PutItem`` (not ``JobQueue.enqueue``), the way
the Polis server does, so what the daemon processes is what production hands it. The server's shapes
are defined once, in ``delphi_jobs.records`` (``delphi-jobs submit`` writes them too).
"""

from __future__ import annotations

from typing import Any

from delphi_jobs import records
from delphi_jobs.dynamo import to_item
from delphi_jobs.model import utcnow


def server_full_pipeline(zid: int | str, report_id: str | None = None, **changes: Any) -> dict[str, Any]:
    return {**records.full_pipeline(zid, report_id), **changes}


def server_narrative(
    report_id: str, zid: int | str, model: str = "claude-sonnet-4-5", **changes: Any
) -> dict[str, Any]:
    return {**records.narrative(report_id, zid, model=model), **changes}


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
