"""NarrativeReportStore: the only module that touches ``Delphi_NarrativeReports`` (DESIGN 2.2).

Items are keyed ``rid_section_model = f"{report_id}#{section}#{model}"`` with a ``timestamp`` range
key. The checker fixes the timestamp per batch, so processing a batch's results again overwrites the
same items instead of adding a second run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from delphi_jobs.dynamo import query_all, to_item, to_value
from delphi_jobs.model import encode_json
from delphi_jobs.tables import REPORT_ID_TIMESTAMP_INDEX

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass(frozen=True)
class ReportSection:
    report_id: str
    section: str
    model: str
    timestamp: str
    report_data: str
    job_id: str
    batch_id: str
    errors: str | None = None
    metadata: Mapping[str, Any] | None = None

    @property
    def key(self) -> str:
        return f"{self.report_id}#{self.section}#{self.model}"


class NarrativeReportStore:
    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    def put(self, section: ReportSection) -> None:
        item: dict[str, Any] = {
            "rid_section_model": section.key,
            "timestamp": section.timestamp,
            "report_id": section.report_id,
            "section": section.section,
            "model": section.model,
            "report_data": section.report_data,
            "job_id": section.job_id,
            "batch_id": section.batch_id,
            "errors": section.errors,
            "metadata": encode_json(section.metadata) if section.metadata else None,
        }
        self._client.put_item(TableName=self._table, Item=to_item(item))

    def items_for_report(self, report_id: str) -> Iterator[dict[str, Any]]:
        """Every item of a report, through ``ReportIdTimestampIndex`` as the Polis server reads them."""
        return query_all(
            self._client,
            {
                "TableName": self._table,
                "IndexName": REPORT_ID_TIMESTAMP_INDEX,
                "KeyConditionExpression": "#r = :r",
                "ExpressionAttributeNames": {"#r": "report_id"},
                "ExpressionAttributeValues": {":r": to_value(report_id)},
            },
        )

    def runs(self, report_id: str) -> dict[str, list[dict[str, Any]]]:
        """A report's items grouped by run (the job_id that wrote them), as the server groups them."""
        runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item in self.items_for_report(report_id):
            runs[str(item.get("job_id", ""))].append(item)
        return dict(runs)

    def latest_run(self, report_id: str) -> dict[str, dict[str, Any]]:
        """The server's read path: group by job_id, take the newest run, section and model from
        splitting ``rid_section_model`` on ``#``. Returns section -> item (with ``model`` parsed)."""
        runs = self.runs(report_id)
        if not runs:
            return {}
        return sections_of(max(runs.values(), key=run_time))


def run_time(items: list[dict[str, Any]]) -> str:
    """When a run was written: its newest item's timestamp (what the server compares)."""
    return max(str(item["timestamp"]) for item in items)


def sections_of(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """section -> item of one run, section and model split out of ``rid_section_model``."""
    sections: dict[str, dict[str, Any]] = {}
    for item in items:
        _, section, model = str(item["rid_section_model"]).split("#", 2)
        sections[section] = {**item, "section": section, "model": model}
    return sections
