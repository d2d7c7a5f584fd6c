"""Optional log of every DynamoDB call a process makes, for measuring a real poller from outside.

With ``DELPHI_REQUEST_LOG=PATH`` (``Settings.request_log``) every client from ``make_client`` appends
one line ``<unix time> <operation>`` per API call (before retries) to PATH. The benchmarks in
``bench/`` derive requests per job, idle requests per second and polls before a claim from it without
reaching into the poller's internals, which change. Off by default: then nothing is registered.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

_lock = threading.Lock()
_files: dict[str, TextIO] = {}


def attach(client: Any, path: str) -> None:
    """Log ``client``'s calls to ``path``; every client of the process shares one open file per path."""

    def record(model: Any, **_: Any) -> None:
        line = f"{time.time():.6f} {model.name}\n"
        with _lock:
            stream = _files.get(path)
            if stream is None:
                stream = _files[path] = open(path, "a", buffering=1, encoding="ascii")  # noqa: SIM115
            stream.write(line)

    client.meta.events.register("before-call.dynamodb", record)


def read(path: str) -> list[tuple[float, str]]:
    """The (time, operation) lines written so far; a half-written last line is left out."""
    calls = []
    with open(path, encoding="ascii") as stream:
        for line in stream:
            stamp, _, operation = line.partition(" ")
            if line.endswith("\n") and operation:
                calls.append((float(stamp), operation.strip()))
    return calls
