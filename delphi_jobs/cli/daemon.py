"""daemon commands: ``poll`` (the poller), ``run-job`` (one job in the foreground), ``pipeline``.

The poller's modules are imported when a daemon command runs, not when the admin commands start: they
pull in the Anthropic SDK, which alone takes a second to load.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from delphi_jobs import logs
from delphi_jobs.cli.common import Registry, demo_extra, settings
from delphi_jobs.config import Settings, parse_names
from delphi_jobs.dynamo import make_client
from delphi_jobs.states import Status
from delphi_jobs.tables import ensure_tables, table_specs


def log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (else LOG_LEVEL, INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default=None,
        help="auto: JSON unless stdout is a terminal (else DELPHI_LOG_FORMAT)",
    )


def daemon_flags(parser: argparse.ArgumentParser) -> None:
    log_flags(parser)
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
        help="on SIGTERM, how long running jobs may finish before being handed back "
        "(else DELPHI_SHUTDOWN_GRACE_SECONDS, 30)",
    )


def logged_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings of a long-running command, whose log (stdout) is configured from them."""
    level = args.log_level.upper() if args.log_level else None
    built = settings(args, log_level=level, log_format=args.log_format, **extra)
    logs.configure(built.log_level, built.log_format)
    return built


def daemon_settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return logged_settings(
        args,
        lease_seconds=args.lease_seconds,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        **extra,
    )


EMBEDDED_REPORT_ID = "r_embedded"


def cmd_poll(args: argparse.Namespace) -> int:
    built = daemon_settings(
        args,
        poll_interval=args.interval,
        max_workers=args.max_workers,
        create_tables=True if args.create_tables else None,
        metrics_port=args.metrics_port,
        job_types=parse_names(args.job_types) if args.job_types else None,
    )
    if not args.embedded:
        return _poll(built, args)
    with demo_extra("poll --embedded"):
        from delphi_jobs.devtools.embedded_servers import EmbeddedServers

    with EmbeddedServers(built) as servers:
        sample = servers.load_conversation(report_id=EMBEDDED_REPORT_ID)
        for line in servers.describe():
            print(line, flush=True)
        submit = f"delphi-jobs submit --zid {sample.zid} --report-id {EMBEDDED_REPORT_ID}"
        print(
            f"sample conversation: zid {sample.zid} ({len(sample.comments)} comments); try: {submit}",
            flush=True,
        )
        return _poll(servers.settings, args)


def _poll(built: Settings, args: argparse.Namespace) -> int:
    from delphi_jobs.handlers import default_registry
    from delphi_jobs.poller import Poller

    if built.create_tables:
        outcomes = ensure_tables(make_client(built), table_specs(built))
        logs.get_logger(component="tables").info(
            "tables ready", created=[o.name for o in outcomes if o.created], verified=len(outcomes)
        )
    poller = Poller(
        built, default_registry(built), max_jobs=args.max_jobs, exit_when_idle=args.exit_when_idle
    )
    return poller.run()


def cmd_run_job(args: argparse.Namespace) -> int:
    from delphi_jobs.handlers import default_registry
    from delphi_jobs.poller import Poller

    if args.log_level is None:
        args.log_level = "DEBUG"
    built = daemon_settings(args)
    result = Poller(built, default_registry(built)).run_one(args.job_id)
    if isinstance(result, str):
        print(f"delphi-jobs: {result}", file=sys.stderr)
        return 1
    print(f"job {result.job_id}: {result.status or 'outcome not written (lease lost)'}")
    return 0 if result.status in (Status.COMPLETED, Status.AWAITING_RECHECK) else 1


def cmd_serve(args: argparse.Namespace) -> int:
    from delphi_jobs.api.server import serve  # FastAPI and uvicorn load only for this command

    built = logged_settings(
        args, api_host=args.host, api_port=args.port, api_max_body_bytes=args.max_body_bytes
    )
    return serve(built)


def cmd_pipeline(args: argparse.Namespace) -> int:
    with demo_extra("pipeline"):
        from delphi_jobs.devtools.pipeline.run import main as pipeline_main

    return pipeline_main(args.pipeline_args)


def register(commands: Registry) -> None:
    poll = commands.add("poll", cmd_poll, "run the job poller daemon", "daemon")
    daemon_flags(poll)
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
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics and /healthz on this port (else DELPHI_METRICS_PORT; none by default)",
    )
    poll.add_argument(
        "--job-types",
        default=None,
        metavar="T1,T2",
        help="the job types to serve (else DELPHI_JOB_TYPES; default: every type whose requirements are met)",
    )
    poll.add_argument(
        "--create-tables",
        action="store_true",
        help="create (or verify) the tables before polling (else DELPHI_CREATE_TABLES=1)",
    )
    poll.add_argument(
        "--embedded",
        action="store_true",
        help="start embedded DynamoDB (in memory only) and PostgreSQL servers in this process and poll them",
    )

    run_job = commands.add(
        "run-job", cmd_run_job, "claim and run one job in the foreground, output shown live", "daemon"
    )
    daemon_flags(run_job)
    run_job.add_argument("job_id")

    serve = commands.add(
        "serve",
        cmd_serve,
        "the HTTP jobs API and the web dashboard (docs/api.md)",
        "daemon",
        description="Serve the HTTP jobs API (OpenAPI at /openapi.json) and the dashboard at /. Binds "
        "127.0.0.1 unless told otherwise; any other address needs DELPHI_API_TOKEN (LABEL:SECRET, "
        "comma-separated for several; never a flag, so it stays out of process listings), which every "
        "API call must then send as Authorization: Bearer SECRET.",
    )
    serve.add_argument("--host", default=None, help="address to bind (else DELPHI_API_HOST, 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=None, help="port to bind, 0 for any free one (else DELPHI_API_PORT, 8080)"
    )
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        metavar="N",
        help="largest request body accepted (else DELPHI_API_MAX_BODY_BYTES, 65536)",
    )
    log_flags(serve)

    commands.add(
        "pipeline",
        cmd_pipeline,
        "the built-in conversation pipeline (a FULL_PIPELINE command when run_delphi.py is absent)",
        "daemon",
        connection=False,
        add_help=False,
    )
