"""Makes the modules named in ``DELPHI_BLOCKED_MODULES`` (comma-separated) unimportable, as if they
were not installed, in a Python process started with this folder on ``PYTHONPATH``.

Python imports ``sitecustomize`` at start-up, so the finder is in place before any other import: it is
how the tests run a production install (no ``demo`` extra) inside the test environment, which has
every extra installed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = frozenset(filter(None, os.environ.get("DELPHI_BLOCKED_MODULES", "").split(",")))


class _Blocker:
    """First on ``sys.meta_path``: a blocked module and its submodules raise what a missing one would."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)", name=fullname)
        return None


sys.meta_path.insert(0, _Blocker())
