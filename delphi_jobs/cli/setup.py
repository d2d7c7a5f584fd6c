"""setup commands: ``create-tables``, and trying the system out (``demo``, ``fake-anthropic``)."""

from __future__ import annotations

import argparse

from delphi_jobs.cli.common import OK, PROBLEMS, REFUSED, Registry, bounded, demo_extra, fail, settings
from delphi_jobs.config import Settings
from delphi_jobs.ops.context import admin_client
from delphi_jobs.tables import SchemaMismatch, ensure_tables, table_specs

DEMO_MIN_PARTICIPANTS = 20
DEMO_MIN_COMMENTS = 10
DEMO_MIN_SECONDS = 10.0


def cmd_create_tables(args: argparse.Namespace) -> int:
    built = settings(args)
    specs = table_specs(built, priority_index=args.with_priority_index)
    try:
        outcomes = ensure_tables(admin_client(built), specs, wait_seconds=args.wait_seconds)
    except SchemaMismatch as exc:
        return fail(str(exc), PROBLEMS)
    except TimeoutError as exc:
        return fail(
            f"{exc}: a new index on a large table takes a while to build (pollers use it once it is "
            "ACTIVE); run the same command again to go on waiting",
            REFUSED,
        )
    for outcome in outcomes:
        done = "created" if outcome.created else "exists, verified"
        added = "".join(f"; index {name} added online" for name in outcome.indexes_added)
        print(f"{outcome.name}: {done}{added}")
    return OK


def cmd_demo(args: argparse.Namespace) -> int:
    with demo_extra("demo"):
        from delphi_jobs.devtools.demo import DemoOptions, run_demo

    options = DemoOptions(
        participants=args.participants,
        comments=args.comments,
        seed=args.seed,
        keep_running=args.keep_running,
        real_anthropic=args.real_anthropic,
        timeout=args.timeout,
    )
    try:
        return run_demo(options, Settings.from_env(endpoint_url="")).exit_code
    except TimeoutError as exc:
        return fail(f"demo: {exc} within --timeout {args.timeout:g}s (raise it on a busy machine)", REFUSED)


def cmd_fake_anthropic(args: argparse.Namespace) -> int:
    with demo_extra("fake-anthropic"):
        from delphi_jobs.devtools.fake_anthropic import serve_forever

    serve_forever(args.host, args.port, args.end_after_seconds)
    return OK


def register(commands: Registry) -> None:
    create = commands.add(
        "create-tables", cmd_create_tables, "create or verify the Delphi tables (idempotent)", "setup"
    )
    create.add_argument(
        "--with-priority-index",
        action="store_true",
        help="also create the optional StatusPriorityIndex (status/priority), adding it online to an "
        "existing job table: high-priority jobs are then found whatever the backlog (docs/poller.md)",
    )
    create.add_argument(
        "--wait-seconds",
        type=bounded(float, 1.0),
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for tables and indexes to become ACTIVE (default 600)",
    )

    demo = commands.add(
        "demo",
        cmd_demo,
        "run the whole system on embedded servers with a generated conversation",
        "setup",
        description="Embedded DynamoDB and PostgreSQL, a generated Polis conversation, the loopback "
        "Anthropic fake: runs FULL_PIPELINE then a narrative report and shows what was stored.",
        connection=False,
    )
    demo.add_argument(
        "--participants", type=bounded(int, DEMO_MIN_PARTICIPANTS, 100_000), default=300, metavar="N"
    )
    demo.add_argument("--comments", type=bounded(int, DEMO_MIN_COMMENTS, 5_000), default=56, metavar="N")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--timeout",
        type=bounded(float, DEMO_MIN_SECONDS),
        default=110.0,
        metavar="SECONDS",
        help="give up after this many seconds",
    )
    demo.add_argument("--keep-running", action="store_true", help="keep the servers up afterwards")
    demo.add_argument(
        "--real-anthropic",
        action="store_true",
        help="use the real Anthropic API with ANTHROPIC_API_KEY (costs money) instead of the fake",
    )

    fake = commands.add(
        "fake-anthropic",
        cmd_fake_anthropic,
        "serve a loopback fake of the Anthropic Message Batches API (tests, offline demo)",
        "setup",
        description="A fake Message Batches API that the real anthropic SDK works against through "
        "ANTHROPIC_BASE_URL. Answers are generated from the prompts; no model is called.",
        connection=False,
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    fake.add_argument(
        "--end-after-seconds", type=float, default=2.0, help="how long a batch stays in_progress"
    )
