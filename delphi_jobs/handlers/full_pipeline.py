"""FULL_PIPELINE: run the Delphi pipeline for one conversation as an external command.

Faithful to the original poller's mapping: ``python run_delphi.py --zid=Z --include_moderation=B
--exclude_comment_selections=B [--rid=R]`` run in ``DELPHI_APP_PATH`` (run_delphi.py's own steps use
paths relative to it) with ``python`` taken from ``PATH`` (the app's interpreter, not ours: delphi-jobs
may live in a virtual environment of its own), and ``DELPHI_JOB_ID`` and ``DELPHI_REPORT_ID`` in the
child's environment. The child's standard output and standard error are both logged at INFO, as the
original's merged stream was. ``DELPHI_PIPELINE_COMMAND`` replaces the command with a template
(placeholders ``{zid}``, ``{report_id}``, ``{job_id}``, ``{app}``), split like a shell would but never
run through one, in the poller's working directory.

Every run starts by resetting the conversation's results (narrative reports included), so a failure is
retried only when running again can help (docs/compatibility.md, "Retries"): the command killed by a
signal nobody here sent (the kernel's OOM killer) goes back to PENDING with backoff while
``retry_count < max_retries``; a lost worker is the rescuer's, under the same budget. Final at once: the
script's own non-zero exit, a timeout, a command that cannot be started, an invalid record.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from delphi_jobs import faults
from delphi_jobs.handlers.base import Completed, Failed, JobContext, Outcome, Paused, Stopped
from delphi_jobs.model import FULL_PIPELINE, Job, JobValidationError, count_field, text_field
from delphi_jobs.procgroup import ProcessResult, run_group

PROGRESS_LINE = re.compile(r"\[\s*(\d{1,3})%\]\s*(.+)$")
"""A pipeline line like ``pipeline: [ 50%] computing topics`` is also recorded as the job's progress."""
STEP_MARKER = re.compile(r"^\s*DELPHI_STEP\s+(\S.*?)\s*$")
"""``DELPHI_STEP <name>``: the pipeline begins step ``name`` (a stage of ``job_config.stages``)."""
ORIGINAL_STEP_LINES = (
    ("Running math pipeline", "PCA"),
    ("Running UMAP narrative pipeline", "UMAP"),
    ("Creating visualizations", "REPORT"),
)
"""run_delphi.py's own step announcements and the server's stage each begins."""
ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
DEFAULT_STEPS = ("PCA", "UMAP", "REPORT")
"""The server's stages, when a record names none."""
RESUME_ENV = "DELPHI_RESUME_FROM_STEP"
PLACEHOLDER = re.compile(r"\{(zid|report_id|job_id|app)\}")
TAIL_LINES = 8
PYTHON = "python"
"""The original's interpreter: the first ``python`` on PATH (the app's), never ours."""


@dataclass(frozen=True)
class PipelineCheckpoint:
    """Kept on a paused FULL_PIPELINE job: where its next run starts."""

    resume_from_step: str | None = text_field()
    steps_done: int = count_field()


def steps_of(job: Job) -> tuple[str, ...]:
    """The job's steps: the names of ``job_config.stages`` (the server writes PCA, UMAP, REPORT)."""
    stages = job.job_config.get("stages")
    names = (
        [str(s.get("stage")) for s in stages if isinstance(s, Mapping) and s.get("stage")]
        if isinstance(stages, list)
        else []
    )
    return tuple(names) or DEFAULT_STEPS


def step_begun(line: str, steps: Sequence[str]) -> str | None:
    """The step a line of output announces, if it announces one of ``steps``."""
    text = ANSI_CODE.sub("", line)
    marker = STEP_MARKER.match(text)
    if marker:
        return marker.group(1) if marker.group(1) in steps else None
    for announcement, stage in ORIGINAL_STEP_LINES:
        if announcement in text and stage in steps:
            return stage
    return None


class StepTracker:
    """One run's view of its steps: progress as announced, and the checkpoint a pause stops at."""

    def __init__(self, ctx: JobContext, steps: Sequence[str], done: int) -> None:
        self.ctx = ctx
        self.steps = list(steps)
        self.done = done
        self.current = ""
        self.paused_before: str | None = None

    def line(self, line: str) -> None:
        faults.point("mid_run")
        ctx = self.ctx
        ctx.log.info(line)
        begun = step_begun(line, self.steps)
        if begun is not None:
            index = self.steps.index(begun)
            if self.current:
                self.done = max(self.done, index)
            if ctx.pause_requested() and self.paused_before is None and self.current:
                self.paused_before = begun  # a step boundary: the checkpoint the pause waited for
            self.current = begun
            ctx.step(index + 1, len(self.steps), begun)
            return
        found = PROGRESS_LINE.search(line)
        if found:
            ctx.report(float(min(100, int(found.group(1)))), found.group(2).strip())

    def should_stop(self) -> bool:
        return self.ctx.cancellation.is_set() or self.paused_before is not None


class FullPipelineHandler:
    job_type = FULL_PIPELINE
    state_type = PipelineCheckpoint

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
        """The command's argument list; run it in ``app_path`` unless ``template`` replaced it."""
        zid = job.zid()
        report_id = job.effective_report_id
        if template:
            values = {
                "zid": str(zid),
                "report_id": report_id or str(zid),
                "job_id": job.job_id,
                "app": app_path,
            }
            # One pass over the template: a value that itself contains "{job_id}" (a report_id is
            # whatever the producer wrote) is inserted as it is, never expanded again.
            return [
                PLACEHOLDER.sub(lambda found: values[found.group(1)], part) for part in shlex.split(template)
            ]
        argv = [
            PYTHON,
            os.path.join(app_path, "run_delphi.py"),
            f"--zid={zid}",
            f"--include_moderation={job.config_bool('include_moderation', False)}",
            f"--exclude_comment_selections={job.config_bool('exclude_comment_selections', True)}",
        ]
        if report_id:
            argv.append(f"--rid={report_id}")
        return argv

    def run(self, ctx: JobContext) -> Outcome:
        if ctx.cancellation.is_set():  # e.g. a cancel requested before a shutdown handed the job back
            return Stopped("stopped before starting")
        job = ctx.job
        template, app_path = ctx.settings.pipeline_command, ctx.settings.app_path
        if not template and not os.path.isdir(app_path):
            return Failed(f"DELPHI_APP_PATH: {app_path} is not a directory; run_delphi.py cannot run there")
        argv = self.command(job, app_path, template)
        checkpoint: PipelineCheckpoint = ctx.state
        env = {
            **os.environ,
            "DELPHI_JOB_ID": job.job_id,
            "DELPHI_REPORT_ID": job.effective_report_id or str(job.zid()),
        }
        if checkpoint.resume_from_step:
            env[RESUME_ENV] = checkpoint.resume_from_step
            ctx.log.info(
                f"resuming from step {checkpoint.resume_from_step} ({RESUME_ENV} is set; a command that "
                "cannot skip steps runs them all again)"
            )
        ctx.log.info(f"Running {shlex.join(argv)} (timeout {job.timeout_seconds}s)")
        steps = steps_of(job)
        run = StepTracker(ctx, steps, checkpoint.steps_done)
        ctx.step(1, len(steps), steps[0], "starting")
        result = run_group(
            argv,
            env=env,
            timeout=job.timeout_seconds,
            on_stdout=run.line,
            on_stderr=run.line,
            should_stop=run.should_stop,
            grace=ctx.settings.kill_grace_seconds,
            cwd=None if template else app_path,
        )
        if run.paused_before is not None and result.stopped:
            ctx.log.warning(f"paused before step {run.paused_before} ({run.done} of {len(steps)} done)")
            return Paused(
                PipelineCheckpoint(run.paused_before, run.done),
                note=f"paused before step {run.paused_before}",
            )
        return self._outcome(ctx, result)

    @staticmethod
    def _outcome(ctx: JobContext, result: ProcessResult) -> Outcome:
        gone = result.tree_gone
        if result.stopped:
            return Stopped(f"pipeline stopped after {result.duration:.1f}s", process_exit_confirmed=gone)
        if result.timed_out:
            return Failed(
                f"timed out after {ctx.job.timeout_seconds}s (timeout_seconds); "
                "the process group was stopped",
                process_exit_confirmed=gone,
            )
        if result.exit_code == 0:
            return Completed(
                {"exit_code": 0, "duration_seconds": round(result.duration, 3)},
                state=PipelineCheckpoint(),
                process_exit_confirmed=gone,
            )
        tail = " | ".join(ctx.log.tail(TAIL_LINES))
        if not result.started:
            return Failed(f"pipeline command could not be started: {tail}", process_exit_confirmed=gone)
        if result.killed_by is not None:
            reason = f"pipeline killed by signal {_signal_name(result.killed_by)}, not sent by this poller"
            retryable = True
        else:
            reason, retryable = f"pipeline exited with code {result.exit_code}", False
        return Failed(
            f"{reason}; last output: {tail}" if tail else reason,
            retryable=retryable,
            process_exit_confirmed=gone,
        )


def _signal_name(number: int) -> str:
    try:
        return f"{number} ({signal.Signals(number).name})"
    except ValueError:
        return str(number)
