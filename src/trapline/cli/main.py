"""The ``trapline`` command group; subcommands live in sibling modules, one area each."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import click

from trapline import __version__
from trapline.cli.common import AppContext
from trapline.config import load_config
from trapline.errors import TraplineError
from trapline.store.turns import set_policy

# Each module exposes ``commands``: a list of Click commands/groups to add. Order = --help order.
COMMAND_MODULES: tuple[str, ...] = (
    "trapline.cli.ingest",
    "trapline.cli.routing",
    "trapline.cli.traps",
    "trapline.cli.campaigns",
    "trapline.cli.export",
    "trapline.cli.dnsbl",
    "trapline.cli.web",
    "trapline.cli.config",
    "trapline.cli.timeline",
    "trapline.cli.spark",
    "trapline.cli.status",
)


class TraplineGroup(click.Group):
    """Turns anticipated TraplineErrors into one clear line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TraplineError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        except Exception as exc:
            # A damaged store, or an attached dataset whose object store is out of reach, fails
            # inside whichever query touches it, as a DuckDB error: report what and the way
            # back instead of a traceback.
            from trapline.store.damage import as_damage
            from trapline.store.duckdb import DB_FILENAME

            obj = ctx.find_object(AppContext)
            path = (obj.data_dir if obj else Path(".")) / DB_FILENAME
            from trapline.store.attached import as_unreachable

            failed = as_damage(exc, path) or as_unreachable(exc)
            if failed is None:
                raise
            click.secho(f"error: {failed}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=TraplineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trapline")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding trapline.duckdb and the raw archive [env TRAPLINE_DATA_DIR; default ./trapline-data].",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars or chatter; results and errors only."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="How long to wait for the store while another trapline process has its turn "
    "(-1 = as long as it takes) [env TRAPLINE_STORE_WAIT_S; default 600].",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, quiet: bool, wait_s: float | None) -> None:
    """Spam-trap and spam-infrastructure intelligence.

    Catch spam with traps, ingest mail archives, trace each message to the network that sent it,
    group it into campaigns and botnets, and publish what you find.

    Example: trapline ingest ./spam.mbox && trapline stats
    """
    # TRAPLINE_DATA_DIR is read with the other variables, so `config show` names its source.
    config = load_config({"data_dir": str(data_dir) if data_dir else None, "store_wait_s": wait_s})
    set_policy(
        wait_s=float(config.values["store_wait_s"]),
        who=f"trapline {ctx.invoked_subcommand or ''}".strip(),
        announce=(lambda _text: None) if quiet else (lambda text: click.echo(text, err=True)),
    )
    ctx.obj = AppContext(settings=config.values, quiet=quiet, config=config)


for _name in COMMAND_MODULES:
    for _command in importlib.import_module(_name).commands:
        cli.add_command(_command)


def _examples_verbatim(command: click.Command) -> None:
    """Mark every ``Example:`` paragraph not to be re-wrapped (Click's ``\\b``), so a long
    example prints on one line and pastes into a shell as it is."""
    if command.help:
        command.help = re.sub(r"(?m)^([ \t]*)(Example:)", "\\1\b\n\\1\\2", command.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _examples_verbatim(sub)


_examples_verbatim(cli)
