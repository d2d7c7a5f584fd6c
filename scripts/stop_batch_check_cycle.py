#!/usr/bin/env python3
"""stop_batch_check_cycle.py JOB_ID: the original operator script's name for
``delphi-jobs stop-batch-cycle``.

Stops a narrative report's batch check cycle: cancels the AWAITING_NARRATIVE_BATCH checker(s) of the
CREATE_NARRATIVE_BATCH job JOB_ID (found by index query; JOB_ID may also name a checker), the parent if
it has not finished, and the Anthropic batch when ANTHROPIC_API_KEY is set. ``--dry-run`` shows what it
would do. Every flag of ``delphi-jobs stop-batch-cycle`` is accepted; ``--help`` lists them.
"""

import sys

from delphi_jobs.cli import main

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
    sys.exit(main(["stop-batch-cycle", *sys.argv[1:]]))
