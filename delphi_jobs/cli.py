"""The ``delphi-jobs`` command. Parses flags into Settings and hands over; no logic lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.dynamo import make_client
from delphi_jobs.tables import SchemaMismatch, ensure_tables, table_specs


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
