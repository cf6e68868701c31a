"""``python -m prefect_sacred.cli``: the ``prefect-sacred`` console script."""

from prefect_sacred.cli.main import run

run()
