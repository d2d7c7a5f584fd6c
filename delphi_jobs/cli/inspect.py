"""inspect commands: ``list``, ``show``, ``stats [--watch]``, ``reports show``."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from delphi_jobs.cli.common import (
    OK,
    USAGE,
    Registry,
    age,
    bounded,
    connection_flags,
    context,
    duration,
    emit,
    fail,
    moment,
    output_flags,
    when,
)
from delphi_jobs.ops.jobs import JobDetail, JobList, ListQuery, list_jobs, show
from delphi_jobs.ops.reports import ReportView, show_report
from delphi_jobs.ops.stats import Stats, stats
from delphi_jobs.ops.views import JobSummary, jsonable

# ---- list ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    query = ListQuery(
        status=args.status,
        job_type=args.job_type,
        conversation=args.conversation,
        worker=args.worker,
        created_after=args.since,
        created_before=args.until,
        limit=args.limit,
        oldest_first=args.oldest_first,
        cursor=args.cursor,
    )
    emit(args, list_jobs(context(args), query), _render_list)
    return OK


def job_table(jobs: list[JobSummary], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("job_id", "type", "status", "zid", "report", "prio", "age", "worker", "note"):
        table.add_column(
            column, overflow="fold" if column == "note" else "ellipsis", no_wrap=column != "note"
        )
    for job in jobs:
        table.add_row(
            job.job_id,
            job.job_type,
            job.status,
            job.conversation_id or "-",
            job.report_id or "-",
            str(job.priority),
            age(job.age_seconds),
            job.worker_id or "-",
            (job.error_message or "")[:80],
        )
    return table


def _render_list(out: Console, result: JobList) -> None:
    if not result.jobs:
        out.print(f"no jobs (read through {result.index})")
    else:
        out.print(job_table(result.jobs))
    if result.next_cursor:
        out.print(f"more may match: add --cursor {result.next_cursor}")


# ---- show ---------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    emit(args, show(context(args), args.job_id), _render_show)
    return OK


def _render_show(out: Console, detail: JobDetail) -> None:
    job = detail.summary
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    lease = ""
    if detail.lease_expired is not None:
        lease = " (expired: a poller will reclaim it)" if detail.lease_expired else " (alive)"
    rows = [
        ("job_id", job.job_id),
        ("status", job.status),
        ("job_type", job.job_type),
        ("conversation", job.conversation_id or "-"),
        ("report_id", job.report_id or "-"),
        ("priority", str(job.priority)),
        ("created", f"{when(job.created_at)} ({age(job.age_seconds)} ago)"),
        ("started", when(job.started_at)),
        ("updated", when(job.updated_at)),
        ("worker", job.worker_id or "-"),
        ("lease until", when(job.lock_expires_at) + lease),
        ("attempts", f"retry_count {job.retry_count} of max_retries {job.max_retries}"),
        ("error", job.error_message or "-"),
        ("allowed now", ", ".join(detail.allowed_actions) or "nothing (finished)"),
    ]
    for name, value in rows:
        fields.add_row(name, value)
    out.print(fields)
    for problem in detail.problems:
        out.print(f"[red]problem:[/red] {problem}")
    if detail.links:
        out.print()
        for link in detail.links:
            state = f"{link.job.status}, {link.job.job_type}" if link.job else "MISSING"
            out.print(f"{link.relation}: {link.job_id} ({state})")
    for title, document in (("progress", detail.progress), ("results", detail.results)):
        if document:
            out.print(f"\n[bold]{title}[/bold]")
            out.print(json.dumps(jsonable(document), indent=2, ensure_ascii=False), markup=False)
    if detail.history:
        out.print("\n[bold]history[/bold]")
        for event in detail.history:
            source = event.source or "-"
            line = f"{event.at} {source} -> {event.to} by {event.by}: {event.reason}"
            out.print(line, markup=False)
    if detail.logs:
        out.print(f"\n[bold]logs[/bold] (last {len(detail.logs)})")
        for entry in detail.logs:
            out.print(f"{entry.timestamp} {entry.level}: {entry.message}", markup=False)
    other = {
        name: value
        for name, value in detail.attributes.items()
        if name not in {"logs", "history", "job_results", "progress", *(row[0] for row in rows)}
    }
    out.print("\n[bold]all other attributes[/bold]")
    out.print(json.dumps(jsonable(other), indent=2, ensure_ascii=False), markup=False)


# ---- stats --------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> int:
    ctx = context(args)

    def sample() -> Stats:
        return stats(ctx, window=args.window, lookback=args.lookback)

    if not args.watch:
        emit(args, sample(), _render_stats)
        return OK
    try:
        while True:
            result = sample()
            if args.json:
                print(json.dumps(jsonable(result), ensure_ascii=False), flush=True)  # JSON Lines
            else:
                out = Console(highlight=False)
                out.clear()
                _render_stats(out, result)
            time.sleep(args.every)
    except KeyboardInterrupt:
        return OK


def _render_stats(out: Console, result: Stats) -> None:
    types = sorted({t for count in result.statuses for t in count.by_type})
    table = Table(title=f"queue at {when(result.at)} UTC", title_justify="left", show_edge=False)
    table.add_column("status")
    table.add_column("jobs", justify="right")
    for job_type in types:
        table.add_column(job_type, justify="right")
    table.add_column("scope")
    for count in result.statuses:
        mark = "~" if count.sampled else ""
        table.add_row(
            count.status,
            str(count.count),
            *(f"{mark}{count.by_type.get(t, 0)}" for t in types),
            count.scope,
        )
    out.print(table)
    oldest = (
        f"{age(result.oldest_pending_age_seconds)} ({result.oldest_pending_job_id})"
        if result.oldest_pending_job_id
        else "none pending"
    )
    out.print(f"oldest pending: {oldest}")
    finished = ", ".join(f"{n} {s}" for s, n in result.finished_in_window.items() if n) or "none"
    out.print(
        f"finished in the last {result.window_minutes:g} min: {finished}; "
        f"throughput {result.throughput_per_minute:.2f} jobs/min"
    )


# ---- reports ------------------------------------------------------------------------------------


def cmd_reports_show(args: argparse.Namespace) -> int:
    emit(args, show_report(context(args), args.report_id, args.run), _render_report)
    return OK


def _render_report(out: Console, view: ReportView) -> None:
    out.print(f"report {view.report_id}: run {view.run}")
    runs = Table(show_edge=False, title="runs (the Polis server serves the newest)", title_justify="left")
    for column in ("job_id", "written", "sections", "served"):
        runs.add_column(column)
    for run in view.runs:
        runs.add_row(run.job_id, run.written_at, str(run.sections), "yes" if run.served else "")
    out.print(runs)
    sections = Table(show_edge=False, title="sections", title_justify="left")
    for column in ("section", "model", "title", "paragraphs", "errors"):
        sections.add_column(column, overflow="fold")
    for section in view.sections:
        sections.add_row(
            section.section,
            section.model,
            section.title or "-",
            "-" if section.paragraphs is None else str(section.paragraphs),
            section.errors or "",
        )
    out.print(sections)


def register(commands: Registry) -> None:
    listing = commands.add(
        "list",
        cmd_list,
        "list jobs by index queries (never a table scan)",
        "inspect",
        description="List jobs, newest first. The most selective filter picks the index "
        "(--conversation: ConversationIndex, --worker: WorkerStatusIndex, --status: StatusCreatedIndex, "
        "--job-type: JobTypeIndex, ordered by priority); the other filters are checked on what it returns.",
    )
    listing.add_argument("--status", help="PENDING, PROCESSING, AWAITING_RECHECK, COMPLETED, ...")
    listing.add_argument("--job-type", help="FULL_PIPELINE, CREATE_NARRATIVE_BATCH, AWAITING_NARRATIVE_BATCH")
    listing.add_argument("--conversation", metavar="ZID", help="the conversation's zid")
    listing.add_argument("--worker", help="a worker id, or none for unclaimed jobs")
    listing.add_argument("--since", type=moment, help="created at or after: ISO time or a duration ago (1h)")
    listing.add_argument("--until", type=moment, help="created at or before: ISO time or a duration ago")
    listing.add_argument("--limit", type=bounded(int, 1, 10_000), default=50)
    listing.add_argument("--oldest-first", action="store_true")
    listing.add_argument("--cursor", help="continue a listing where the previous one stopped")
    output_flags(listing)

    showing = commands.add(
        "show",
        cmd_show,
        "one job: every field, decoded logs, results, progress, its checker or parent",
        "inspect",
    )
    showing.add_argument("job_id")
    output_flags(showing)

    stat = commands.add(
        "stats",
        cmd_stats,
        "jobs per status and type, oldest pending age, recent throughput (bounded reads)",
        "inspect",
    )
    stat.add_argument("--watch", action="store_true", help="refresh until interrupted (--json: JSON Lines)")
    stat.add_argument("--every", type=bounded(float, 1), default=5.0, metavar="SECONDS")
    stat.add_argument("--window", type=duration, default=duration("15m"), help="throughput window (15m)")
    stat.add_argument(
        "--lookback", type=duration, default=duration("24h"), help="finished jobs counted back to (24h)"
    )
    output_flags(stat)

    reports = commands.add(
        "reports",
        _reports_usage,
        "narrative reports as the Polis server reads them: reports show REPORT_ID",
        "inspect",
        connection=False,
    )
    actions = reports.add_subparsers(dest="reports_command", metavar="ACTION", parser_class=type(reports))
    showing_report = actions.add_parser(
        "show",
        help="the sections the server would serve (newest run), or --run JOB_ID",
        description="The Polis server's read path: ReportIdTimestampIndex, grouped by job_id, newest run.",
    )
    connection_flags(showing_report)
    showing_report.add_argument("report_id")
    showing_report.add_argument("--run", metavar="JOB_ID", help="show the run written by this job instead")
    output_flags(showing_report)
    showing_report.set_defaults(handler=cmd_reports_show)


def _reports_usage(args: argparse.Namespace) -> int:
    return fail("reports: say which action: reports show REPORT_ID", USAGE)
