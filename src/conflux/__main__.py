"""``python -m conflux``: the same as the ``conflux`` command."""

from conflux.cli import run

run()
