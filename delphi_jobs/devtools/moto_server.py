"""moto's DynamoDB server, in process, on 127.0.0.1 behind one global lock.

Without the lock moto can apply two conditional writes to the same item at once (DESIGN 6), which
would make every race test meaningless. The lock serialises requests the way DynamoDB serialises
writes to one item; moto's GSI queries are O(table size), so keep test tables small.

moto 5 also gets the item size limit wrong on UpdateItem: it caps at 405,000 bytes instead of
400 KiB, counts the value being replaced as well as its replacement, and applies the update in place
before finding the item too large, so a refused write is half applied. The server here counts the
way DynamoDB does and puts a refused item back as it was (DynamoDB writes are atomic).
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.dynamodb.exceptions import ItemSizeTooLarge, ItemSizeToUpdateTooLarge
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

from delphi_jobs.store import MAX_ITEM_BYTES

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Serialised:
    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            # Consume the body inside the lock: moto may do its work while the body is produced.
            return list(self._app(environ, start_response))


def _size(value: Any) -> int:
    return value.size() if isinstance(value, DynamoType) else len(str(value).encode())


def _set_attribute(self: LimitedSizeDict, key: str, value: Any) -> None:
    others = sum(len(name.encode()) + _size(old) for name, old in self.items() if name != key)
    if others + len(key.encode()) + _size(value) > MAX_ITEM_BYTES:
        raise ItemSizeTooLarge
    dict.__setitem__(self, key, value)


def _faithful_updates() -> None:
    original = DynamoDBBackend.update_item
    if getattr(original, "atomic", False):
        return
    LimitedSizeDict.__setitem__ = _set_attribute  # type: ignore[method-assign]

    @functools.wraps(original)
    def update_item(
        self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        table = self.get_table(table_name)
        item = table.get_item(*self.get_keys_value(table, key))
        before = copy.deepcopy(item.attrs) if item is not None else None
        try:
            return original(self, table_name, key, *args, **kwargs)
        except ItemSizeToUpdateTooLarge:
            if item is not None and before is not None:
                item.attrs = before
            raise

    update_item.atomic = True  # type: ignore[attr-defined]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request access lines would drown the test and demo output."""


class MotoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        _faithful_updates()
        app = _Serialised(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-server", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}"

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
