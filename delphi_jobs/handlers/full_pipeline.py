"""FULL_PIPELINE: run the Delphi pipeline for one conversation as an external command.

Faithful to the original poller's mapping: ``python {DELPHI_APP_PATH}/run_delphi.py --zid=Z
--include_moderation=B --exclude_comment_selections=B [--rid=R]``, with ``DELPHI_JOB_ID`` and
``DELPHI_REPORT_ID`` in the child's environment. ``DELPHI_PIPELINE_COMMAND`` replaces the command
with a template (placeholders ``{zid}``, ``{report_id}``, ``{job_id}``, ``{app}``), split like a shell
would but never run through one.

Which failures are retried (with backoff, while retry_count < max_retries): a non-zero exit (the
pipeline's database or network may be back next time) and death by a signal we did not send (e.g. the
kernel's OOM killer). Not retried: a timeout (it would time out again), exit code 2 (a usage error),
a command that cannot be started, and invalid job records.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable

from delphi_jobs.handlers.base import Completed, Failed, JobContext, Outcome, Stopped
from delphi_jobs.model import FULL_PIPELINE, Job, JobValidationError
from delphi_jobs.procgroup import run_group

PROGRESS_LINE = re.compile(r"\[\s*(\d{1,3})%\]\s*(.+)$")
"""A pipeline line like ``pipeline: [ 50%] computing topics`` is also recorded as the job's progress."""
USAGE_ERROR = 2
NOT_STARTED = 127
TAIL_LINES = 8


class FullPipelineHandler:
    job_type = FULL_PIPELINE
    state_type = None

    def validate(self, job: Job) -> list[str]:
        problems = []
        checks: list[Callable[[], object]] = [
            job.zid,
            lambda: job.config_bool("include_moderation", False),
            lambda: job.config_bool("exclude_comment_selections", True),
        ]
        for check in checks:
            try:
                check()
            except JobValidationError as exc:
                problems.append(str(exc))
        if job.timeout_seconds <= 0:
            problems.append(f"timeout_seconds: must be positive, got {job.timeout_seconds}")
        return problems

    def command(self, job: Job, app_path: str, template: str | None) -> list[str]:
        zid = job.zid()
        report_id = job.effective_report_id
        if template:
            values = {
                "{zid}": str(zid),
                "{report_id}": report_id or "",
                "{job_id}": job.job_id,
                "{app}": app_path,
            }
            argv = []
            for part in shlex.split(template):
                for placeholder, value in values.items():
                    part = part.replace(placeholder, value)
                argv.append(part)
            return argv
        argv = [
            sys.executable,
            os.path.join(app_path, "run_delphi.py"),
            f"--zid={zid}",
            f"--include_moderation={job.config_bool('include_moderation', False)}",
            f"--exclude_comment_selections={job.config_bool('exclude_comment_selections', True)}",
        ]
        if report_id:
            argv.append(f"--rid={report_id}")
        return argv

    @staticmethod
    def _output(ctx: JobContext, line: str) -> None:
        ctx.log.info(line)
        found = PROGRESS_LINE.search(line)
        if found:
            ctx.progress(found.group(2).strip(), min(1.0, int(found.group(1)) / 100))

    def run(self, ctx: JobContext) -> Outcome:
        if ctx.cancellation.is_set():  # e.g. a cancel requested before a shutdown handed the job back
            return Stopped("stopped before starting")
        job = ctx.job
        argv = self.command(job, ctx.settings.app_path, ctx.settings.pipeline_command)
        env = {
            **os.environ,
            "DELPHI_JOB_ID": job.job_id,
            "DELPHI_REPORT_ID": job.effective_report_id or str(job.zid()),
        }
        ctx.log.info(f"Running {shlex.join(argv)} (timeout {job.timeout_seconds}s)")
        ctx.progress("pipeline", 0.0)
        result = run_group(
            argv,
            env=env,
            timeout=job.timeout_seconds,
            on_stdout=lambda line: self._output(ctx, line),
            on_stderr=ctx.log.error,
            should_stop=ctx.cancellation.is_set,
            grace=ctx.settings.kill_grace_seconds,
        )
        if result.stopped:
            return Stopped(f"pipeline stopped after {result.duration:.1f}s")
        if result.timed_out:
            return Failed(
                f"timed out after {job.timeout_seconds}s (timeout_seconds); the process group was stopped",
                retryable=False,
            )
        code = result.exit_code
        if code == 0:
            ctx.progress("pipeline", 1.0)
            return Completed({"exit_code": 0, "duration_seconds": round(result.duration, 3)})
        tail = " | ".join(ctx.log.tail(TAIL_LINES))
        if code == NOT_STARTED:
            return Failed(f"pipeline command could not be started: {tail}", retryable=False)
        if code is not None and code > 128:
            reason = f"pipeline killed by signal {code - 128}"
        else:
            reason = f"pipeline exited with code {code}"
        return Failed(f"{reason}; last output: {tail}" if tail else reason, retryable=code != USAGE_ERROR)
