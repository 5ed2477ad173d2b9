"""Dossiers safe to share: trap addresses and local paths are redacted unless --no-redact; an
output folder that does not exist is refused, not created. Real data: the demo store (bundled
SpamAssassin sample, bundled 2008 RouteViews table)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from trapline.cli.main import cli
from trapline.export.redact import REDACTED, redact_headers, redact_path
from trapline.store.duckdb import open_store

ENV = {"TRAPLINE_POST_INGEST_STAGES": "trapline.pipeline.adapters.asn:asn_stage"}


def _run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], env=ENV)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, set[str]]:
    data = tmp_path_factory.mktemp("dossier") / "store"
    assert _run(data, "-q", "demo").exit_code == 0
    with open_store(data, read_only=True) as store:
        (asn,) = store.con.execute(
            "SELECT origin_asn FROM messages WHERE label = 'spam' AND origin_asn IS NOT NULL "
            "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        rcpts = {r[0].lower() for r in store.con.execute(
            "SELECT DISTINCT addr FROM recipients WHERE addr IS NOT NULL").fetchall()}  # fmt: skip
    names = data.parent / "my-private-folder" / "asnames.json"
    names.parent.mkdir()
    names.write_text(f'{{"{asn}": "A NAME FROM MY FILE"}}')
    assert _run(data, "routing", "import", str(names), "--as-of", "2002-08-01").exit_code == 0
    return data, f"AS{asn}", rcpts


def test_redacted_by_default(demo: tuple[Path, str, set[str]], tmp_path: Path) -> None:
    data, asn, rcpts = demo
    out = tmp_path / "d.html"
    result = _run(data, "dossier", asn, "--out", str(out))
    assert result.exit_code == 0, result.output
    for text in (out.read_text(), out.with_suffix(".md").read_text()):
        assert REDACTED in text
        found = {a.lower() for a in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text)}
        assert not found & rcpts, found & rcpts
        assert "my-private-folder" not in text and "asnames.json" in text
        for line in text.splitlines():
            if re.match(r"(To|Delivered-To|X-Original-To):", line):
                assert "@" not in line, line


def test_no_redact_keeps_everything(demo: tuple[Path, str, set[str]], tmp_path: Path) -> None:
    data, asn, rcpts = demo
    out = tmp_path / "d.html"
    assert _run(data, "dossier", asn, "--out", str(out), "--no-redact").exit_code == 0
    md = out.with_suffix(".md").read_text()
    assert REDACTED not in md and "my-private-folder" in md
    found = {a.lower() for a in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", md)}
    assert found & rcpts


def test_missing_output_folder_is_refused(demo: tuple[Path, str, set[str]], tmp_path: Path) -> None:
    data, asn, _ = demo
    result = _run(data, "dossier", asn, "--out", str(tmp_path / "no" / "such" / "d.html"))
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert not (tmp_path / "no").exists()


def test_redaction_rules() -> None:
    head = (
        "Received: from a by mx.example.org for\n <bob@victim.example>; Mon, 1 Jan 2001\n"
        "From: Spammer <sales@spam.example>\nTo: alice@traps.example.org,\n carol@x.example\n"
        "Subject: hi k3v9@traps.example.org\nReply-To: other@y.example"
    )
    got = redact_headers(head, ["dave@z.example"], ["traps.example.org"])
    assert "bob@" not in got and "alice@" not in got and "carol@" not in got
    assert "k3v9@" not in got  # on a trap domain, wherever it appears
    assert "sales@spam.example" in got and "other@y.example" in got  # the sender's side stays
    assert redact_path("/home/ana/feeds/drop.txt") == "drop.txt"
    assert redact_path("bundled") == "bundled"
