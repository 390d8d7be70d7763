"""``python -m harness``: the ``deeperbench`` command, for machines where the project is not pip-installed."""

from harness.cli import app

app()
