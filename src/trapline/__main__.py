"""``python -m trapline``: the same CLI as the ``trapline`` script, for checkouts without it."""

from trapline.cli.main import cli

cli(prog_name="trapline")
