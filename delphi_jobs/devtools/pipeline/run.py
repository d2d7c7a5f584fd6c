"""``delphi-jobs pipeline``: compute one conversation's opinion groups and topics and store them where
the narrative reports read them (the three topic tables in DynamoDB and, when told to, ``math_main`` in
PostgreSQL).

It is the FULL_PIPELINE command when no Delphi pipeline is installed, and behaves like the real one
where readers can tell: topic rows are keyed ``{DELPHI_JOB_ID}#{layer}#{cluster}`` (the report client
rebuilds topic section names from that), and the last line on stdout is ``Results stored in DynamoDB
for conversation {zid}`` (the client watches the pipeline job's log for it). ``math_main`` belongs to
the Polis math worker: it is written only with ``--write-math-main`` (the demo, which has no math
worker). Progress goes to a callback (and to stdout from the command line) as (step, overall fraction).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError

from delphi_jobs import polisdb
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.devtools.pipeline.polis_math import MathResult, NoVotesError, Vote, compute_math
from delphi_jobs.devtools.pipeline.topic_model import CommentText, comment_topics
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import format_timestamp, utcnow
from delphi_jobs.narrative.conversation import Group
from delphi_jobs.redact import scrub
from delphi_jobs.topic_tables import TopicStore

Progress = Callable[[str, float], None]

_COMMENTS = "SELECT tid, txt, mod FROM comments WHERE zid = %(zid)s ORDER BY tid"
_VOTES = """
    SELECT pid, tid, vote, modified
    FROM votes_latest_unique
    WHERE zid = %(zid)s AND vote IS NOT NULL
"""
_PREVIOUS_TICK = "SELECT data->'math_tick' FROM math_main WHERE zid = %(zid)s AND math_env = %(math_env)s"
_MATH_MAIN_COLUMNS = """
    SELECT column_name FROM information_schema.columns
    WHERE table_name = 'math_main' AND table_schema = current_schema()
"""


class PipelineError(RuntimeError):
    """The conversation cannot be processed; the message says why."""


@dataclass(frozen=True)
class PipelineSummary:
    zid: int
    report_id: str | None
    participants: int
    """Everyone who voted on a comment in the conversation (``n``)."""
    participants_in_groups: int
    """Participants with enough votes to be placed in a group (``in-conv``)."""
    comments: int
    """Comments in the math (voted on and not moderated out, ``n-cmts``)."""
    moderated_out: int
    votes: int
    groups: tuple[Group, ...]
    topics: int
    """Topic rows written (all layers)."""
    topic_layers: int
    math_tick: int
    seconds: float


@dataclass(frozen=True)
class _Conversation:
    comments: tuple[CommentText, ...]
    moderated_out: int
    votes: tuple[Vote, ...]
    last_vote_ms: int
    previous_tick: int


def run_pipeline(
    settings: Settings,
    zid: int,
    report_id: str | None = None,
    progress: Progress | None = None,
    *,
    write_math_main: bool = False,
) -> PipelineSummary:
    """Read the conversation, compute, replace the conversation's topics and, when told to, upsert
    ``math_main``. Topic keys carry DELPHI_JOB_ID, else a ``pipeline_run_`` id as the real pipeline's."""
    run_id = settings.pipeline_job_id or f"pipeline_run_{uuid.uuid4()}"
    notify = progress or (lambda step, fraction: None)
    started = time.monotonic()
    notify("reading comments and votes", 0.0)
    conversation = _read(settings, zid, report_id)
    notify("computing opinion groups", 0.2)
    try:
        result = compute_math(
            conversation.votes,
            (c.tid for c in conversation.comments),
            math_tick=conversation.previous_tick + 1,
        )
    except NoVotesError:
        raise PipelineError(f"conversation {zid} has no votes on its comments") from None
    notify("computing topics", 0.5)
    topics = comment_topics(conversation.comments, run_id=run_id, created_at=format_timestamp(utcnow()))
    if write_math_main:
        notify("writing math_main", 0.7)
        _write_math_main(settings, zid, result, conversation.last_vote_ms)
    notify("writing topics", 0.8)
    TopicStore(make_client(settings), settings).replace(str(zid), topics)
    summary = PipelineSummary(
        zid=zid,
        report_id=report_id,
        participants=int(result.data["n"]),
        participants_in_groups=len(result.data["in-conv"]),
        comments=int(result.data["n-cmts"]),
        moderated_out=conversation.moderated_out,
        votes=result.votes,
        groups=tuple(Group(g.group_id, len(g.pids)) for g in result.groups),
        topics=len(topics.names),
        topic_layers=len({n.layer_id for n in topics.names}),
        math_tick=int(result.data["math_tick"]),
        seconds=time.monotonic() - started,
    )
    notify("done", 1.0)
    return summary


def _read(settings: Settings, zid: int, report_id: str | None) -> _Conversation:
    conn = polisdb.connect(settings)
    try:
        with conn.cursor() as cur:
            params = {"zid": zid, "math_env": settings.math_env}
            cur.execute("SELECT 1 FROM conversations WHERE zid = %(zid)s", params)
            if cur.fetchone() is None:
                raise PipelineError(f"conversation {zid} not found")
            if report_id is not None:
                cur.execute("SELECT zid FROM reports WHERE report_id = %(rid)s", {"rid": report_id})
                row = cur.fetchone()
                if row is not None and int(row[0]) != zid:
                    raise PipelineError(f"report {report_id} belongs to conversation {row[0]}, not {zid}")
            cur.execute(_COMMENTS, params)
            rows = cur.fetchall()
            cur.execute(_VOTES, params)
            vote_rows = cur.fetchall()
            cur.execute(_PREVIOUS_TICK, params)
            tick = cur.fetchone()
    finally:
        conn.rollback()
        conn.close()
    comments = tuple(CommentText(int(tid), str(txt)) for tid, txt, mod in rows if int(mod) > -1)
    if not comments:
        raise PipelineError(f"conversation {zid} has no comments (moderated-out comments do not count)")
    return _Conversation(
        comments=comments,
        moderated_out=len(rows) - len(comments),
        votes=tuple(Vote(int(pid), int(tid), int(vote)) for pid, tid, vote, _ in vote_rows),
        last_vote_ms=max((int(m) for *_, m in vote_rows if m is not None), default=0),
        previous_tick=_previous_tick(tick[0] if tick else None),
    )


def _previous_tick(value: Any) -> int:
    """The last run's ``math_tick`` (jsonb decodes to int); 0 when there is none or it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _write_math_main(settings: Settings, zid: int, result: MathResult, last_vote_ms: int) -> None:
    """Upsert the row. A real Polis database also has NOT NULL ``last_vote_timestamp`` and a
    ``math_tick`` column; they are filled when the table has them."""
    values: dict[str, Any] = {
        "zid": zid,
        "math_env": settings.math_env,
        "data": json.dumps(result.data, separators=(",", ":")),
        "modified": int(time.time() * 1000),
        "last_vote_timestamp": last_vote_ms,
        "math_tick": int(result.data["math_tick"]),
    }
    conn = polisdb.connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(_MATH_MAIN_COLUMNS)
            present = {str(row[0]) for row in cur.fetchall()}
            columns = [name for name in values if name in present]
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in ("zid", "math_env"))
            cur.execute(
                f"INSERT INTO math_main ({', '.join(columns)}) "
                f"VALUES ({', '.join(f'%({c})s' for c in columns)}) "
                f"ON CONFLICT (zid, math_env) DO UPDATE SET {updates}",
                values,
            )
        conn.commit()
    finally:
        conn.close()


STAGE_OF_STEP = {"computing opinion groups": "PCA", "computing topics": "UMAP", "writing topics": "REPORT"}
"""The server's stages (job_config.stages) each step of ours belongs to."""


def _print_progress(step: str, fraction: float) -> None:
    """Progress lines, and a ``DELPHI_STEP`` marker where a stage begins (the poller's checkpoints)."""
    if step in STAGE_OF_STEP:
        print(f"DELPHI_STEP {STAGE_OF_STEP[step]}", flush=True)
    print(f"pipeline: [{fraction:4.0%}] {step}", flush=True)


def _describe(summary: PipelineSummary) -> str:
    sizes = ", ".join(str(g.members) for g in summary.groups)
    return (
        f"conversation {summary.zid}: {summary.participants} participants "
        f"({summary.participants_in_groups} in groups), {summary.comments} comments "
        f"({summary.moderated_out} moderated out), {summary.votes} votes; "
        f"{len(summary.groups)} opinion groups ({sizes}); {summary.topics} topics in "
        f"{summary.topic_layers} layers; math_tick {summary.math_tick}; {summary.seconds:.2f} s"
    )


PERMANENT_FAILURE = 2
"""Exit status when running again cannot help (no such conversation, nothing to compute, bad settings)."""
TRANSIENT_FAILURE = 1
"""Exit status when PostgreSQL or DynamoDB failed. The FULL_PIPELINE handler retries neither (a
script's own exit is final, as in the original): an operator retries the job."""


def main(argv: list[str] | None = None) -> int:
    """``delphi-jobs pipeline --zid N [--rid R]``: progress and a summary on stdout, errors on stderr."""
    parser = argparse.ArgumentParser(
        prog="delphi-jobs pipeline",
        description="Compute opinion groups and topics for one conversation (the built-in pipeline).",
    )
    parser.add_argument("--zid", type=int, required=True, help="conversation id")
    parser.add_argument("--rid", default=None, help="report id (checked against the reports table)")
    parser.add_argument(
        "--write-math-main",
        action="store_true",
        help="also upsert math_main (normally the Polis math worker's; the demo has none)",
    )
    args = parser.parse_args(argv)
    try:
        summary = run_pipeline(
            Settings.from_env(),
            args.zid,
            args.rid or None,
            _print_progress,
            write_math_main=args.write_math_main,
        )
    except (PipelineError, ConfigError, polisdb.DatabaseNotConfigured) as exc:
        print(scrub(f"pipeline failed: {exc}"), file=sys.stderr)
        return PERMANENT_FAILURE
    except psycopg2.ProgrammingError as exc:  # a malformed DATABASE_URL: running again cannot help
        print(scrub(f"pipeline failed: database setting: {str(exc).strip()}"), file=sys.stderr)
        return PERMANENT_FAILURE
    except psycopg2.Error as exc:
        print(scrub(f"pipeline failed: database error: {str(exc).strip()}"), file=sys.stderr)
        return TRANSIENT_FAILURE
    except (BotoCoreError, ClientError) as exc:
        print(scrub(f"pipeline failed writing topics: {exc}"), file=sys.stderr)
        return TRANSIENT_FAILURE
    print(f"pipeline: {_describe(summary)}", flush=True)
    print(f"Results stored in DynamoDB for conversation {summary.zid}", flush=True)  # the client waits for it
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
