"""The CLI documents itself: every command has an example, and docs/cli.md matches --help."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import ROOT
from trapline.cli.docs import render, walk
from trapline.cli.main import cli

COMMANDS = [(" ".join(path), command) for path, command in walk(cli, ("trapline",))]


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_help_with_an_example(name: str, command: object) -> None:
    help_text = getattr(command, "help", None) or ""
    assert help_text.strip(), f"{name} has no help text"
    assert "Example:" in help_text, f"{name} help has no 'Example:' line"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_example_prints_on_one_line_to_paste_into_a_shell(name: str, command: object) -> None:
    example = next(
        line.strip()
        for line in (getattr(command, "help", None) or "").splitlines()
        if line.strip().startswith("Example:")
    )
    args = [*name.split()[1:], "--help"]
    shown = CliRunner().invoke(cli, args, terminal_width=80).output
    assert any(line.strip() == example for line in shown.splitlines()), (
        f"{name}: its example is re-wrapped in --help"
    )


def test_cli_reference_is_generated_from_help() -> None:
    checked_in = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert checked_in == render(), (
        "docs/cli.md is stale: run `python -m trapline.cli.docs > docs/cli.md`"
    )


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    blocks = readme.split("```")
    assert len(blocks) >= 3, "README must open with a code block"
    commands = [
        line for line in blocks[1].splitlines() if line and not line.startswith(("#", "bash", "sh"))
    ]
    assert len(commands) == 2, commands
    assert "trapline demo" in commands[0]
    assert commands[1] in ci.splitlines(), ".ci/run must run README command (2) verbatim"
