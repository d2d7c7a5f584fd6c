"""A tiny HTTP proxy in front of DynamoDB Local that answers chosen requests the way DynamoDB does when
it throttles: HTTP 400 with a ``ThrottlingException`` JSON body. A real protocol peer for botocore
(whose retry logic then runs exactly as against AWS), not a mock of our code.

Every request is recorded with botocore's invocation id and attempt number (``amz-sdk-invocation-id``,
``amz-sdk-request: attempt=N``), so a test can show that a throttled call was retried, and after how
long.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self, cast
from urllib.parse import urlsplit

THROTTLED_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}'
)


@dataclass(frozen=True)
class Request:
    """One request to the proxy."""

    at: float
    operation: str
    """``UpdateItem``, ``Query``, ...: the X-Amz-Target after the dot."""
    invocation: str
    """botocore's id of the call: the same on every attempt of one call."""
    attempt: int
    body: bytes


@dataclass(frozen=True)
class Seen:
    request: Request
    throttled: bool


Decide = Callable[[Request], bool]
"""Throttle this request?"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: ThrottlingProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Silent: the proxy's own record is ``ThrottlingProxy.seen``."""

    def do_POST(self) -> None:
        proxy = cast(_Server, self.server).proxy
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        operation = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        attempt = self.headers.get("amz-sdk-request", "attempt=1").partition("attempt=")[2].partition(";")[0]
        invocation = self.headers.get("amz-sdk-invocation-id", "")
        request = Request(time.monotonic(), operation, invocation, int(attempt or 1), body)
        throttled = proxy.decide(request)
        proxy.note(Seen(request, throttled))
        if throttled:
            self._reply(400, THROTTLED_BODY, [("x-amzn-RequestId", uuid.uuid4().hex)])
            return
        status, payload, headers = proxy.forward(self.path, dict(self.headers.items()), body)
        self._reply(status, payload, headers)

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        for name, value in headers:
            if name.lower() not in ("content-type", "content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ThrottlingProxy:
    def __init__(self, upstream: str, decide: Decide | None = None) -> None:
        self._upstream = urlsplit(upstream)
        self.decide: Decide = decide or (lambda request: False)
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="proxy")

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def note(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def forward(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        connection = http.client.HTTPConnection(str(self._upstream.hostname), self._upstream.port, timeout=30)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read(), response.getheaders()
        finally:
            connection.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
