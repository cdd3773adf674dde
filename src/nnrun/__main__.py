"""`python -m nnrun ...` behaves as `nnrun ...`."""

from nnrun.cli import run

run()
