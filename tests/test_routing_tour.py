"""The routing part of the tour: AS names as of the message's date in every report, `routing
import` re-maps what is stored, `routing lookup` validates and explains.

Real data: RouteViews 2008 and 2014 tables (shared/data/routing), real SpamAssassin spam. The
McColo mail is ground truth built on real messages: each gets one Received line on top, from an
address in McColo's 208.66.192.0/22, dated 2008-11-01 (the week before McColo was cut off).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import shared
from trapline.cli.main import cli
from trapline.store.duckdb import open_store
from trapline.store.routing import as_names, bundled_names

STAGES = {"TRAPLINE_POST_INGEST_STAGES": "trapline.pipeline.adapters.asn:asn_stage"}
MCCOLO = "MCCOLO - McColo Corp., US"


def _run(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args], env=STAGES)


def _mccolo_mail(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    spam = sorted(shared("mail", "spamassassin-2002", "spam_2").iterdir())[:n]
    for i, path in enumerate(spam):
        hop = (
            f"Received: from host{i}.example ([208.66.195.{10 + i}]) by mx.traps.example.org "
            f"with SMTP id t{i}; Sat, 1 Nov 2008 12:0{i}:00 +0000\n"
        )
        (folder / path.name).write_bytes(hop.encode() + path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def mccolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mail ingested before any routing data, then the 2008 RouteViews table imported."""
    base = tmp_path_factory.mktemp("mccolo")
    data = base / "store"
    assert _run(data, "-q", "ingest", str(_mccolo_mail(base / "mail"))).exit_code == 0
    table = shared("routing", "routeviews-pyasn", "ipasn_20080501_v12.dat.gz")
    imported = _run(data, "routing", "import", str(table))
    assert imported.exit_code == 0, imported.output
    assert "re-mapped stored mail: 4 of 4 messages with an origin IP changed network" in (
        imported.stdout
    )
    return data


def test_every_store_knows_dated_names_without_an_import(tmp_path: Path) -> None:
    names = bundled_names()
    assert len(names) > 80_000  # the 2026 list: every AS originating IPv4 space
    with open_store(tmp_path) as store:  # nothing imported at all
        got = as_names(store, [26780, 26780, 26780], [date(2008, 11, 1), date(2015, 1, 1), None])
    assert got[(26780, date(2008, 11, 1))] == MCCOLO
    assert got[(26780, date(2015, 1, 1))].startswith("KMOB")
    assert got[(26780, None)].startswith("Knobbe")


def test_lookup_names_the_holder_on_the_day_asked(mccolo: Path) -> None:
    then = json.loads(_run(mccolo, "routing", "lookup", "208.66.192.5", "--at", "2008-11-01",
                           "--json").stdout)[0]  # fmt: skip
    assert (then["asn"], then["as_name"], then["prefix"]) == (26780, MCCOLO, "208.66.192.0/22")
    text = _run(mccolo, "routing", "lookup", "208.66.192.5", "--at", "2008-11-01").stdout
    assert MCCOLO in text and "Knobbe" not in text


def test_mccolo_everywhere_in_2008(mccolo: Path, tmp_path: Path) -> None:
    stats = json.loads(_run(mccolo, "stats", "--json").stdout)
    top = stats["top_origin_networks"][0]
    assert (top["network"], top["name"], top["messages"]) == ("AS26780", MCCOLO, 4)
    stats_text = _run(mccolo, "stats").stdout
    assert MCCOLO in stats_text

    mid = json.loads(_run(mccolo, "query", "select id from messages limit 1", "--json").stdout)
    shown = json.loads(_run(mccolo, "show", mid[0]["id"], "--json").stdout)
    assert (shown["origin_asn"], shown["origin_as_name"]) == (26780, MCCOLO)
    show_text = _run(mccolo, "show", mid[0]["id"]).stdout
    assert f"AS26780 {MCCOLO}" in show_text
    assert "208.66.192.0/22" in show_text and "ipasn_20080501_v12@2008-05-01" in show_text

    nets = json.loads(_run(mccolo, "networks", "--json").stdout)
    assert (nets[0]["asn"], nets[0]["name"]) == (26780, MCCOLO)
    assert MCCOLO in _run(mccolo, "networks").stdout

    out = tmp_path / "mccolo.html"
    assert _run(mccolo, "dossier", "AS26780", "--out", str(out)).exit_code == 0
    md = out.with_suffix(".md").read_text()
    assert md.startswith(f"# Evidence dossier: AS26780 — {MCCOLO}")
    for text in (stats_text, show_text, md, _run(mccolo, "networks").stdout):
        assert "None" not in text


def test_import_remaps_and_counts_only_what_changed(mccolo: Path, tmp_path: Path) -> None:
    # A 2014 table is farther from 2008 mail than the 2008 one: nothing changes.
    later = shared("routing", "routeviews-pyasn", "ipasn_20140513.dat.gz")
    again = json.loads(_run(mccolo, "routing", "import", str(later), "--json").stdout)
    assert again["remapped"]["messages_changed"] == 0
    assert again["remapped"]["messages_with_origin"] == 4
    # AS names need no re-mapping: they are read at report time.
    names = tmp_path / "asnames.json"
    names.write_text('{"26780": "MCCOLO-RENAMED"}')
    result = _run(mccolo, "routing", "import", str(names), "--as-of", "2008-11-02")
    assert result.exit_code == 0 and "nothing to re-map" in result.stdout
    top = json.loads(_run(mccolo, "stats", "--json").stdout)["top_origin_networks"][0]
    assert top["name"] == "MCCOLO-RENAMED"  # the import nearest the mail's date wins


def test_lookup_validates_and_explains(mccolo: Path) -> None:
    bad = CliRunner().invoke(
        cli, ["--data-dir", str(mccolo), "routing", "lookup", "999.1.1.1", "not-an-ip", "8.8.8.8"]
    )
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 2 and "'999.1.1.1' is not an IP address" in lines[0]
    assert "'not-an-ip'" in lines[1] and bad.stdout == ""
    good = _run(mccolo, "routing", "lookup", "10.1.2.3", "127.0.0.1", "5.5.5.5", "--at",
                "2008-11-01", "--json")  # fmt: skip
    reasons = [a["reason"] for a in json.loads(good.stdout)]
    assert reasons == [
        "private or special-purpose (RFC 6890)",
        "loopback address",
        "not announced in ipasn_20080501_v12@2008-05-01",
    ]
    text = _run(mccolo, "routing", "lookup", "10.1.2.3", "5.5.5.5", "--at", "2008-11-01").stdout
    assert "(private or special-purpose (RFC 6890))" in text and "not announced in" in text
