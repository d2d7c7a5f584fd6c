#!/usr/bin/env python3
"""The poller under the name operators know: ``job_poller.py [--endpoint-url URL] [--region R]
[--interval S] [--max-workers N] [--log-level L] ...`` is ``delphi-jobs poll`` with the same flags."""

import sys

from delphi_jobs.cli import main

if __name__ == "__main__":
    sys.exit(main(["poll", *sys.argv[1:]]))
