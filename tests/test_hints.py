"""Say why it is empty: hints and usage errors instead of silent empty tables or new stores.
Real data: SpamAssassin 2002 spam."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import shared
from trapline.cli.main import cli

ENV = {"TRAPLINE_POST_INGEST_STAGES": ""}


def _run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], env=ENV)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("hints") / "s"
    spam = shared("mail", "spamassassin-2002", "spam")
    assert _run(data, "-q", "ingest", str(spam)).exit_code == 0
    return data


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("campaigns",),
        ("botnets",),
        ("networks",),
        ("routing", "list"),
        ("routing", "lookup", "8.8.8.8"),
        ("dossier", "AS1"),
        ("analyze", "campaigns"),
        ("show", "abcd"),
        ("query", "select 1"),
        ("reparse",),
    ],
)
def test_read_commands_never_create_a_store(tmp_path: Path, args: tuple[str, ...]) -> None:
    missing = tmp_path / "nowhere"
    result = _run(missing, *args)
    assert result.exit_code == 1, result.output
    assert "no store at" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not missing.exists()


def test_before_the_analyses(store: Path) -> None:
    camps = _run(store, "campaigns")
    assert camps.exit_code == 0 and camps.stdout == ""
    assert "hint: no campaigns yet: run `trapline analyze campaigns`" in camps.stderr
    bots = _run(store, "botnets")
    assert bots.stdout == "" and "run `trapline analyze campaigns`, then" in bots.stderr
    early = _run(store, "analyze", "botnets")
    assert early.exit_code == 1 and "run `trapline analyze campaigns` first" in early.stderr
    nets = _run(store, "networks")
    assert nets.stdout == "" and "`trapline routing import FILE`" in nets.stderr


def test_after_the_analyses_an_empty_window_says_so(store: Path) -> None:
    assert _run(store, "analyze", "campaigns").exit_code == 0
    empty = _run(store, "campaigns", "--since", "2030-01-01")
    assert empty.stdout == "" and "no campaign matches" in empty.stderr
    as_json = _run(store, "campaigns", "--json", "--since", "2030-01-01")
    assert as_json.output.strip() == "[]"  # machine output stays pure JSON
    assert "table" not in _run(store, "campaigns").stderr


@pytest.mark.parametrize("cmd", [("campaigns",), ("networks",), ("dossier", "AS1")])
def test_inverted_window_is_a_usage_error(store: Path, cmd: tuple[str, ...]) -> None:
    result = _run(store, *cmd, "--since", "2002-09-01", "--until", "2002-08-01")
    assert result.exit_code == 2 and "swap them" in result.stderr


def test_quiet_silences_notes(tmp_path: Path) -> None:
    spam = shared("mail", "spamassassin-2002", "spam")
    env = {"TRAPLINE_POST_INGEST_STAGES": "trapline.pipeline.adapters.asn:asn_stage"}
    loud = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path / "a"), "ingest", str(spam)], env=env
    )
    assert "note:" in loud.stderr  # the ASN stage has no routing table
    quiet = CliRunner().invoke(
        cli, ["--data-dir", str(tmp_path / "b"), "-q", "ingest", str(spam)], env=env
    )
    assert quiet.exit_code == 0 and "note:" not in quiet.stderr
