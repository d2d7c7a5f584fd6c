"""What every command shares: the parser that fails in one line, connection flags, ``--json`` and
``--by``, durations, exit codes, and printing a result as a table or as JSON."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from rich.console import Console

from delphi_jobs import logs
from delphi_jobs.config import Settings
from delphi_jobs.model import JobValidationError, parse_timestamp, utcnow
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.views import jsonable

OK = 0
REFUSED = 1
USAGE = 2
PROBLEMS = 3
UNAVAILABLE = 4

EXIT_CODES = {
    "not_found": REFUSED,
    "refused": REFUSED,
    "invalid": USAGE,
    "unavailable": UNAVAILABLE,
    "table_missing": UNAVAILABLE,
    "dynamodb": UNAVAILABLE,
    "busy": REFUSED,
}
"""OpsError.code -> exit code."""

EXIT_CODE_HELP = (
    "exit codes: 0 ok, 1 refused or not found, 2 usage or configuration error, 3 problems found "
    "(doctor), 4 DynamoDB unreachable, refusing, or its tables missing"
)

Handler = Callable[[argparse.Namespace], int]


class MissingExtra(Exception):
    """A command needs ``delphi_jobs.devtools``, whose packages come only with the ``demo`` extra."""


@contextmanager
def demo_extra(command: str) -> Iterator[None]:
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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), never the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Group:
    name: str
    title: str


GROUPS = (
    Group("daemon", "run jobs"),
    Group("inspect", "look at the queue"),
    Group("act", "submit and steer jobs"),
    Group("repair", "fix what went wrong"),
    Group("setup", "tables, trying it out"),
)


@dataclass
class Command:
    name: str
    group: str
    summary: str


class Registry:
    """Adds sub-commands with their group, so the top-level help lists them by group."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self.commands: list[Command] = []

    def add(
        self,
        name: str,
        handler: Handler,
        summary: str,
        group: str,
        *,
        description: str | None = None,
        connection: bool = True,
        add_help: bool = True,
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = self._subparsers.add_parser(
            name,
            help=summary,
            description=description or summary,
            epilog=EXIT_CODE_HELP if connection else None,
            add_help=add_help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if connection:
            connection_flags(sub)
        sub.set_defaults(handler=handler)
        self.commands.append(Command(name, group, summary))
        return sub


def connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--endpoint-url",
        default=None,
        help="DynamoDB endpoint (else DYNAMODB_ENDPOINT; empty means real AWS)",
    )
    parser.add_argument("--region", default=None, help="AWS region (else AWS_REGION, default us-east-1)")
    parser.add_argument(
        "--table-prefix", default=None, help="prefix for every table name (else DELPHI_TABLE_PREFIX)"
    )


def output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")


def operator_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by",
        default=None,
        metavar="NAME",
        help="who is acting, recorded on the job (default: your OS user)",
    )


def operator(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "operator"


def settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment and the connection flags; kept on ``args`` for error messages."""
    built = Settings.from_env(
        endpoint_url=args.endpoint_url, region=args.region, table_prefix=args.table_prefix, **extra
    )
    args.settings = built
    return built


def context(args: argparse.Namespace) -> OpsContext:
    """The operator layer, its log (warnings and errors only; every change is in the job's history)
    on stderr, so that stdout holds only the result."""
    logs.configure("WARNING", stream=sys.stderr)
    return OpsContext.connect(settings(args))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d``."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration such as 30s, 15m, 1h or 2d: {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def moment(text: str) -> datetime:
    """An ISO-8601 time, or a duration meaning that long ago."""
    if _DURATION.match(text):
        return utcnow() - duration(text)
    try:
        parsed = parse_timestamp(text, "time")
    except JobValidationError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or a duration such as 1h: {text!r}")
    return parsed


def bounded(kind: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type that also checks a range, saying it in the message."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (high is not None and value > high):
            limits = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise argparse.ArgumentTypeError(f"must be {limits}, got {text}")
        return value

    return parse


def console() -> Console:
    """Tables on stdout; wide enough not to wrap job ids when piped to a file or a pager."""
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=160)
    return out


def emit(args: argparse.Namespace, result: Any, render: Callable[[Console, Any], None]) -> None:
    """``--json``: the result as JSON; else the command's table."""
    if getattr(args, "json", False):
        print(json.dumps(jsonable(result), indent=2, ensure_ascii=False))
    else:
        render(console(), result)


def age(seconds: float | None) -> str:
    """Seconds as an operator reads them: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "-"
    whole = int(max(0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def when(moment_: datetime | None) -> str:
    return f"{moment_:%Y-%m-%d %H:%M:%S}" if moment_ else "-"


def fail(message: str, code: int) -> int:
    print(f"delphi-jobs: {message}", file=sys.stderr)
    return code
