"""Bind and run the API: refuse an unsafe bind before anything listens, then uvicorn on our socket.

The socket is bound here, not by uvicorn, so that the address actually bound (port 0 picks a free one)
is known and logged (``api.listening``) before the first request can arrive; tests and scripts read it.
uvicorn's own logging is off: requests are logged by ``AccessLog`` as structured lines, like the rest.
"""

from __future__ import annotations

import socket

import uvicorn
from botocore.exceptions import BotoCoreError, ClientError

from delphi_jobs.api.app import create_app
from delphi_jobs.api.security import is_loopback
from delphi_jobs.config import ConfigError, Settings
from delphi_jobs.logs import get_logger
from delphi_jobs.ops.context import OpsContext
from delphi_jobs.ops.errors import translate
from delphi_jobs.store import StoreError

_log = get_logger(component="api")


def check_bind(settings: Settings) -> None:
    """Anything but loopback is reachable by others: it needs a token (DELPHI_API_TOKEN)."""
    if not settings.api_tokens and not is_loopback(settings.api_host):
        raise ConfigError(
            f"refusing to serve on {settings.api_host} without a token: set DELPHI_API_TOKEN "
            "(LABEL:SECRET, at least 16 characters), or bind 127.0.0.1"
        )


def serve(settings: Settings) -> int:
    check_bind(settings)
    ctx = OpsContext.connect(settings)
    try:
        ctx.queue.ping()
    except (
        BotoCoreError,
        ClientError,
        StoreError,
    ) as exc:  # serve anyway: /healthz says 503 until DynamoDB is there
        error = translate(exc, settings, ctx.client)
        _log.warning("api.dynamodb_not_ready", code=error.code, message=error.message, hint=error.hint)
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    sock = socket.create_server((settings.api_host, settings.api_port), family=family)
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if family == socket.AF_INET6 else host}:{port}"
    _log.info(
        "api.listening",
        url=url,
        dashboard=f"{url}/",
        auth="bearer token" if settings.api_tokens else "none (loopback only)",
        tokens=[token.label for token in settings.api_tokens],
    )
    config = uvicorn.Config(
        create_app(settings, ctx),
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])
    _log.info("api.stopped", url=url)
    return 0
