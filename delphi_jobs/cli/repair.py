"""repair commands: ``reset-stuck``, ``stop-batch-cycle``, ``doctor``."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from delphi_jobs.cli.common import (
    OK,
    PROBLEMS,
    Registry,
    age,
    bounded,
    context,
    duration,
    emit,
    operator,
    operator_flag,
    output_flags,
    when,
)
from delphi_jobs.ops.doctor import DoctorOptions, DoctorReport, doctor
from delphi_jobs.ops.repair import (
    ResetReport,
    ResetRequest,
    StopCycleReport,
    anthropic_canceller,
    reset_stuck,
    stop_batch_cycle,
)
from delphi_jobs.states import Status


def cmd_reset_stuck(args: argparse.Namespace) -> int:
    request = ResetRequest(
        by=operator(args),
        to=Status(args.to.upper()),
        older_than=args.older_than,
        job_type=args.job_type,
        worker=args.worker,
        limit=args.limit,
        dry_run=args.dry_run,
        force=args.force,
        reason=args.reason,
    )
    emit(args, reset_stuck(context(args), request), _render_reset)
    return OK


def _render_reset(out: Console, report: ResetReport) -> None:
    mode = " (dry run: nothing changed)" if report.dry_run else ""
    if not report.items:
        out.print(f"no PROCESSING job matched{mode}")
        return
    table = Table(show_edge=False, title=f"reset-stuck -> {report.to}{mode}", title_justify="left")
    for column in ("job_id", "type", "worker", "running", "lease until", "outcome"):
        table.add_column(column)
    for item in report.items:
        job = item.job
        lease = when(job.lock_expires_at) + (" (expired)" if item.lease_expired else "")
        table.add_row(
            job.job_id, job.job_type, job.worker_id or "-", age(item.running_seconds), lease, item.outcome
        )
    out.print(table)


def cmd_stop_batch_cycle(args: argparse.Namespace) -> int:
    ctx = context(args)
    key = ctx.settings.anthropic_api_key
    canceller = (
        anthropic_canceller(key, ctx.settings.anthropic_base_url) if key and not args.dry_run else None
    )
    report = stop_batch_cycle(
        ctx, args.job_id, by=operator(args), dry_run=args.dry_run, cancel_batch=canceller
    )
    emit(args, report, _render_stop)
    return OK


def _render_stop(out: Console, report: StopCycleReport) -> None:
    mode = " (dry run: nothing changed)" if report.dry_run else ""
    out.print(f"batch cycle of {report.parent_id}{mode}")
    for step in report.jobs:
        out.print(f"  {step.role:<8} {step.job_id}  {step.status:<16} {step.outcome}")
    for batch in report.batches:
        out.print(f"  batch    {batch.batch_id}  {batch.outcome}")
    if not report.batches:
        out.print("  no Anthropic batch recorded on these jobs")


def cmd_doctor(args: argparse.Namespace) -> int:
    options = DoctorOptions(
        pending_sla=args.pending_sla, window=args.window, max_items=args.max_items, scan=args.scan
    )
    report = doctor(context(args), options)
    emit(args, report, _render_doctor)
    return PROBLEMS if report.problems else OK


def _render_doctor(out: Console, report: DoctorReport) -> None:
    for check in report.checks:
        verdict = "[green]ok[/green]" if not check.found else f"[red]{check.found} found[/red]"
        out.print(f"{check.name:<12} {verdict:<24} {check.description} ({check.examined} examined)")
    if report.findings:
        table = Table(show_edge=False, title="findings", title_justify="left")
        for column in ("check", "severity", "job_id", "finding", "fix"):
            table.add_column(column, overflow="fold")
        for finding in report.findings:
            table.add_row(
                finding.check, finding.severity, finding.job_id or "-", finding.message, finding.fix or ""
            )
        out.print(table)
    out.print(f"{report.problems} problem(s)")


def register(commands: Registry) -> None:
    reset = commands.add(
        "reset-stuck",
        cmd_reset_stuck,
        "reset PROCESSING jobs whose lease expired (with --force, live ones too) to FAILED or PENDING",
        "repair",
        description="Reset PROCESSING jobs whose owner's lease expired, each by one conditional write on "
        "the version it read; the job records who reset it and why. A running poller reclaims expired "
        "leases by itself: this is for when none runs, or to fail such jobs instead. --force also takes "
        "live jobs (older than --older-than): their owner's next fenced write fails and its heartbeat "
        "stops the job.",
    )
    reset.add_argument("--older-than", type=duration, default=None, help="running at least this long (1h)")
    reset.add_argument("--job-type")
    reset.add_argument("--worker", help="only this worker's jobs (WorkerStatusIndex)")
    reset.add_argument("--to", choices=["failed", "pending"], default="failed")
    reset.add_argument("--limit", type=bounded(int, 1), default=100, help="reset at most N jobs")
    reset.add_argument("--dry-run", action="store_true", help="say what would be reset; change nothing")
    reset.add_argument("--force", action="store_true", help="also live jobs (needs --older-than)")
    reset.add_argument("--reason", help="recorded on each job")
    operator_flag(reset)
    output_flags(reset)

    stop = commands.add(
        "stop-batch-cycle",
        cmd_stop_batch_cycle,
        "cancel a narrative job's batch checker(s) and its Anthropic batch",
        "repair",
        description="Cancel the checker(s) of a CREATE_NARRATIVE_BATCH job (found through "
        "ConversationIndex, never a scan), the parent itself if it has not finished, and the batch at "
        "Anthropic when ANTHROPIC_API_KEY is set (else the checker cancels it once it sees the request). "
        "JOB_ID may also name a checker.",
    )
    stop.add_argument("job_id", metavar="JOB_ID")
    stop.add_argument("--dry-run", action="store_true")
    operator_flag(stop)
    output_flags(stop)

    check = commands.add(
        "doctor",
        cmd_doctor,
        "check the queue's invariants; exit 3 when problems are found",
        "repair",
        description="Expired leases, PENDING past the SLA, malformed or invisible records (bad status "
        "case, missing created_at, empty index keys), retry counts above the max, checkers without a "
        "parent, finished narrative jobs without checker or result, tables that differ from the contract. "
        "Index queries only, unless --scan.",
    )
    check.add_argument(
        "--pending-sla", type=duration, default=duration("1h"), help="PENDING longer is a problem"
    )
    check.add_argument(
        "--window", type=duration, default=duration("24h"), help="narrative jobs checked back to"
    )
    check.add_argument("--max-items", type=bounded(int, 1), default=5000, help="records read per status")
    check.add_argument("--scan", action="store_true", help="also read the whole table (costs a full scan)")
    output_flags(check)
