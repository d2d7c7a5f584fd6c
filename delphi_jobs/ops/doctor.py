"""``doctor``: checks the invariants the queue relies on and names every record that breaks one.

Reads are index queries, bounded by the live backlog (``max_items`` per status) and, for finished
narrative jobs, by a time window. Records the poller can never see (no ``created_at``, a status in the
wrong case or with stray spaces: both keep a record out of StatusCreatedIndex) are looked for where
they do show: unclaimed records are all in WorkerStatusIndex under worker ``none``, ordered by status,
so a few range queries read exactly the records whose status lies between the valid ones. Only
``scan=True`` reads the whole table, for records that are in no index at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from delphi_jobs.model import (
    AWAITING_NARRATIVE_BATCH,
    CREATE_NARRATIVE_BATCH,
    UNCLAIMED_WORKER,
    Job,
)
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.jobs import created_range, walk
from delphi_jobs.states import Status
from delphi_jobs.tables import (
    JOB_INDEXES,
    STATUS_CREATED_INDEX,
    WORKER_STATUS_INDEX,
    table_specs,
    verify_tables,
)

GSI_KEYS = sorted({name for _, key in JOB_INDEXES for name, _ in key.attributes()})
LIVE = (Status.PENDING, Status.PROCESSING, Status.AWAITING_RECHECK, Status.PAUSED)
MAX_FINDINGS_PER_CHECK = 50
PROBLEM = "problem"
WARNING = "warning"
_AFTER = "\x00"
"""Appended to a range bound, makes it exclusive: the smallest string greater than the bound."""


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    """``problem`` (doctor exits 3) or ``warning``."""
    message: str
    job_id: str | None = None
    fix: str | None = None


@dataclass
class CheckRun:
    name: str
    description: str
    examined: int = 0
    found: int = 0


@dataclass
class DoctorReport:
    checks: list[CheckRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(1 for f in self.findings if f.severity == PROBLEM)

    def run(self, name: str, description: str) -> CheckRun:
        check = CheckRun(name, description)
        self.checks.append(check)
        return check

    def add(
        self, check: CheckRun, severity: str, message: str, job_id: str | None = None, fix: str | None = None
    ) -> None:
        check.found += 1
        if check.found <= MAX_FINDINGS_PER_CHECK:
            self.findings.append(Finding(check.name, severity, message, job_id, fix))
        elif check.found == MAX_FINDINGS_PER_CHECK + 1:
            self.findings.append(Finding(check.name, severity, "more like the above; not all are listed"))


@dataclass(frozen=True)
class DoctorOptions:
    pending_sla: timedelta = timedelta(hours=1)
    window: timedelta = timedelta(hours=24)
    """How far back finished narrative jobs are checked for their checker and result."""
    max_items: int = 5000
    scan: bool = False


def doctor(ctx: OpsContext, options: DoctorOptions = DoctorOptions()) -> DoctorReport:
    report = DoctorReport()
    now = ctx.clock()
    if not _tables(ctx, report):
        return report  # without the job table the other checks can only fail
    live: list[Job] = []
    for status in LIVE:
        found = walk(ctx, STATUS_CREATED_INDEX, status, newest_first=False)
        live += _take(found, options.max_items)
    _leases(report, live, now)
    _pending_sla(report, live, now, options.pending_sla)
    _records(report, live)
    _invisible(ctx, report, options.max_items)
    _checkers(ctx, report, live)
    _parents(ctx, report, now, options)
    if options.scan:
        _scan(ctx, report)
    return report


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{delta.total_seconds() / 60:g} min"


def _take(jobs: Iterator[Job], limit: int) -> list[Job]:
    taken: list[Job] = []
    for job in jobs:
        taken.append(job)
        if len(taken) >= limit:
            break
    return taken


def _tables(ctx: OpsContext, report: DoctorReport) -> bool:
    check = report.run("tables", "tables and indexes match the contract (DESIGN 2.1, 2.2)")
    specs = table_specs(ctx.settings)
    check.examined = len(specs)
    problems = verify_tables(ctx.client, specs)
    for problem in problems:
        report.add(
            check, PROBLEM, problem, fix="delphi-jobs create-tables (creates what is missing; never alters)"
        )
    return not any(p.startswith(f"{ctx.settings.jobs_table}: table is missing") for p in problems)


def _leases(report: DoctorReport, live: list[Job], now: datetime) -> None:
    check = report.run("leases", "PROCESSING jobs hold a live lease (else no poller is running them)")
    for job in live:
        if job.status != Status.PROCESSING:
            continue
        check.examined += 1
        if job.lock_expires_at is None or job.lock_expires_at < now:
            since = f"since {job.lock_expires_at:%Y-%m-%d %H:%M:%S}Z" if job.lock_expires_at else "(no lease)"
            report.add(
                check,
                PROBLEM,
                f"PROCESSING with an expired lease {since}, worker {job.worker_id}",
                job.job_id,
                "start a poller (it reclaims the job) or: delphi-jobs reset-stuck --to pending",
            )


def _pending_sla(report: DoctorReport, live: list[Job], now: datetime, sla: timedelta) -> None:
    check = report.run("pending-sla", f"no job PENDING for longer than {_span(sla)}")
    for job in live:
        if job.status != Status.PENDING:
            continue
        check.examined += 1
        if job.created_at and now - job.created_at > sla:
            due = f", not due before {job.run_after:%Y-%m-%d %H:%M:%S}Z" if job.run_after else ""
            report.add(
                check,
                PROBLEM,
                f"PENDING for {now - job.created_at} (created {job.created_at:%Y-%m-%d %H:%M:%S}Z){due}",
                job.job_id,
                "are pollers running and serving this job type? delphi-jobs stats",
            )


def _records(report: DoctorReport, live: list[Job]) -> None:
    check = report.run("records", "live records are well formed and in every index")
    for job in live:
        check.examined += 1
        item = job.item
        for name in GSI_KEYS:
            if item.get(name) == "":
                report.add(check, PROBLEM, f"{name} is an empty string (a GSI key)", job.job_id)
        for name, index in (("worker_id", "WorkerStatusIndex"), ("conversation_id", "ConversationIndex")):
            if name not in item:
                report.add(check, WARNING, f"no {name}: not listed by {index}", job.job_id)
        if "job_type" not in item or "priority" not in item:
            report.add(check, WARNING, "no job_type or priority: not listed by JobTypeIndex", job.job_id)
        if job.retry_count > job.max_retries:
            report.add(
                check,
                PROBLEM,
                f"retry_count {job.retry_count} is above max_retries {job.max_retries}",
                job.job_id,
            )
        for problem in job.problems:
            report.add(
                check,
                PROBLEM,
                f"malformed: {problem} (a poller fails it unrun)",
                job.job_id,
                "fix the field, or cancel it and submit a new one (delphi-jobs submit)",
            )


def _invisible(ctx: OpsContext, report: DoctorReport, max_items: int) -> None:
    """Unclaimed records whose status is not one of ours, or that lack created_at."""
    check = report.run(
        "invisible",
        "unclaimed records are visible to the poller (a valid status, a created_at)",
    )
    fix = "rewrite status / created_at in the producer's format, or resubmit: delphi-jobs submit"
    valid = sorted(s.value for s in Status)
    gaps = zip([None, *(v + _AFTER for v in valid)], [*valid, None], strict=True)
    for low, high in gaps:  # each gap between valid statuses, read until the next valid one
        jobs = walk(ctx, WORKER_STATUS_INDEX, UNCLAIMED_WORKER, range_from=low, page_size=25)
        for job in jobs:
            check.examined += 1
            if high is not None and job.status >= high:
                break
            report.add(
                check, PROBLEM, f"status {job.status!r} is not one of {', '.join(valid)}", job.job_id, fix
            )
    pending = walk(ctx, WORKER_STATUS_INDEX, UNCLAIMED_WORKER, range_from="PENDING", range_to="PENDING")
    for job in _take(pending, max_items):
        check.examined += 1
        if not job.item.get("created_at"):
            report.add(
                check, PROBLEM, "PENDING without created_at: not in StatusCreatedIndex", job.job_id, fix
            )


def _checkers(ctx: OpsContext, report: DoctorReport, live: list[Job]) -> None:
    check = report.run("checkers", "every live batch checker has its parent job")
    for job in live:
        if job.job_type != AWAITING_NARRATIVE_BATCH:
            continue
        check.examined += 1
        if not job.batch_job_id:
            report.add(check, PROBLEM, "checker without batch_job_id", job.job_id)
        elif ctx.queue.get(job.batch_job_id) is None:
            report.add(
                check,
                PROBLEM,
                f"its parent {job.batch_job_id} does not exist: results cannot be reported to it",
                job.job_id,
                f"delphi-jobs stop-batch-cycle {job.job_id}",
            )


def _parents(ctx: OpsContext, report: DoctorReport, now: datetime, options: DoctorOptions) -> None:
    check = report.run(
        "parents",
        f"narrative jobs COMPLETED in the last {_span(options.window)} have a checker or a result",
    )
    jobs = walk(
        ctx,
        STATUS_CREATED_INDEX,
        Status.COMPLETED,
        newest_first=True,
        **created_range(now - options.window, None),
    )
    for job in _take(jobs, options.max_items):
        if job.job_type != CREATE_NARRATIVE_BATCH:
            continue
        check.examined += 1
        if ctx.queue.checkers_of(job) or job.job_results.get("narrative"):
            continue
        report_id = job.effective_report_id or str(job.conversation_id)
        if job.job_id in ctx.reports.runs(report_id):
            continue
        report.add(
            check,
            PROBLEM,
            f"COMPLETED without a checker, a narrative result or report sections (report {report_id})",
            job.job_id,
            "submit the report again: delphi-jobs submit --job-type CREATE_NARRATIVE_BATCH ...",
        )


def _scan(ctx: OpsContext, report: DoctorReport) -> None:
    """The whole table, page by page: only when the operator asked for it."""
    check = report.run("scan", "every record (full table scan) has what StatusCreatedIndex needs")
    valid = {s.value for s in Status}
    start = None
    while True:
        page = ctx.queue.scan_page(start=start)
        for job in page.jobs:
            check.examined += 1
            status = job.item.get("status")
            if status not in valid:
                report.add(check, PROBLEM, f"status {status!r} is not a valid status", job.job_id)
            if not job.item.get("created_at"):
                report.add(check, PROBLEM, "no created_at: not in StatusCreatedIndex", job.job_id)
        if page.next is None:
            return
        start = page.next
