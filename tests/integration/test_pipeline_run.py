"""run_pipeline and ``delphi-jobs pipeline`` on real servers: embedded PostgreSQL and moto's DynamoDB."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg2
import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools.pipeline.run import PipelineError, main, run_pipeline
from delphi_jobs.devtools.sample_conversation import SampleConversation, generate_sample, load_sample
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import parse_timestamp
from delphi_jobs.narrative.conversation import load_conversation
from delphi_jobs.topic_tables import TopicStore

ZID = 7
JOB = "0f8c2b1e-5d7a-4c3b-9e2f-1a2b3c4d5e6f"


@pytest.fixture
def pipeline_settings(moto_settings: Settings, pg_url: str) -> Settings:
    return dataclasses.replace(moto_settings, database_url=pg_url)


def _load(url: str, sample: SampleConversation, report_id: str | None = None) -> None:
    conn = psycopg2.connect(url)
    try:
        load_sample(conn, sample, report_id=report_id)
    finally:
        conn.close()


def _execute(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows
    finally:
        conn.close()


def test_run_pipeline_stores_math_main_and_topics(pipeline_settings: Settings, pg_url: str) -> None:
    sample = generate_sample(seed=1, participants=150, comments=30, moderated=3, zid=ZID)
    _load(pg_url, sample, report_id="r_seven")
    steps: list[tuple[str, float]] = []
    before = int(time.time() * 1000)

    settings = dataclasses.replace(pipeline_settings, pipeline_job_id=JOB)
    summary = run_pipeline(
        settings, ZID, "r_seven", progress=lambda s, f: steps.append((s, f)), write_math_main=True
    )

    assert steps[0] == ("reading comments and votes", 0.0) and steps[-1] == ("done", 1.0)
    assert [f for _, f in steps] == sorted(f for _, f in steps) and len(steps) == 6
    visible = [c.tid for c in sample.comments if c.mod > -1]
    assert summary.report_id == "r_seven"
    assert (summary.comments, summary.moderated_out, summary.participants) == (30, 3, 150)
    assert len(summary.groups) == 3
    assert sum(g.members for g in summary.groups) == summary.participants_in_groups == 150
    assert summary.votes == sum(1 for v in sample.latest_votes if v.tid in set(visible))
    assert summary.math_tick == 1 and summary.topic_layers == 2

    [(math_env, data, modified)] = _execute(
        pg_url, "SELECT math_env, data, modified FROM math_main WHERE zid = %s", (ZID,)
    )
    assert math_env == pipeline_settings.math_env == "prod"
    assert modified >= before
    assert data["tids"] == visible and data["n-cmts"] == 30 and data["n"] == 150
    assert set(data["group-votes"]) == {"0", "1", "2"}
    assert [data["group-votes"][str(g.group_id)]["n-members"] for g in summary.groups] == [
        g.members for g in summary.groups
    ]
    assert len(data["pca"]["comment-extremity"]) == 30 and data["math_tick"] == 1
    agree_on_first = sum(1 for v in sample.latest_votes if v.tid == visible[0] and v.vote == -1)
    assert sum(g["votes"][str(visible[0])]["A"] for g in data["group-votes"].values()) == agree_on_first

    topics = TopicStore(make_client(pipeline_settings), pipeline_settings).load(str(ZID))
    assert sorted(a.comment_id for a in topics.assignments) == visible
    assert all(len(a.clusters) == 2 for a in topics.assignments)
    assert len(topics.names) == len(topics.keywords) == summary.topics
    for name in topics.names:
        assert name.topic_key == f"{JOB}#{name.layer_id}#{name.cluster_id}"  # the real pipeline's key
        assert name.topic_name and name.model_name == "keywords"
        assert parse_timestamp(name.created_at) is not None
    for layer in (0, 1):
        rows = [k for k in topics.keywords if k.layer_id == layer]
        assert all(k.cluster_key == f"layer{layer}_{k.cluster_id}" for k in rows)
        assert sum(k.size for k in rows) == 30 and all(k.keywords for k in rows)
        in_layer = {a.clusters[layer] for a in topics.assignments}
        assert in_layer == {k.cluster_id for k in rows}


def test_the_narrative_reads_what_the_pipeline_wrote(pipeline_settings: Settings, pg_url: str) -> None:
    sample = generate_sample(seed=2, participants=90, comments=24, moderated=2, zid=ZID)
    _load(pg_url, sample)
    summary = run_pipeline(pipeline_settings, ZID, write_math_main=True)
    conn = psycopg2.connect(pg_url)
    try:
        report = load_conversation(conn, ZID, math_env=pipeline_settings.math_env)
    finally:
        conn.close()
    assert report.groups == summary.groups  # one record type on both sides
    assert len(report.comments) == 24
    assert all(c.extremity is not None and c.consensus is not None for c in report.comments)
    assert any(c.extremity is not None and c.extremity > 1.0 for c in report.comments)


def test_a_rerun_replaces_the_results(pipeline_settings: Settings, pg_url: str) -> None:
    sample = generate_sample(seed=3, participants=60, comments=20, moderated=0, zid=ZID)
    _load(pg_url, sample)
    run_pipeline(pipeline_settings, ZID, write_math_main=True)
    _execute(pg_url, "UPDATE comments SET mod = -1 WHERE zid = %s AND tid IN (0, 1, 2)", (ZID,))

    summary = run_pipeline(pipeline_settings, ZID, write_math_main=True)

    assert summary.math_tick == 2 and summary.moderated_out == 3
    [(data,)] = _execute(pg_url, "SELECT data FROM math_main WHERE zid = %s", (ZID,))
    assert data["math_tick"] == 2 and data["tids"] == list(range(3, 20))
    topics = TopicStore(make_client(pipeline_settings), pipeline_settings).load(str(ZID))
    assert sorted(a.comment_id for a in topics.assignments) == list(range(3, 20))
    assert len(topics.names) == summary.topics


def test_a_real_polis_math_main_gets_its_extra_columns(pipeline_settings: Settings, pg_url: str) -> None:
    """Polis's own math_main has a NOT NULL last_vote_timestamp and a math_tick the writer keeps."""
    _execute(
        pg_url,
        "ALTER TABLE math_main ALTER COLUMN last_vote_timestamp SET NOT NULL",
    )
    sample = generate_sample(seed=4, participants=40, comments=12, moderated=1, zid=ZID)
    _load(pg_url, sample)
    run_pipeline(pipeline_settings, ZID, write_math_main=True)
    run_pipeline(pipeline_settings, ZID, write_math_main=True)
    [(last_vote, tick)] = _execute(
        pg_url, "SELECT last_vote_timestamp, math_tick FROM math_main WHERE zid = %s", (ZID,)
    )
    assert last_vote == max(v.created for v in sample.latest_votes) and tick == 2


def test_conversations_that_cannot_be_processed_fail_clearly(
    pipeline_settings: Settings, pg_url: str
) -> None:
    with pytest.raises(PipelineError, match="conversation 5 not found"):
        run_pipeline(pipeline_settings, 5)

    _execute(pg_url, "INSERT INTO conversations (zid, topic) VALUES (5, 'empty'), (6, 'no votes')")
    _execute(pg_url, "INSERT INTO comments (tid, zid, pid, txt, mod) VALUES (0, 5, 1, 'Spam spam spam.', -1)")
    with pytest.raises(PipelineError, match="conversation 5 has no comments"):
        run_pipeline(pipeline_settings, 5)

    _execute(pg_url, "INSERT INTO comments (tid, zid, pid, txt) VALUES (0, 6, 1, 'Fix the roads.')")
    _execute(pg_url, "INSERT INTO votes_latest_unique (zid, pid, tid, vote) VALUES (5, 1, 0, -1)")
    with pytest.raises(PipelineError, match="conversation 6 has no votes"):
        run_pipeline(pipeline_settings, 6)

    _execute(pg_url, "INSERT INTO reports (report_id, zid) VALUES ('r_five', 5)")
    with pytest.raises(PipelineError, match="report r_five belongs to conversation 5, not 6"):
        run_pipeline(pipeline_settings, 6, "r_five")
    assert _execute(pg_url, "SELECT count(*) FROM math_main") == [(0,)]


def test_the_command_prints_progress_and_exits_non_zero_on_error(
    pipeline_settings: Settings,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert pipeline_settings.endpoint_url is not None
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setenv("DYNAMODB_ENDPOINT", pipeline_settings.endpoint_url)
    monkeypatch.setenv("DELPHI_TABLE_PREFIX", pipeline_settings.table_prefix)
    _load(pg_url, generate_sample(seed=5, participants=50, comments=15, moderated=1, zid=ZID))

    assert main(["--zid", str(ZID), "--rid", "r_cli"]) == 0
    out = capsys.readouterr().out
    assert "pipeline: [  0%] reading comments and votes" in out
    assert "pipeline: [100%] done" in out
    assert f"conversation {ZID}: 50 participants" in out and "opinion groups" in out
    assert (
        out.splitlines()[-1] == f"Results stored in DynamoDB for conversation {ZID}"
    )  # what the client waits for
    assert "writing math_main" not in out and _execute(pg_url, "SELECT count(*) FROM math_main") == [(0,)]

    assert main(["--zid", str(ZID), "--write-math-main"]) == 0  # the demo's command: no math worker there
    assert "writing math_main" in capsys.readouterr().out
    assert _execute(pg_url, "SELECT count(*) FROM math_main") == [(1,)]

    assert main(["--zid", str(ZID), "--rid", ""]) == 0  # the handler's template leaves an empty report id
    capsys.readouterr()

    assert main(["--zid", "999"]) == 2  # nothing to compute
    assert "pipeline failed: conversation 999 not found" in capsys.readouterr().err

    monkeypatch.setenv("DATABASE_URL", pg_url.replace("/polis_", "/missing_", 1))
    assert main(["--zid", str(ZID)]) == 1  # the database failed
    assert "pipeline failed: database error" in capsys.readouterr().err
