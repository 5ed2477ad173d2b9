"""``trapline config``: the effective settings and where each one came from."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from trapline.cli.common import AppContext, echo_json, json_option, pass_app

_out = Console(highlight=False, soft_wrap=True)
if not _out.is_terminal:
    _out.width = 160  # pipes and logs: one line per setting


@click.group("config")
def config() -> None:
    """Settings: defaults, trapline.toml, TRAPLINE_* variables and options.

    Example: trapline config show --json
    """


@config.command("show")
@json_option
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print every effective setting and where it came from (default, file, environment, flag).

    Example: TRAPLINE_BATCH_SIZE=500 trapline config show
    """
    rows = app.config.rows()
    if as_json:
        echo_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    table = Table("setting", "value", "source")
    table.columns[0].no_wrap = True
    for key, value, source in rows:
        table.add_row(key, json.dumps(value, default=str), source)
    _out.print(table)


commands: list[click.Command] = [config]
