"""Labels (spam, ham or a name) given at ingest, kept in the archive, and honoured by every report.

Real mail: the SpamAssassin 2002 corpus, whose ham and spam folders are known.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from conftest import shared
from trapline.cli.main import cli
from trapline.model import RawMessage
from trapline.pipeline.run import ingest
from trapline.store import raw as rawstore
from trapline.store.duckdb import open_store
from trapline.store.labels import check_label, label_filter, looks_like_ham

NO_STAGES = {"TRAPLINE_POST_INGEST_STAGES": ""}


def _run(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--data-dir", str(data_dir), *args], env=env or NO_STAGES, catch_exceptions=False
    )


def _copy(folder: Path, dest: Path, n: int) -> Path:
    dest.mkdir(parents=True)
    for p in sorted(folder.iterdir())[:n]:
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 spam and 40 hard ham from the real corpus: spam by default, ham by --label."""
    base = tmp_path_factory.mktemp("labels")
    corpus = shared("mail", "spamassassin-2002")
    spam = _copy(corpus / "spam_2", base / "in" / "spam_2", 60)
    ham = _copy(corpus / "hard_ham", base / "in" / "hard_ham", 40)
    data = base / "store"
    first = _run(data, "ingest", str(spam))
    assert first.exit_code == 0, first.output
    assert "looks like legitimate mail" not in first.stderr
    second = _run(data, "ingest", "--label", "ham", str(ham))
    assert second.exit_code == 0, second.output
    return data


def test_label_alphabet() -> None:
    assert check_label(" Ham ") == "ham"
    assert check_label("phish-2005") == "phish-2005"
    assert check_label("all", allow_all=True) == "all"
    for bad in ("all", "", "a b", "x' OR 1=1 --", "-x", "a" * 33):
        with pytest.raises(Exception, match="is not a label"):
            check_label(bad)
    assert label_filter("all") == "TRUE"
    assert label_filter("ham", "m.label") == "m.label = 'ham'"


def test_ham_looking_paths_get_a_hint_not_a_guess(tmp_path: Path) -> None:
    corpus = shared("mail", "spamassassin-2002")
    assert looks_like_ham(str(corpus / "easy_ham")) and looks_like_ham("x/ham.mbox")
    assert not looks_like_ham(str(corpus / "spam_2")) and not looks_like_ham("/home/graham/x")
    ham = _copy(corpus / "easy_ham", tmp_path / "easy_ham", 5)
    result = _run(tmp_path / "s", "ingest", str(ham))
    assert result.exit_code == 0, result.output
    hint = [line for line in result.stderr.splitlines() if "looks like legitimate" in line]
    assert len(hint) == 1 and "--label ham" in hint[0]
    # Not guessed: the messages are stored as spam, as the default says.
    report = json.loads(_run(tmp_path / "s", "stats", "--json").stdout)
    assert report["labels"] == {"spam": 5}
    # A bad label is a usage error (exit 2) before anything is stored.
    bad = _run(tmp_path / "t", "ingest", "--label", "not ok", str(ham))
    assert bad.exit_code == 2 and "is not a label" in bad.stderr
    assert not (tmp_path / "t").exists()


def test_stored_per_message_and_in_the_archive(mixed: Path) -> None:
    with open_store(mixed, read_only=True) as store:
        rows = dict(
            store.con.execute(
                "SELECT m.label, count(*) FROM messages m JOIN raw r ON r.id = m.id "
                "WHERE r.label = m.label GROUP BY 1"
            ).fetchall()
        )
    assert rows == {"spam": 60, "ham": 40}


def test_stats_count_spam_unless_asked(mixed: Path) -> None:
    spam = json.loads(_run(mixed, "stats", "--json").stdout)
    assert spam["messages"] == 100 and spam["labels"] == {"spam": 60, "ham": 40}
    assert spam["label"] == "spam" and spam["counted"] == 60
    ham = json.loads(_run(mixed, "stats", "--label", "ham", "--json").stdout)
    every = json.loads(_run(mixed, "stats", "--label", "all", "--json").stdout)
    assert ham["counted"] == 40 and every["counted"] == 100

    assert spam["with_origin_ip"] + ham["with_origin_ip"] == every["with_origin_ip"]
    assert 0 < spam["with_origin_ip"] < every["with_origin_ip"]
    assert spam["first_received"] != ham["first_received"]
    text = _run(mixed, "stats").stdout
    assert "labels 60 spam, 40 ham; below: label spam (60)" in text


def test_resume_keeps_the_archived_label(tmp_path: Path) -> None:
    """Messages archived as ham by an interrupted run are parsed as ham by the next run."""
    corpus = shared("mail", "spamassassin-2002", "hard_ham")
    files = sorted(corpus.iterdir())[:5]
    with open_store(tmp_path) as store:
        rows = [
            rawstore.RawRow(
                RawMessage(p.read_bytes(), str(p)).id, p.read_bytes(), str(p), None, "ham"
            )
            for p in files
        ]
        rawstore.write_raw(store.con, rows)
    spam = _copy(shared("mail", "spamassassin-2002", "spam"), tmp_path / "spam", 3)
    summary = ingest([spam], settings={"data_dir": str(tmp_path), "post_ingest_stages": []})
    assert summary.resumed == 5 and summary.new == 3
    with open_store(tmp_path, read_only=True) as store:
        got = dict(store.con.execute("SELECT label, count(*) FROM messages GROUP BY 1").fetchall())
    assert got == {"ham": 5, "spam": 3}


def test_an_older_store_upgrades_and_reads_as_spam(tmp_path: Path) -> None:
    spam = _copy(shared("mail", "spamassassin-2002", "spam"), tmp_path / "spam", 4)
    assert _run(tmp_path / "s", "--quiet", "ingest", str(spam)).exit_code == 0
    # A store written before labels existed: no label columns at all.
    con = duckdb.connect(str(tmp_path / "s" / "trapline.duckdb"))
    con.execute("ALTER TABLE messages DROP COLUMN label")
    con.execute("ALTER TABLE raw DROP COLUMN label")
    con.close()
    report = json.loads(_run(tmp_path / "s", "stats", "--json").stdout)
    assert report["labels"] == {"spam": 4} and report["counted"] == 4


def test_a_store_from_before_the_trust_column_upgrades_on_a_read(tmp_path: Path) -> None:
    spam = _copy(shared("mail", "spamassassin-2002", "spam"), tmp_path / "spam", 2)
    assert _run(tmp_path / "s", "--quiet", "ingest", str(spam)).exit_code == 0
    con = duckdb.connect(str(tmp_path / "s" / "trapline.duckdb"))
    con.execute("ALTER TABLE raw DROP COLUMN trust")
    con.close()
    with open_store(tmp_path / "s", read_only=True) as store:  # upgrades in a write turn first
        assert store.con.execute("SELECT count(trust) FROM raw").fetchall() == [(0,)]


def test_campaigns_cluster_spam_only_unless_asked(mixed: Path) -> None:
    env = {"TRAPLINE_POST_INGEST_STAGES": ""}
    assert _run(mixed, "analyze", "campaigns", env=env).exit_code == 0
    with open_store(mixed, read_only=True) as store:
        ham_in = store.con.execute(
            "SELECT count(*) FROM messages WHERE label = 'ham' AND campaign_id IS NOT NULL"
        ).fetchone()
        spam_in = store.con.execute(
            "SELECT count(*) FROM messages WHERE label = 'spam' AND campaign_id IS NOT NULL"
        ).fetchone()
    assert ham_in == (0,) and spam_in == (60,)
    again = _run(mixed, "analyze", "campaigns", "--label", "all", "--json", env=env)
    run = json.loads(again.stdout)
    assert run["rebuilt"] and run["clustered"] == 100
    # Back to the default: rebuilt again, ham left out.
    back = json.loads(_run(mixed, "analyze", "campaigns", "--json", env=env).stdout)
    assert back["rebuilt"] and back["clustered"] == 60


def test_networks_and_dossier_count_spam_only(tmp_path: Path) -> None:
    """The demo store (bundled 2002 sample, bundled 2008 routing): ham senders are not abuse."""
    env = {"TRAPLINE_POST_INGEST_STAGES": "trapline.pipeline.adapters.asn:asn_stage"}
    data = tmp_path / "demo"
    assert _run(data, "--quiet", "demo", env=env).exit_code == 0
    spam = json.loads(_run(data, "networks", "--top", "500", "--json").stdout)
    every = json.loads(_run(data, "networks", "--top", "500", "--label", "all", "--json").stdout)
    ham = json.loads(_run(data, "networks", "--top", "500", "--label", "ham", "--json").stdout)
    total = lambda rows: sum(r["messages"] for r in rows)  # noqa: E731
    assert total(spam) + total(ham) == total(every) and total(ham) > 0
    with open_store(data, read_only=True) as store:
        (ham_asn,) = store.con.execute(
            "SELECT origin_asn FROM messages WHERE label = 'ham' AND origin_asn IS NOT NULL "
            "AND origin_asn NOT IN (SELECT origin_asn FROM messages WHERE label = 'spam' "
            "AND origin_asn IS NOT NULL) GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
    assert ham_asn not in {r["asn"] for r in spam}
    assert ham_asn in {r["asn"] for r in ham}
    out = tmp_path / "ham.html"
    assert _run(data, "dossier", f"AS{ham_asn}", "--out", str(out)).exit_code == 0
    spam_md = out.with_suffix(".md").read_text()
    assert _run(data, "dossier", f"AS{ham_asn}", "--label", "ham", "--out", str(out)).exit_code == 0
    ham_md = out.with_suffix(".md").read_text()
    none = "No stored message was sent from or links to this network."
    assert none in spam_md and none not in ham_md
