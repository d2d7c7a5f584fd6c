"""SIGTERM and SIGINT: the first stops claiming and gives running jobs a grace period, after which they
are stopped and handed back to PENDING without consuming an attempt (defect 4); a second hands them
back at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def on_stop_signals(handler: Callable[[], None]) -> None:
    """Call ``handler`` on SIGTERM and SIGINT (only the main thread may install signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        handler()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
