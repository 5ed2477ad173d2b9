"""`trapline reparse`: the archive parsed again with the current trust set equals a fresh ingest.

Real mail: SpamAssassin 2002 spam and hard ham; the collector's own relays (mail.webnote.net,
213.105.180.140) are public addresses, so trusting them moves many origins (see pipeline/demo.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import shared
from trapline.cli.main import cli
from trapline.store.duckdb import open_store

ENV = {"TRAPLINE_POST_INGEST_STAGES": ""}
RELAYS = ("--trust", "mail.webnote.net", "--trust", "213.105.180.140")


def _run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], env=ENV)


def _copy(folder: Path, dest: Path, n: int) -> Path:
    dest.mkdir(parents=True)
    for p in sorted(folder.iterdir())[:n]:
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _origins(data_dir: Path) -> dict[str, tuple[str | None, str]]:
    with open_store(data_dir, read_only=True) as store:
        rows = store.con.execute("SELECT id, origin_ip, label FROM messages").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.fixture(scope="module")
def mail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("reparse")
    corpus = shared("mail", "spamassassin-2002")
    return _copy(corpus / "spam", base / "spam", 120), _copy(corpus / "hard_ham", base / "ham", 30)


def test_reparse_with_new_trust_equals_a_fresh_ingest(
    mail: tuple[Path, Path], tmp_path: Path
) -> None:
    spam, ham = mail
    old = tmp_path / "old"
    assert _run(old, "-q", "ingest", str(spam)).exit_code == 0
    assert _run(old, "-q", "ingest", "--label", "ham", str(ham)).exit_code == 0
    before = _origins(old)
    assert _run(old, "analyze", "campaigns").exit_code == 0

    # Known bytes with another trust set: said, and the command named; nothing re-parsed.
    again = _run(old, "ingest", *RELAYS, str(spam))
    notes = [line for line in again.stderr.splitlines() if "another --trust set" in line]
    assert len(notes) == 1 and "`trapline reparse`" in notes[0]
    assert _origins(old) == before

    result = _run(old, "reparse", *RELAYS)
    assert result.exit_code == 0, result.output
    assert "re-parsed 150 of 150 selected messages: 150 parsed" in result.stderr
    assert "campaigns rebuilt" in result.stderr
    fresh = tmp_path / "fresh"
    assert _run(fresh, "-q", "ingest", *RELAYS, str(spam)).exit_code == 0
    assert _run(fresh, "-q", "ingest", "--label", "ham", *RELAYS, str(ham)).exit_code == 0
    after = _origins(old)
    assert after == _origins(fresh)  # origins and labels as a fresh ingest gives them
    moved = sum(1 for mid in after if after[mid][0] != before[mid][0])
    assert moved >= 3, moved  # 5 of these 120 were first seen by the collector's relays
    # Derived rows were rebuilt, not duplicated: one signature and one hop set per message.
    with open_store(old, read_only=True) as a, open_store(fresh, read_only=True) as b:
        for sql in (
            "SELECT count(*) FROM signatures",
            "SELECT count(*) FROM hops",
            "SELECT count(*) FROM urls",
            "SELECT count(*) FROM hops WHERE trusted",
        ):
            assert a.con.execute(sql).fetchall() == b.con.execute(sql).fetchall(), sql
        clustered = a.con.execute(
            "SELECT count(*) FROM messages WHERE campaign_id IS NOT NULL AND label = 'spam'"
        ).fetchall()[0][0]
    assert clustered == 120
    # The same trust set again: no note.
    quiet = _run(old, "ingest", *RELAYS, str(spam))
    assert "another --trust set" not in quiet.stderr


def test_reparse_selects_by_source_date_and_query(mail: tuple[Path, Path], tmp_path: Path) -> None:
    spam, ham = mail
    data = tmp_path / "s"
    assert _run(data, "-q", "ingest", str(spam), str(ham)).exit_code == 0
    by_source = _run(data, "reparse", "--source", str(ham))
    assert "re-parsed 30 of 30 selected" in by_source.stderr, by_source.output
    rows = json.loads(
        _run(data, "query", "select count(*) AS n from messages where received_at < "
             "'2002-08-01'", "--json").stdout
    )  # fmt: skip
    by_date = _run(data, "reparse", "--until", "2002-07-31")
    assert f"re-parsed {rows[0]['n']} of {rows[0]['n']} selected" in by_date.stderr
    by_query = _run(data, "reparse", "--where", "n_attachments > 0")
    assert by_query.exit_code == 0 and "re-parsed" in by_query.stderr
    assert len(_origins(data)) == 150


def test_reparse_says_what_is_wrong(mail: tuple[Path, Path], tmp_path: Path) -> None:
    spam, _ = mail
    missing = _run(tmp_path / "none", "reparse")
    assert missing.exit_code == 1 and "no store at" in missing.stderr
    assert not (tmp_path / "none").exists()
    data = tmp_path / "s"
    assert _run(data, "-q", "ingest", str(spam)).exit_code == 0
    inverted = _run(data, "reparse", "--since", "2002-09-01", "--until", "2002-08-01")
    assert inverted.exit_code == 1 and "swap them" in inverted.stderr
    nothing = _run(data, "reparse", "--source", "/no/such/folder")
    assert nothing.exit_code == 1 and "no stored message matches" in nothing.stderr
    two = _run(data, "reparse", "--where", "true; drop table raw")
    assert two.exit_code == 1 and "one SQL condition" in two.stderr
    assert len(_origins(data)) == 120
