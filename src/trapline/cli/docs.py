"""Render the CLI reference (docs/cli.md) from the commands' own ``--help``.

``python -m trapline.cli.docs > docs/cli.md`` regenerates it; tests/test_docs.py fails when the
checked-in file and the live help differ, so the reference cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Iterator

import click

from trapline.cli.main import cli


def walk(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Yield (path, command) for the command and every subcommand, depth first, sorted by name."""
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk(command.commands[name], (*path, name))


def render() -> str:
    """The Markdown reference: one section per command with its help text verbatim."""
    out = [
        "# CLI reference",
        "",
        "Generated from `--help` by `python -m trapline.cli.docs > docs/cli.md`; do not edit by hand.",
        "",
    ]
    for path, command in walk(cli, ("trapline",)):
        with click.Context(
            command,
            info_name=" ".join(path),
            terminal_width=100,
            help_option_names=["-h", "--help"],
        ) as ctx:
            text = command.get_help(ctx)
        out += [f"## `{' '.join(path)}`", "", "```", text.rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
