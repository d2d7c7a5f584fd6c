"""Operator actions, shared by every face of the operator tools: the ``delphi-jobs`` admin commands,
the HTTP API and the dashboard (``delphi_jobs.api``). One implementation serves all three.

Each action is a plain function that takes an ``OpsContext`` and returns a dataclass; nothing here
prints, parses flags or knows about exit codes or HTTP statuses. Failures an operator can act on are
``OpsError`` subclasses whose ``code`` each face maps to its own signal (an exit code, an HTTP status).
Reads go through the table's indexes only; a full Scan happens only where an action says so and the
caller asked for it explicitly (``doctor --scan``).
"""
