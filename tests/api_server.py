"""``delphi-jobs serve`` as a real process against a test's tables: the API is tested over HTTP, as
its clients use it, and its whole output is kept (to check what it logs, and what it never logs)."""

from __future__ import annotations

import json
import subprocess
import threading
from types import TracebackType
from typing import Any

import requests

from delphi_jobs.config import Settings
from tests.pollers import SCRIPT, command_env


class ApiServer:
    def __init__(self, settings: Settings, *flags: str, token: str | None = None, **env: str) -> None:
        self.environment = command_env() | {
            "DYNAMODB_ENDPOINT": str(settings.endpoint_url),
            "AWS_REGION": settings.region,
            "DELPHI_TABLE_PREFIX": settings.table_prefix,
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        if token is not None:
            self.environment["DELPHI_API_TOKEN"] = token
        self.argv = [str(SCRIPT), "serve", "--port", "0", "--log-format", "json", *flags]
        self.settings = settings
        self.lines: list[str] = []
        self.url = ""
        self._process: subprocess.Popen[str] | None = None
        self._listening = threading.Event()

    def __enter__(self) -> ApiServer:
        self._process = subprocess.Popen(  # noqa: S603
            self.argv, env=self.environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(60) or not self.url:
            self.stop()
            raise AssertionError("serve did not start:\n" + self.output)
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line)
            if '"api.listening"' in line:
                self.url = json.loads(line)["url"]
                self._listening.set()
        self._listening.set()  # ended without listening

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The structured log lines of one event (JSON lines; job lines and others are skipped)."""
        found = []
        for line in self.lines:
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.url + path, **kwargs)
