"""Feeds: the real Spamhaus DROP history, and the documented CSV / STIX 2.1 indicator formats."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest

from conftest import TESTS_DATA, shared
from trapline.enrich.feeds import classify, date_from_path, kind_from_name, read_feed
from trapline.errors import FeedError, UsageError
from trapline.pipeline.adapters.feeds import import_feeds
from trapline.store import routing as store_routing
from trapline.store.duckdb import open_store

MONTHLY = ("blocklists", "spamhaus-drop-history", "monthly")


def _listed_asns(monthly: Path) -> dict[int, list[date]]:
    """Independent reading of the history: ASN → every month folder whose list names it."""
    out: dict[int, list[date]] = {}
    for folder in sorted(p for p in monthly.iterdir() if p.is_dir()):
        day = date(int(folder.name[:4]), int(folder.name[5:7]), 1)
        asns: set[int] = set()
        txt = folder / "asn_drop.txt"
        if txt.exists():
            asns |= {
                int(line.split()[0][2:])
                for line in txt.read_text().splitlines()
                if line.startswith("AS")
            }
        js = folder / "asn_drop.json"
        if js.exists():
            for line in js.read_text().splitlines():
                obj = json.loads(line)
                if "asn" in obj:
                    asns.add(int(obj["asn"]))
        for a in asns:
            out.setdefault(a, []).append(day)
    return out


@pytest.fixture(scope="module")
def drop_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("drop")
    with open_store(folder) as store:
        result = import_feeds(store, shared(*MONTHLY))
    assert result.files == 243  # 71 drop + 3 × 57 others + the 2024-02 JSON
    return folder


def test_every_asn_drop_listing_appears_with_its_dates(drop_store: Path) -> None:
    expected = _listed_asns(shared(*MONTHLY))
    with open_store(drop_store, read_only=True) as store:
        rows = store.con.execute(
            "SELECT asn, first_seen, last_seen, dates, n_sightings FROM feed_indicators WHERE kind = 'asn-drop'"
        ).fetchall()
    got = {r[0]: r for r in rows}
    assert set(got) == set(expected)
    for a, days in expected.items():
        _, first, last, dates, n = got[a]
        assert (first.date(), last.date(), list(dates), n) == (
            days[0],
            days[-1],
            days,
            len(days),
        ), a
    print(
        f"ASN-DROP: {len(expected)} ASNs listed between {min(d[0] for d in expected.values())} "
        f"and {max(d[-1] for d in expected.values())}"
    )


def test_drop_prefixes_merge_into_first_and_last_seen(drop_store: Path) -> None:
    monthly = shared(*MONTHLY)
    months = [p.name for p in sorted(monthly.iterdir()) if (p / "drop.txt").exists()]
    first_list = {
        line.split()[0]
        for line in (monthly / months[0] / "drop.txt").read_text().splitlines()
        if line.strip()
    }
    last_list = {
        line.split()[0]
        for line in (monthly / months[-1] / "drop.txt").read_text().splitlines()
        if line.strip()
    }
    both = sorted(first_list & last_list)
    with open_store(drop_store, read_only=True) as store:
        rows = dict(
            store.con.execute(
                "SELECT indicator, (first_seen, last_seen) FROM feed_indicators WHERE kind = 'drop' AND indicator IN "
                "(SELECT unnest(?::VARCHAR[]))",
                [both],
            ).fetchall()
        )
    # A prefix on the first and the last list was first seen on the first and last seen on the last.
    assert len(rows) == len(both) > 100
    assert {v[0].strftime("%Y-%m") for v in rows.values()} == {months[0]}
    assert {v[1].strftime("%Y-%m") for v in rows.values()} == {months[-1]}


def test_reimport_adds_nothing(drop_store: Path) -> None:
    with open_store(drop_store) as store:
        again = import_feeds(store, shared(*MONTHLY, "2020-01"))
        total = store.con.execute("SELECT count(*) FROM feed_sightings").fetchall()[0][0]
    assert again.sightings > 0 and again.new_sightings == 0
    assert total > 80_000


def test_single_file_needs_a_date(tmp_path: Path) -> None:
    latest = shared("blocklists", "spamhaus-drop-history", "latest_drop.txt")
    with open_store(tmp_path) as store:
        with pytest.raises(UsageError, match="--as-of"):
            import_feeds(store, latest)
        result = import_feeds(store, latest, kind="drop", as_of=date(2024, 2, 27))
        # The JSON form carries its own date in the metadata line.
        result_json = import_feeds(
            store, shared("blocklists", "spamhaus-drop-history", "latest_asn_drop.json")
        )
        meta = store.con.execute(
            "SELECT DISTINCT first_seen FROM feed_sightings WHERE kind = 'asn-drop'"
        ).fetchall()
    assert result.sightings > 900 and result_json.sightings == 201  # "records": 201 in its metadata
    assert len(meta) == 1 and meta[0][0].year == 2024


def test_spamhaus_text_with_sbl_comments_and_folder_dates(tmp_path: Path) -> None:
    month = tmp_path / "2021-05"
    month.mkdir()
    real = shared(*MONTHLY, "2021-05", "drop.txt").read_text().splitlines()[:3]
    # The upstream format carries '; SBL…' after each prefix and ';' header lines.
    (month / "drop.txt").write_text(
        "; Spamhaus DROP List\n" + "".join(f"{p.strip()} ; SBL{i}\n" for i, p in enumerate(real))
    )
    sightings, files, _ = read_feed(tmp_path)
    assert files == 1
    assert [s.indicator for s in sightings] == [p.strip() for p in real]
    assert {s.first_seen for s in sightings} == {datetime(2021, 5, 1)}
    assert sightings[0].family == "SBL0"


def test_indicator_csv_merges_duplicates(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store_routing.import_routing(
            store, TESTS_DATA / "routing" / "ipasn_20080501_excerpt_208.64-79.dat"
        )
        result = import_feeds(store, TESTS_DATA / "routing" / "indicators.csv")
        rows = {
            r[0] + " " + r[1]: r[2:]
            for r in store.con.execute(
                "SELECT kind, indicator, first_seen, last_seen, n_sightings, asn, prefix FROM feed_indicators"
            ).fetchall()
        }
    assert result.sightings == 6 and result.indicators == 5
    # Two rows for 208.66.194.20 merge: earliest first_seen of both, latest last_seen of both.
    assert rows["cc 208.66.194.20"] == (
        datetime(2008, 6, 15, 10),
        datetime(2008, 10, 15),
        2,
        26780,
        "208.66.192.0/22",
    )
    assert rows["cc 208.72.169.0/24"][3:] == (26780, "208.72.168.0/21")
    assert rows["harvester AS26780"][3] == 26780
    assert rows["landing pharma-example.invalid"][3] is None  # a domain names no network offline
    assert rows["landing http://208.66.195.7/pills/"][3:] == (
        26780,
        "208.66.192.0/22",
    )  # literal host
    assert result.mapped == 3


def test_stix_bundle(tmp_path: Path) -> None:
    sightings, _, notes = read_feed(TESTS_DATA / "routing" / "indicators.stix.json")
    got = sorted((s.kind, s.indicator, s.source, s.family) for s in sightings)
    assert got == [
        ("cc", "208.72.168.17", "handmade-analyst", "Srizbi C2"),
        ("cc", "208.72.168.18", "handmade-analyst", "Srizbi C2"),
        (
            "landing",
            "http://pharma-example.invalid/buy",
            "stix:indicators.stix.json",
            "canadian-pharmacy",
        ),
    ]
    assert notes and "1 STIX objects skipped" in notes[0]  # the unclassified one, said out loud
    assert {s.last_seen for s in sightings if s.kind == "cc"} == {datetime(2008, 11, 11, 21, 30)}


def test_bad_csv_rows_say_which_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    shutil.copy(TESTS_DATA / "routing" / "indicators.csv", bad)
    with bad.open("a") as fh:
        fh.write("1.2.3.4,botnet,x,2008-01-01,,me\n")
    with pytest.raises(FeedError, match="line 8"):
        read_feed(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("as612", ("AS612", "asn")),
        ("1.10.16.5/20", ("1.10.16.0/20", "cidr")),
        ("2a09:9f00::/29", ("2a09:9f00::/29", "cidr")),
        ("208.66.192.5", ("208.66.192.5", "ip")),
        ("Example.COM.", ("example.com", "domain")),
        ("hxxp://x", ("hxxp://x", "url")),
    ],
)
def test_classify(text: str, expected: tuple[str, str]) -> None:
    assert classify(text) == expected


def test_kind_and_date_from_names() -> None:
    assert [
        kind_from_name(Path(n))
        for n in (
            "drop.txt",
            "edrop.txt",
            "drop_ipv6.txt",
            "asn_drop.json",
            "drop_v4.json",
            "latest_asn_drop.json",
            "INDEX.txt",
        )
    ] == ["drop", "edrop", "dropv6", "asn-drop", "drop", "asn-drop", None]
    assert date_from_path(Path("/x/monthly/2019-06/drop.txt")) == date(2019, 6, 1)
    assert date_from_path(Path("/x/2019-06-17/drop.txt")) == date(2019, 6, 17)
    assert date_from_path(Path("/x/drop.txt")) is None


def test_folder_of_indicator_files(tmp_path: Path) -> None:
    for name in ("indicators.csv", "indicators.stix.json", "SOURCE.md"):
        shutil.copy(TESTS_DATA / "routing" / name, tmp_path / name)
    sightings, files, _ = read_feed(tmp_path)
    assert files == 2  # SOURCE.md is no feed
    assert len(sightings) == 6 + 3
