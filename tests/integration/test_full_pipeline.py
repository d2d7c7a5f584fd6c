"""FULL_PIPELINE's command: the original mapping (DESIGN 2.6), the template override, progress lines."""

from __future__ import annotations

import json

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.handlers.base import Cancellation, JobContext
from delphi_jobs.handlers.full_pipeline import FullPipelineHandler, StepTracker, step_begun, steps_of
from delphi_jobs.logs import JobLog
from delphi_jobs.model import Job, Progress


def job(**changes: object) -> Job:
    return Job.from_item(producer_records.server_full_pipeline(36, "r_abc", **changes))


def test_default_command_is_the_original_mapping() -> None:
    argv = FullPipelineHandler().command(job(), "/app", None)
    assert argv == [
        "python",  # the app's interpreter, first on PATH, as the original poller ran it
        "/app/run_delphi.py",
        "--zid=36",
        "--include_moderation=False",
        "--exclude_comment_selections=True",
        "--rid=r_abc",
    ]


def test_booleans_from_strings_and_nested_config() -> None:
    config = {
        "stages": [{"stage": "X", "config": {"include_moderation": "true"}}],
        "include_moderation": False,
        "exclude_comment_selections": "False",
    }
    argv = FullPipelineHandler().command(job(job_config=json.dumps(config)), "/srv", None)
    assert "--include_moderation=True" in argv and "--exclude_comment_selections=False" in argv


def test_no_report_id_means_no_rid_flag() -> None:
    record = producer_records.server_full_pipeline(36)
    argv = FullPipelineHandler().command(Job.from_item(record), "/app", None)
    assert not any(a.startswith("--rid") for a in argv)


def test_a_template_report_id_is_the_zid_when_the_job_has_none() -> None:
    record = producer_records.server_full_pipeline(36)
    argv = FullPipelineHandler().command(Job.from_item(record), "/app", "run --rid {report_id}")
    assert argv == ["run", "--rid", "36"]


def test_template_is_split_like_a_shell_and_never_run_by_one() -> None:
    template = "python -m delphi_jobs pipeline --zid {zid} --rid {report_id} --note 'job {job_id}; rm -rf /'"
    argv = FullPipelineHandler().command(job(job_id="j-1"), "/app", template)
    assert argv == [
        "python",
        "-m",
        "delphi_jobs",
        "pipeline",
        "--zid",
        "36",
        "--rid",
        "r_abc",
        "--note",
        "job j-1; rm -rf /",
    ]


def test_validation_names_the_field() -> None:
    handler = FullPipelineHandler()
    assert handler.validate(job()) == []
    assert handler.validate(job(conversation_id="abc"))[0].startswith("conversation_id:")
    bad = job(job_config=json.dumps({"include_moderation": "sometimes"}))
    assert handler.validate(bad) == ["job_config.include_moderation: expected true or false, got 'sometimes'"]


def test_steps_follow_markers_and_the_original_step_lines() -> None:
    record = job(
        job_config=json.dumps({"stages": [{"stage": "PCA"}, {"stage": "UMAP"}, {"stage": "REPORT"}]})
    )
    assert steps_of(record) == ("PCA", "UMAP", "REPORT")
    assert steps_of(job()) == ("PCA", "UMAP", "REPORT"), "a record without stages gets the server's"
    assert step_begun("DELPHI_STEP UMAP", steps_of(record)) == "UMAP"
    assert step_begun("DELPHI_STEP NOT_A_STAGE", steps_of(record)) is None
    assert step_begun("\x1b[0;32mRunning math pipeline...\x1b[0m", steps_of(record)) == "PCA"
    assert step_begun("Creating visualizations with datamapplot...", steps_of(record)) == "REPORT"
    assert step_begun("an ordinary line", steps_of(record)) is None

    ctx = JobContext(record, Settings(), JobLog("j-1"), Cancellation(), lambda state: None)
    tracker = StepTracker(ctx, steps_of(record), 0)
    tracker.line("Running math pipeline...")
    tracker.line("pipeline: [ 20%] computing opinion groups")
    assert ctx.progress_snapshot() == Progress(1, 3, 20.0, "computing opinion groups", "PCA")
    tracker.line("DELPHI_STEP UMAP")
    assert ctx.progress_snapshot() == Progress(2, 3, 100 / 3, "", "UMAP") and tracker.done == 1
    assert not tracker.should_stop()
    ctx.request_pause("maintenance")
    tracker.line("an ordinary line")
    assert not tracker.should_stop(), "a pause waits for the next step boundary"
    tracker.line("DELPHI_STEP REPORT")
    assert tracker.should_stop() and tracker.paused_before == "REPORT" and tracker.done == 2
    assert "an ordinary line" in [e.message for e in ctx.log.snapshot()]
