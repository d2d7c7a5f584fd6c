"""The ``delphi-jobs`` command: flags in, an operator action or the daemon out; no logic lives here.

One module per group of commands (daemon, inspect, act, repair, setup). ``main`` turns the known
failure families (bad configuration, DynamoDB unreachable or its tables missing, a refused action)
into one line on stderr and a documented exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from botocore.exceptions import BotoCoreError, ClientError

from delphi_jobs.cli import act, daemon, inspect, repair, setup
from delphi_jobs.cli.common import (
    EXIT_CODE_HELP,
    EXIT_CODES,
    GROUPS,
    OK,
    USAGE,
    MissingExtra,
    Parser,
    Registry,
    fail,
)
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.ops.context import admin_client
from delphi_jobs.ops.errors import OpsError, translate
from delphi_jobs.store import StoreError

INTERRUPTED = 130

ABOUT = """\
Operate the Delphi job queue of Polis: run the poller, look at jobs, act on them, repair what went
wrong. Every command takes the connection flags --endpoint-url, --region and --table-prefix (else
DYNAMODB_ENDPOINT, AWS_REGION, DELPHI_TABLE_PREFIX); inspect, act and repair commands print a table,
or JSON with --json. The runbook is docs/operations.md."""


def build_parser() -> Parser:
    parser = Parser(
        prog="delphi-jobs",
        usage="delphi-jobs [--version] COMMAND [options]   (delphi-jobs COMMAND --help for its options)",
        description=ABOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"delphi-jobs {version('delphi-jobs')}")
    subparsers = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help=argparse.SUPPRESS,
        parser_class=Parser,
        prog="delphi-jobs",
    )
    commands = Registry(subparsers)
    for group in (daemon, inspect, act, repair, setup):
        group.register(commands)
    lines = []
    for group_ in GROUPS:
        lines.append(f"{group_.name} ({group_.title}):")
        lines += [f"  {c.name:<18}{c.summary}" for c in commands.commands if c.group == group_.name]
    parser.epilog = "\n".join(lines) + "\n\n" + EXIT_CODE_HELP
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
        return fail(f"configuration error: {exc}", USAGE)
    except MissingExtra as exc:
        return fail(str(exc), USAGE)
    except OpsError as exc:
        return _report(exc)
    except (BotoCoreError, ClientError, StoreError) as exc:
        settings: Settings = getattr(args, "settings", None) or Settings()
        return _report(translate(exc, settings, admin_client(settings)))
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (| head): nothing left to say to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def _report(exc: OpsError) -> int:
    hint = f"; {exc.hint}" if exc.hint else ""
    return fail(f"{exc.message}{hint}", EXIT_CODES.get(exc.code, 1))


if __name__ == "__main__":
    sys.exit(main())
