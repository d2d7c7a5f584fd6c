"""act commands: ``submit``, and ``cancel`` / ``retry`` / ``pause`` / ``resume`` JOB_ID..."""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

from rich.console import Console

from delphi_jobs.cli.common import (
    EXIT_CODES,
    OK,
    Registry,
    bounded,
    console,
    context,
    emit,
    fail,
    operator,
    operator_flag,
    output_flags,
)
from delphi_jobs.model import FULL_PIPELINE
from delphi_jobs.ops.errors import NotFound, Refused
from delphi_jobs.ops.jobs import SUBMITTABLE, SubmitRequest, act, parse_config, submit
from delphi_jobs.ops.views import JobSummary, jsonable


def cmd_submit(args: argparse.Namespace) -> int:
    request = SubmitRequest(
        zid=args.zid,
        job_type=args.job_type,
        report_id=args.report_id,
        priority=args.priority,
        timeout_seconds=args.timeout,
        config=parse_config(args.config) if args.config else None,
        by=operator(args),
    )
    emit(args, submit(context(args), request), _render_submitted)
    return OK


def _render_submitted(out: Console, job: JobSummary) -> None:
    out.print(job.job_id)


def cmd_action(action: str, args: argparse.Namespace) -> int:
    """Each job on its own: one refusal does not stop the others; the exit code is the worst.
    ``--json`` prints one object per job and line (JSON Lines), refusals included."""
    ctx = context(args)
    worst = OK
    for job_id in args.job_ids:
        try:
            result = act(ctx, action, job_id, by=operator(args), reason=getattr(args, "reason", None))
        except (NotFound, Refused) as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            worst = max(worst, fail(f"{exc.message}{hint}", EXIT_CODES[exc.code]))
            if args.json:
                _print_refusal(job_id, exc)
            continue
        if args.json:
            print(json.dumps(jsonable(result)))
        else:
            console().print(f"{result.job_id}: {result.message}")
    return worst


def _print_refusal(job_id: str, exc: NotFound | Refused) -> None:
    """``--json`` still prints one object per job, so scripts see which ones were refused."""
    body: dict[str, Any] = {
        "job_id": job_id,
        "error": {"code": exc.code, "message": exc.message, "hint": exc.hint},
    }
    if isinstance(exc, Refused):
        body["error"] |= {"status": exc.status, "allowed": list(exc.allowed)}
    print(json.dumps(body))


def register(commands: Registry) -> None:
    sub = commands.add(
        "submit",
        cmd_submit,
        "submit a job, written exactly as the Polis server writes it; prints its id",
        "act",
        description="Insert a job of the Polis server's own record shape (see docs/operations.md). "
        "--config takes settings as a JSON object, stored where the server stores them.",
    )
    sub.add_argument("--zid", type=bounded(int, 0), required=True, help="the conversation's zid")
    sub.add_argument("--job-type", choices=SUBMITTABLE, default=FULL_PIPELINE)
    sub.add_argument("--report-id", help="the report (required for CREATE_NARRATIVE_BATCH)")
    sub.add_argument("--priority", type=bounded(int, 0, 1000), default=None, help="higher runs first (50)")
    sub.add_argument(
        "--timeout", type=bounded(int, 1), default=None, metavar="SECONDS", help="wall-clock limit"
    )
    sub.add_argument("--config", metavar="JSON", help="e.g. '{\"include_moderation\": true}'")
    operator_flag(sub)
    output_flags(sub)

    helps = {
        "cancel": "cancel jobs: at once when PENDING or PAUSED, else asks the owner (or checker) to stop",
        "retry": "run FAILED jobs again with fresh attempts",
        "pause": "pause PENDING or waiting jobs; asks the owner of a running one to pause",
        "resume": "put PAUSED jobs back where they were paused from",
    }
    for action, summary in helps.items():
        parser = commands.add(action, functools.partial(cmd_action, action), summary, "act")
        parser.add_argument("job_ids", nargs="+", metavar="JOB_ID")
        if action in ("cancel", "pause"):
            parser.add_argument("--reason", help="recorded on the job")
        operator_flag(parser)
        output_flags(parser)
