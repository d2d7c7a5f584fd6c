"""The two reference drivers the poller is measured against, in the same run on the same server.

``original_job``: the original poller's strategy (DESIGN 3, defect 1): every poll reads every PENDING,
AWAITING_RECHECK and PROCESSING item through StatusCreatedIndex, all pages, deserializes them all (it
used boto3's resource layer), sorts PENDING first then oldest, and claims the first. Its cost grows
with the backlog.

``plain_loop``: the ceiling: the least work any DynamoDB claim loop can do per job: one page of 25
PENDING items, one conditional claim, one conditional finish; no logs, no lease, no handler.
"""

from __future__ import annotations

import random
import threading
import uuid
from datetime import timedelta
from typing import Any

from bench.harness import Tables, status_query
from delphi_jobs.dynamo import error_code, from_item
from delphi_jobs.model import format_timestamp, utcnow


def _claim(client: Any, table: str, job: dict[str, Any], worker: str, *, lease: bool) -> bool:
    """Conditional on the status and version as read; the original also set a 15-minute lock."""
    now = utcnow()
    sets = "SET #s = :p, worker_id = :w, started_at = :now, version = :next"
    values: dict[str, Any] = {
        ":p": {"S": "PROCESSING"},
        ":w": {"S": worker},
        ":now": {"S": format_timestamp(now)},
        ":next": {"N": str(job["version"] + 1)},
        ":v": {"N": str(job["version"])},
        ":seen": {"S": job["status"]},
    }
    if lease:
        sets += ", lock_expires_at = :lease"
        values[":lease"] = {"S": format_timestamp(now + timedelta(minutes=15))}
    try:
        client.update_item(
            TableName=table,
            Key={"job_id": {"S": job["job_id"]}},
            UpdateExpression=sets,
            ConditionExpression="#s = :seen AND version = :v",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=values,
        )
    except Exception as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _finish(client: Any, table: str, job_id: str, version: int, worker: str) -> None:
    client.update_item(
        TableName=table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET #s = :done, completed_at = :now, version = :next",
        ConditionExpression="#s = :p AND worker_id = :w AND version = :v",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":done": {"S": "COMPLETED"},
            ":p": {"S": "PROCESSING"},
            ":w": {"S": worker},
            ":now": {"S": format_timestamp(utcnow())},
            ":v": {"N": str(version + 1)},
            ":next": {"N": str(version + 2)},
        },
    )


def original_job(tables: Tables, client: Any, worker: str) -> int:
    """One poll, claim and finish the way the original poller did; returns the items it read."""
    found: list[dict[str, Any]] = []
    for status in ("PENDING", "AWAITING_RECHECK", "PROCESSING"):
        request = status_query(tables.name, status, ScanIndexForward=True)
        while True:
            page = client.query(**request)
            found += [from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    now = format_timestamp(utcnow())
    actionable = [
        job for job in found if job["status"] != "PROCESSING" or str(job.get("lock_expires_at", "z")) < now
    ]
    actionable.sort(key=lambda job: (job["status"] != "PENDING", str(job.get("created_at", ""))))
    for job in actionable[:1]:
        job["version"] = int(job.get("version", 1))
        if _claim(client, tables.name, job, worker, lease=True):
            _finish(client, tables.name, job["job_id"], job["version"], worker)
    return len(found)


def plain_loop(tables: Tables, client: Any, threads: int) -> None:
    """Claim and finish every PENDING job with ``threads`` threads sharing one client, then return."""

    def work() -> None:
        worker = uuid.uuid4().hex[:8]
        while True:
            page = client.query(**status_query(tables.name, "PENDING", Limit=25)).get("Items", [])
            if not page:
                return
            for item in random.sample(page, len(page)) if threads > 1 else page:
                job = {
                    "job_id": item["job_id"]["S"],
                    "status": "PENDING",
                    "version": int(item["version"]["N"]),
                }
                if _claim(client, tables.name, job, worker, lease=False):
                    _finish(client, tables.name, job["job_id"], job["version"], worker)
                    break

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
