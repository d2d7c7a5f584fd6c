#!/usr/bin/env python3
"""reset_processing_jobs.py: the original operator script's name for ``delphi-jobs reset-stuck``.

Resets jobs stuck in PROCESSING (their poller died and no other poller reclaimed them) to FAILED, or
with ``--to pending`` back to the queue. Unlike the original script it has connection flags instead of
a hard-coded endpoint, ``--dry-run``, an age filter (``--older-than 1h``), filters by job type and
worker, and takes a live job only with ``--force``; each job records who reset it and why. Every flag
of ``delphi-jobs reset-stuck`` is accepted; ``--help`` lists them.
"""

import sys

from delphi_jobs.cli import main

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
    sys.exit(main(["reset-stuck", *sys.argv[1:]]))
