"""Poll cost against backlog size (defect 1), with the original poller's approach as the baseline.

For each backlog size, one table gets N PENDING jobs that are not due yet (backed off) and one due
job. ``ours`` is ``JobQueue.find_candidates`` (bounded pages per status, rotating cursor); ``original``
reads every PENDING, AWAITING_RECHECK and PROCESSING item as the original poller did. Prints one JSON
document: requests, items read and milliseconds per poll, and the ratio original/ours in the same run.

    python bench/poll_cost.py [--sizes 10 300 3000] [--polls 20] [--server ddblocal|moto]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from datetime import timedelta
from functools import partial
from typing import Any

from delphi_jobs.config import Settings
from delphi_jobs.devtools import dynamodb_local
from delphi_jobs.devtools.moto_server import MotoServer
from delphi_jobs.dynamo import make_client, to_item
from delphi_jobs.model import format_timestamp, utcnow
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import DynamoJobStore
from delphi_jobs.tables import STATUS_CREATED_INDEX, ensure_tables, table_specs


class Meter:
    def __init__(self, client: Any) -> None:
        self.requests = 0
        self.items = 0
        client.meta.events.register("before-call.dynamodb.Query", self._request)
        client.meta.events.register("after-call.dynamodb.Query", self._items)

    def _request(self, **_: Any) -> None:
        self.requests += 1

    def _items(self, parsed: dict[str, Any], **_: Any) -> None:
        self.items += len(parsed.get("Items", []))


def original_poll(client: Any, table: str) -> int:
    """The original poller's read: every item of each status, all pages."""
    found = 0
    for status in ("PENDING", "AWAITING_RECHECK", "PROCESSING"):
        request: dict[str, Any] = {
            "TableName": table,
            "IndexName": STATUS_CREATED_INDEX,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": {"S": status}},
        }
        while True:
            page = client.query(**request)
            found += len(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return found


def fill(client: Any, queue: JobQueue, size: int) -> None:
    later = format_timestamp(utcnow() + timedelta(hours=1))
    records = [
        queue.new_record({"job_id": f"later-{i:06d}", "conversation_id": "1", "run_after": later})
        for i in range(size)
    ]
    for start in range(0, len(records), 25):
        batch = [{"PutRequest": {"Item": to_item(r)}} for r in records[start : start + 25]]
        pending: dict[str, Any] = {queue.table: batch}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems", {})
    queue.enqueue({"job_id": "due-now", "conversation_id": "1"})


def measure(poll: Any, meter: Meter, polls: int) -> dict[str, float]:
    times, requests, items = [], [], []
    for _ in range(polls):
        meter.requests = meter.items = 0
        started = time.perf_counter()
        poll()
        times.append((time.perf_counter() - started) * 1000)
        requests.append(meter.requests)
        items.append(meter.items)
    return {
        "requests_per_poll_max": max(requests),
        "items_read_per_poll_max": max(items),
        "ms_per_poll_median": round(statistics.median(times), 2),
    }


def run(endpoint: str, sizes: list[int], polls: int) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        settings = Settings(endpoint_url=endpoint, table_prefix=f"b{uuid.uuid4().hex[:8]}_")
        client = make_client(settings)
        ensure_tables(client, table_specs(settings))
        queue = JobQueue(DynamoJobStore(client, settings.jobs_table))
        fill(client, queue, size)
        meter = Meter(client)
        ours = measure(queue.find_candidates, meter, polls)
        original = measure(partial(original_poll, client, settings.jobs_table), meter, max(3, polls // 4))
        results.append(
            {
                "backlog": size,
                "ours": ours,
                "original": original,
                "ratio_ms_original_over_ours": round(
                    original["ms_per_poll_median"] / ours["ms_per_poll_median"], 2
                ),
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 300, 3000])
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--server", choices=["ddblocal", "moto"], default="ddblocal")
    args = parser.parse_args()
    if args.server == "ddblocal" and dynamodb_local.unavailable_reason():
        print(
            f"DynamoDB Local unavailable ({dynamodb_local.unavailable_reason()}); using moto", file=sys.stderr
        )
        args.server = "moto"
    server: Any = dynamodb_local.DynamoDBLocal() if args.server == "ddblocal" else MotoServer()
    with server:
        results = run(server.endpoint_url, args.sizes, args.polls)
    print(json.dumps({"benchmark": "poll_cost", "server": args.server, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
