"""Benchmarks of the job daemon against DynamoDB Local: ``python -m bench NAME|all [--profile ci|full]``.

Each measures its own baseline in the same run (ratios survive a noisy machine) and prints JSON;
``python -m bench.render`` turns a result file into the tables of docs/performance.md. Not part of
the test suite; CI runs the ``ci`` profile as a smoke check.
"""
