import sys

from delphi_jobs.cli import main

sys.exit(main())
