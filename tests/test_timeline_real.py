"""Series and change points on real mail: the SpamAssassin 2002 spam folder.

The folder's own received times are the background (mail on most days from 22 Aug to 26 Sep
2002). The burst is one real spam message of that folder delivered 60 times on 10 Sep 2002:
each copy gets the top Received line the trap's MTA would have written (its own time and
recipient), so the copies are one campaign that arrives in one day.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from conftest import shared
from trapline.analyze.changes import detect
from trapline.analyze.timeline import series
from trapline.cli.main import cli
from trapline.store.duckdb import open_store

BURST_DAY = datetime(2002, 9, 10)


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_one_day_burst_of_one_real_campaign_is_found_and_attributed(tmp_path: Path) -> None:
    folder = shared("mail", "spamassassin-2002", "spam")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("cmds"))
    template = files[17].read_bytes()
    if template.startswith(b"From "):
        template = template.split(b"\n", 1)[1]
    burst = tmp_path / "burst"
    burst.mkdir()
    for i in range(60):
        hop = (
            f"Received: from relay{i} (dsl-{i}.example.net [81.2.{i}.9])\n\tby mx.trap.example "
            f"(Postfix) with SMTP id B{i:05d}\n\tfor <t{i}@trap.example>; "
            f"Tue, 10 Sep 2002 {i % 24:02d}:{i % 60:02d}:07 +0000\n"
        ).encode()
        (burst / f"{i:03d}.eml").write_bytes(hop + template)
    d = ["--data-dir", str(tmp_path / "data"), "-q"]
    _run(*d, "ingest", str(folder), str(burst))
    _run(*d, "analyze", "campaigns")
    with open_store(tmp_path / "data", read_only=True) as store:
        s = series(store.con, by="campaign", freq="day")
        (burst_campaign,) = store.con.execute(
            "SELECT DISTINCT campaign_id FROM messages WHERE source LIKE '%/burst/%'"
        ).fetchone()
    found = detect(s)
    on_day = [c for c in found if c.at == BURST_DAY]
    assert on_day and on_day[0].kind == "burst", found
    top = on_day[0].attribution[0]
    assert top.id == burst_campaign and top.share >= 0.8
    assert any(c.at == datetime(2002, 9, 11) and c.kind == "burst-end" for c in found)
    # the CLI prints the same and says nothing about the Date: header
    out = _run(*d, "changes", "--by", "campaign", "--json")
    assert "2002-09-10T00:00:00Z" in out


def test_natural_one_day_burst_in_the_nazario_phishing_corpus(tmp_path: Path) -> None:
    """Unaltered real mail: on 23 Jun 2005 one phishing campaign ("System maintenance: update
    your ... account") tripled the day's volume of the Nazario 2005 corpus."""
    corpus = shared("mail", "nazario-phishing-2005")
    d = ["--data-dir", str(tmp_path / "data"), "-q"]
    _run(*d, "ingest", str(corpus / "phishing0.mbox"), str(corpus / "phishing1.mbox"))
    _run(*d, "analyze", "campaigns")
    with open_store(tmp_path / "data", read_only=True) as store:
        found = detect(series(store.con, by="campaign", freq="day"))
    burst = [c for c in found if c.at == datetime(2005, 6, 23)]
    assert burst and burst[0].kind == "burst", found
    top = burst[0].attribution[0]
    assert top.name.startswith("System maintenance") and top.share > 0.5, burst[0].attribution
