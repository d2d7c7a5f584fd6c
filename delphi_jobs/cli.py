"""The ``delphi-jobs`` command. Parses flags into Settings and hands over; no logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from delphi_jobs import logs
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.handlers import default_registry
from delphi_jobs.poller import Poller
from delphi_jobs.states import Status
from delphi_jobs.tables import SchemaMismatch, ensure_tables, table_specs


class MissingExtra(Exception):
    """A command needs ``delphi_jobs.devtools``, whose packages come only with the ``demo`` extra."""


@contextmanager
def _demo_extra(command: str) -> Iterator[None]:
    """Wraps the lazy import of ``delphi_jobs.devtools`` (the daemon itself never imports it): a
    production install lacks its packages, and the operator needs the install command, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "delphi_jobs":
            raise  # a bug in this project, not a missing extra
        raise MissingExtra(
            f"'delphi-jobs {command}' needs the demo extra (module {exc.name!r} is not installed): "
            "run pip install 'delphi-jobs[demo]' (in a source checkout: pip install '.[demo]')"
        ) from None


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="DynamoDB endpoint (else DYNAMODB_ENDPOINT; empty means real AWS)",
    )
    parser.add_argument("--region", default=None, help="AWS region (else AWS_REGION, default us-east-1)")
    parser.add_argument(
        "--table-prefix", default=None, help="prefix for every table name (else DELPHI_TABLE_PREFIX)"
    )


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(
        endpoint_url=args.endpoint_url, region=args.region, table_prefix=args.table_prefix, **extra
    )


def cmd_create_tables(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        outcomes = ensure_tables(make_client(settings), table_specs(settings))
    except SchemaMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    for outcome in outcomes:
        print(f"{outcome.name}: {'created' if outcome.created else 'exists, verified'}")
    return 0


def _daemon_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (else LOG_LEVEL, INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="auto: JSON unless stdout is a terminal (else DELPHI_LOG_FORMAT)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=None,
        help="claim lease, renewed every third of it (else DELPHI_LEASE_SECONDS, 60)",
    )
    parser.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=None,
        help="on SIGTERM, how long running jobs may finish before being handed back (else 30)",
    )


def _daemon_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    settings = _settings(
        args,
        log_level=args.log_level.upper() if args.log_level else None,
        log_format=args.log_format,
        lease_seconds=args.lease_seconds,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        **extra,
    )
    logs.configure(settings.log_level, settings.log_format)
    return settings


def cmd_poll(args: argparse.Namespace) -> int:
    settings = _daemon_settings(args, poll_interval=args.interval, max_workers=args.max_workers)
    if not args.embedded:
        return _poll(settings, args)
    with _demo_extra("poll --embedded"):
        from delphi_jobs.devtools.embedded_servers import EmbeddedServers

    with EmbeddedServers(settings) as servers:
        for line in servers.describe():
            print(line, flush=True)
        return _poll(servers.settings, args)


def _poll(settings: Settings, args: argparse.Namespace) -> int:
    poller = Poller(
        settings, default_registry(settings), max_jobs=args.max_jobs, exit_when_idle=args.exit_when_idle
    )
    return poller.run()


def cmd_demo(args: argparse.Namespace) -> int:
    with _demo_extra("demo"):
        from delphi_jobs.devtools.demo import DemoOptions, run_demo

    options = DemoOptions(
        participants=args.participants,
        comments=args.comments,
        seed=args.seed,
        keep_running=args.keep_running,
        real_anthropic=args.real_anthropic,
        timeout=args.timeout,
    )
    return run_demo(options, Settings.from_env(endpoint_url="")).exit_code


def cmd_pipeline(args: argparse.Namespace) -> int:
    with _demo_extra("pipeline"):
        from delphi_jobs.devtools.pipeline.run import main as pipeline_main

    return pipeline_main(args.pipeline_args)


def cmd_run_job(args: argparse.Namespace) -> int:
    if args.log_level is None:
        args.log_level = "DEBUG"
    settings = _daemon_settings(args)
    result = Poller(settings, default_registry(settings)).run_one(args.job_id)
    if isinstance(result, str):
        print(f"error: {result}", file=sys.stderr)
        return 1
    print(f"job {result.job_id}: {result.status or 'outcome not written (lease lost)'}")
    return 0 if result.status in (Status.COMPLETED, Status.AWAITING_RECHECK) else 1


def cmd_fake_anthropic(args: argparse.Namespace) -> int:
    with _demo_extra("fake-anthropic"):
        from delphi_jobs.devtools.fake_anthropic import serve_forever

    serve_forever(args.host, args.port, args.end_after_seconds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="delphi-jobs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _connection_flags(sub)
        sub.set_defaults(handler=handler)
        return sub

    add("create-tables", cmd_create_tables, "create or verify the Delphi tables (idempotent)")

    poll = add("poll", cmd_poll, "run the job poller daemon")
    _daemon_flags(poll)
    poll.add_argument(
        "--interval", type=float, default=None, help="seconds between empty polls (else POLL_INTERVAL, 2)"
    )
    poll.add_argument("--max-workers", type=int, default=None, help="concurrent jobs (else MAX_WORKERS, 1)")
    poll.add_argument("--max-jobs", type=int, default=None, metavar="N", help="exit 0 after finishing N jobs")
    poll.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit 0 once no job is claimable and nothing is in flight",
    )
    poll.add_argument(
        "--embedded",
        action="store_true",
        help="start embedded DynamoDB (in memory only) and PostgreSQL servers in this process and poll them",
    )

    run_job = add("run-job", cmd_run_job, "claim and run one job in the foreground, output shown live")
    _daemon_flags(run_job)
    run_job.add_argument("job_id")

    demo = commands.add_parser(
        "demo",
        help="run the whole system on embedded servers with a generated conversation",
        description="Embedded DynamoDB and PostgreSQL, a generated Polis conversation, the loopback "
        "Anthropic fake: runs FULL_PIPELINE then a narrative report and shows what was stored.",
    )
    demo.add_argument("--participants", type=int, default=300)
    demo.add_argument("--comments", type=int, default=56)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--timeout", type=float, default=110.0, help="give up after this many seconds")
    demo.add_argument("--keep-running", action="store_true", help="keep the servers up afterwards")
    demo.add_argument(
        "--real-anthropic",
        action="store_true",
        help="use the real Anthropic API with ANTHROPIC_API_KEY (costs money) instead of the fake",
    )
    demo.set_defaults(handler=cmd_demo)

    pipeline = commands.add_parser(
        "pipeline",
        help="the built-in conversation pipeline (a FULL_PIPELINE command when run_delphi.py is absent)",
        add_help=False,
    )
    pipeline.set_defaults(handler=cmd_pipeline)

    fake = commands.add_parser(
        "fake-anthropic",
        help="serve a loopback fake of the Anthropic Message Batches API (tests, offline demo)",
        description="A fake Message Batches API that the real anthropic SDK works against through "
        "ANTHROPIC_BASE_URL. Answers are generated from the prompts; no model is called.",
    )
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    fake.add_argument(
        "--end-after-seconds", type=float, default=2.0, help="how long a batch stays in_progress"
    )
    fake.set_defaults(handler=cmd_fake_anthropic)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "pipeline":
        args.pipeline_args = extra  # the pipeline parses its own flags (and its own --help)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except MissingExtra as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
