"""The gate in front of every request: body size, Host, bearer token; and who is acting.

Pure ASGI middleware (no per-request thread or task), answering refusals in the API's error envelope.

- **Body size**: the body is read up to ``max_body`` bytes before the application sees it (declared
  or chunked alike); a larger one is answered 413 without reading further.
- **Token**: with tokens configured, every request needs ``Authorization: Bearer <secret>``, compared
  in constant time against every configured secret (no early exit that would time which one matched).
  Only the dashboard's static shell (``/`` and ``/static/``: the same files for everyone, no job data)
  is served without one, because a browser cannot attach a bearer token to a page navigation; the
  dashboard's script then sends the token, which the user types, with every API call.
- **Host**: without tokens the API is bound to loopback, and only requests naming a loopback host are
  served: a web page cannot then reach it through DNS rebinding (a hostile name resolved to 127.0.0.1).

Nothing here logs a header or a secret; a refusal says what was missing, never what was sent.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from delphi_jobs.api.errors import error_response
from delphi_jobs.config import ApiToken

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/",)
PUBLIC_PREFIXES = ("/static/",)
LOOPBACK_NAMES = ("localhost",)
TOKEN_LABEL = "token_label"
"""Where the gate leaves the label of the token that was presented (``request.state.token_label``)."""


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); any other name could resolve elsewhere."""
    name = host.lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8080`` -> ``::1``, ``localhost:80`` ->
    ``localhost``."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def match_token(presented: str, tokens: Sequence[ApiToken]) -> ApiToken | None:
    """The token whose secret equals ``presented``; every secret is compared, in constant time."""
    found: ApiToken | None = None
    given = presented.encode()
    for token in tokens:
        if hmac.compare_digest(given, token.secret.encode()):
            found = token
    return found


class Gate:
    def __init__(self, app: App, *, tokens: Sequence[ApiToken], max_body: int) -> None:
        self._app = app
        self._tokens = tuple(tokens)
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await self._read_body(headers, receive)
        if body is None:
            limit = self._max_body
            await error_response(
                413, "too_large", f"request body larger than {limit} bytes", hint="send less"
            )(scope, receive, send)
            return
        await self._app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Any:
        path = str(scope.get("path", ""))
        if not self._tokens:
            if not is_loopback(host_name(headers.get("host", ""))):
                return error_response(
                    400,
                    "bad_host",
                    "this API has no token, so it answers only requests addressed to a loopback host",
                    hint="use http://127.0.0.1:PORT or http://localhost:PORT, or set DELPHI_API_TOKEN",
                )
            return None
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        token = match_token(presented.strip(), self._tokens) if scheme.lower() == "bearer" else None
        if token is None:
            return error_response(
                401,
                "unauthorized",
                "a valid bearer token is required",
                hint="send Authorization: Bearer <token> (one of DELPHI_API_TOKEN)",
                headers={"WWW-Authenticate": 'Bearer realm="delphi-jobs"'},
            )
        scope.setdefault("state", {})[TOKEN_LABEL] = token.label
        return None

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the application sees an empty body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the buffered body over once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def acting_operator(token_label: str | None, named: str | None) -> str:
    """Who an action is recorded as (``by`` in the job's history): the name the client gives in
    ``X-Delphi-Operator`` and the label of the token it authenticated with, both when there are both
    (``alice via ops``), so a shared token still tells people apart and a name can never hide which
    credential was used; ``api`` when neither is known."""
    if named and token_label:
        return f"{named} via {token_label}"
    return named or token_label or "api"
