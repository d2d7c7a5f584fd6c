"""``reports show``: the narrative sections of a report exactly as the Polis server would serve them.

The server's read path (DESIGN 2.2): query ReportIdTimestampIndex on report_id, group the items by
job_id, take the newest run, split ``rid_section_model`` on ``#``. Older runs are listed so an operator
can see that a re-run happened and look at an earlier one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import NotFound
from delphi_jobs.reports import run_time, sections_of


@dataclass(frozen=True)
class RunSummary:
    job_id: str
    written_at: str
    sections: int
    served: bool
    """The run the server serves (the newest)."""


@dataclass(frozen=True)
class SectionView:
    section: str
    model: str
    timestamp: str
    title: str | None
    paragraphs: int | None
    report_data: Any
    """The model's answer, decoded when it is JSON (it normally is), else the text."""
    errors: str | None


@dataclass(frozen=True)
class ReportView:
    report_id: str
    run: str
    """The job_id of the run shown."""
    runs: list[RunSummary]
    sections: list[SectionView]


def show_report(ctx: OpsContext, report_id: str, run: str | None = None) -> ReportView:
    runs = ctx.reports.runs(report_id)
    if not runs:
        raise NotFound(
            f"no narrative sections for report {report_id!r} in {ctx.settings.reports_table}",
            hint="did its narrative job run? delphi-jobs list --job-type CREATE_NARRATIVE_BATCH",
        )
    newest = max(runs, key=lambda job_id: run_time(runs[job_id]))
    chosen = run or newest
    if chosen not in runs:
        raise NotFound(f"report {report_id!r} has no run written by job {chosen!r}; runs: {', '.join(runs)}")
    summaries = sorted(
        (RunSummary(job_id, run_time(items), len(items), job_id == newest) for job_id, items in runs.items()),
        key=lambda r: r.written_at,
        reverse=True,
    )
    sections = [_section(item) for _, item in sorted(sections_of(runs[chosen]).items())]
    return ReportView(report_id, chosen, summaries, sections)


def _section(item: dict[str, Any]) -> SectionView:
    raw = item.get("report_data")
    data: Any = raw
    title = paragraphs = None
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            data = raw
    if isinstance(data, dict):
        title = str(data["title"]) if data.get("title") is not None else None
        paragraphs = len(data["paragraphs"]) if isinstance(data.get("paragraphs"), list) else None
    errors = item.get("errors")
    return SectionView(
        section=str(item["section"]),
        model=str(item["model"]),
        timestamp=str(item["timestamp"]),
        title=title,
        paragraphs=paragraphs,
        report_data=data,
        errors=str(errors) if errors else None,
    )
