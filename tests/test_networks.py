"""Network ranking (hand-computed crafted store + the real corpus), dossiers, and the CLI."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import TESTS_DATA, shared
from trapline.analyze.networks import network_scores
from trapline.cli.main import cli
from trapline.config import load_settings
from trapline.export.dossier import build_dossier, render_html, render_markdown, write_dossier
from trapline.pipeline.adapters.asn import enrich_all
from trapline.pipeline.adapters.feeds import import_feeds
from trapline.store import routing as store_routing
from trapline.store.duckdb import Store, open_store

PYASN = ("routing", "routeviews-pyasn")

# A crafted routing table (synthetic, in addition to the real tables used elsewhere):
#   AS100 11.0.0.0/16 = 256 /24s   AS200 12.0.0.0/24 = 1   AS300 13.0.0.0/22 = 4   AS400 14.0.0.0/24 = 1
CRAFTED_TABLE = (
    "; crafted\n11.0.0.0/16\t100\n12.0.0.0/24\t200\n13.0.0.0/22\t300\n14.0.0.0/24\t400\n"
)
CRAFTED_CC = "indicator,kind,family,first_seen,last_seen,source\n11.0.5.5,cc,testbot,2008-06-01,2008-08-30,crafted\n"


def _message(store: Store, mid: str, ip: str, at: datetime, visit: str | None = None) -> None:
    store.con.execute(
        "INSERT INTO messages (id, size, received_at, origin_ip, trap_visit_id, ingested_at) VALUES (?, 1, ?, ?, ?, now())",
        [mid, at, ip, visit],
    )


def _crafted(folder: Path) -> Path:
    table = folder / "ipasn_20080501_crafted.dat"
    table.write_text(CRAFTED_TABLE)
    (folder / "asnames.json").write_text(
        json.dumps({"100": "BIG-ISP", "200": "TINY-HOST", "300": "ROGUE-HOST", "400": "DICT-NET"})
    )
    (folder / "cc.csv").write_text(CRAFTED_CC)
    data = folder / "data"
    with open_store(data) as store:
        store_routing.import_routing(store, table)
        store_routing.import_asnames(store, folder / "asnames.json", as_of=date(2008, 5, 1))
        for i, (ip, at) in enumerate(
            [
                ("11.0.0.1", "2008-06-01 00:00"),
                ("11.0.0.2", "2008-06-01 12:00"),
                ("11.0.0.3", "2008-06-02 00:00"),
                ("11.0.0.4", "2008-06-02 00:00"),
            ]
        ):
            _message(store, f"m{i + 1}", ip, datetime.fromisoformat(at))
        _message(store, "m5", "12.0.0.9", datetime(2008, 6, 10))
        _message(store, "m6", "13.0.0.5", datetime(2008, 6, 1))
        _message(store, "m7", "13.0.0.5", datetime(2008, 7, 1), visit="v1")
        store.con.execute(
            "INSERT INTO urls (message_id, url, host) VALUES ('m6', 'http://13.0.1.1/buy', '13.0.1.1')"
        )
        # Two visits in the store's own tables: v1 issued the address m7 was sent to (a
        # harvester); v2 did not. Two dictionary attacks from 14.0.0.0/24.
        store.con.execute(
            "INSERT INTO visits (id, seq, address, visited_at, ip) VALUES "
            "('v1', 1, 'a1@t', '2008-06-15', '13.0.2.2'), ('v2', 2, 'a2@t', '2008-06-15', '11.0.9.9')"
        )
        store.con.execute(
            "INSERT INTO dictionary_attacks (message_id, addr, sender_ip, seen_at) VALUES "
            "('d1', 'a@t', '14.0.0.1', '2008-06-20'), ('d2', 'b@t', '14.0.0.2', '2008-06-20')"
        )
        import_feeds(store, folder / "cc.csv")
        enrich_all(store, {})
    return data


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    return _crafted(tmp_path)


def test_crafted_ranking_matches_the_hand_computation(crafted: Path) -> None:
    """Weights spam 1, harvester 3, dictionary 0.5, url_host 2, cc 5; size exponent 0.5;
    longevity L = ln(1+days)/ln(366), factor 1 + L; breadth factor 1 + 0.5 × (types − 1).

    AS100: 4 spam IPs + 1 C&C → W = 4 + 5 = 9; 256 /24s → baseline 9/256 = 0.0351563.
           evidence from 2008-06-01 to the C&C's last sighting 2008-08-30 = 90 days,
           L = ln 91 / ln 366 = 4.51086 / 5.90263 = 0.764210; 2 types → ×1.5.
           score = 9 / √256 × 1.764210 × 1.5 = 0.5625 × 2.646315 = 1.488552
    AS200: 1 spam IP, one day → W = 1, 1 /24 → baseline 1; L = 0; score 1.0
    AS300: spam 13.0.0.5 + URL host 13.0.1.1 + harvester 13.0.2.2 (visit v1, tied to m7)
           → W = 1 + 2 + 3 = 6; 4 /24s → baseline 1.5. 2008-06-01 … 2008-07-01 = 30 days,
           L = ln 31 / ln 366 = 3.433987 / 5.902633 = 0.581771; 3 types → ×2.
           score = 6 / √4 × 1.581771 × 2 = 9.490626
    AS400: 2 dictionary attackers → W = 1.0; baseline 1.0; score 1.0 (ties AS200: lower ASN first)
    The untied visit v2 (11.0.9.9) is no harvester, so AS100 gets none.
    Order by score: 300, 100, 200, 400. By baseline: 300, 200, 400, 100.
    """
    with open_store(crafted) as store:
        ranked = network_scores(store, {})
        again = network_scores(store, {})
    assert ranked == again
    assert [s.asn for s in ranked] == [300, 100, 200, 400]
    assert [s.name for s in ranked] == ["ROGUE-HOST", "BIG-ISP", "TINY-HOST", "DICT-NET"]
    expected = {100: (1.488552, 0.0351563), 200: (1.0, 1.0), 300: (9.490626, 1.5), 400: (1.0, 1.0)}
    for s in ranked:
        assert (s.score, s.baseline_score) == pytest.approx(expected[s.asn], rel=1e-5), s.reasons
    by = {s.asn: s for s in ranked}
    assert by[300].evidence == {
        "spam": 1,
        "harvester": 1,
        "dictionary": 0,
        "url_host": 1,
        "cc": 0,
        "blocklist": 0,
    }
    assert (
        by[100].evidence["harvester"] == 0 and by[100].evidence["cc"] == 1 and by[100].messages == 4
    )
    assert round(by[100].longevity_days) == 90 and by[300].breadth == 3
    assert sorted(ranked, key=lambda s: (-s.baseline_score, s.asn))[-1].asn == 100


def test_weights_and_window_are_honoured(crafted: Path) -> None:
    with open_store(crafted) as store:
        # cc weighted 0: AS100 keeps 4 spam IPs over 1 day, breadth 1 →
        # 4/16 × (1 + ln 2 / ln 366) = 0.25 × 1.117431 = 0.279358, now below AS200 and AS400.
        no_cc = network_scores(store, load_settings({"network_weights": {"cc": 0}}))
        window = network_scores(store, {}, since=date(2008, 6, 5), until=date(2008, 6, 30))
    assert [s.asn for s in no_cc] == [300, 200, 400, 100]
    assert next(s for s in no_cc if s.asn == 100).score == pytest.approx(0.279358, rel=1e-5)
    ev = {s.asn: {k: v for k, v in s.evidence.items() if v} for s in window}
    # In June 5-30 only the visit (06-15), m5 (06-10), the attackers (06-20) and the C&C whose
    # sighting spans the window count.
    assert ev == {100: {"cc": 1}, 200: {"spam": 1}, 300: {"harvester": 1}, 400: {"dictionary": 2}}


# --- the real corpus -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spam_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SpamAssassin spam folders (what a trap would catch) with the 2008 table and DROP history."""
    from trapline.pipeline.run import ingest

    folder = tmp_path_factory.mktemp("spam")
    with open_store(folder) as store:
        store_routing.import_routing(store, shared(*PYASN, "ipasn_20080501_v12.dat.gz"))
        store_routing.import_asnames(store, shared(*PYASN, "asnames.json"), as_of=date(2015, 6, 1))
    corpus = shared("mail", "spamassassin-2002")
    ingest(
        [corpus / "spam", corpus / "spam_2"],
        settings=load_settings({"data_dir": str(folder), "workers": 1}),
    )
    return folder


def test_real_corpus_top10(spam_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = load_settings({})["network_weights"]
    with open_store(spam_store) as store:
        top = network_scores(store, {}, top=10)
        again = network_scores(store, {}, top=10)
    assert top == again and len(top) == 10
    assert [s.score for s in top] == sorted((s.score for s in top), reverse=True)
    for s in top:  # the baseline column is the documented formula applied to the shown counts
        weighted = sum(weights[k] * v for k, v in s.evidence.items())
        assert s.baseline_score == pytest.approx(weighted / max(1.0, s.announced_v4 / 256))
    with capsys.disabled():
        print("\nSpamAssassin 2002 spam, 2008 RouteViews table: top 10 networks")
        for i, s in enumerate(top, 1):
            counts = " ".join(f"{k}={v}" for k, v in s.evidence.items() if v)
            print(
                f"{i:2} AS{s.asn:<6} {(s.name or '-')[:38]:38} score {s.score:8.3f} baseline {s.baseline_score:7.3f} "
                f"{counts} msgs={s.messages} /24s={s.announced_v4 // 256} days={s.longevity_days:.0f}"
            )


def test_dossier_for_the_top_real_network(spam_store: Path, tmp_path: Path) -> None:
    with open_store(spam_store) as store:
        top = network_scores(store, {}, top=1)[0]
        paths = write_dossier(store, {}, top.asn, tmp_path / "top.html")
        origin_ids = {
            r[0]
            for r in store.con.execute(
                "SELECT message_id FROM ip_routing WHERE asn = ? AND subject IN ('origin', 'url')",
                [top.asn],
            ).fetchall()
        }
    html, md = (p.read_text() for p in paths)
    assert [p.suffix for p in paths] == [".html", ".md"]
    _self_contained(html)
    for text in (html, md):
        assert f"AS{top.asn}" in text and "Score breakdown" in text and "2008-05-01" in text
        shown = set(re.findall(r"\b[0-9a-f]{64}\b", text))
        assert shown and shown <= origin_ids  # sample headers carry real raw message ids
    assert "Received:" in md


def _self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html


def test_mccolo_dossier(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_store(data) as store:
        store_routing.import_bundled_routing(store)
        import_feeds(store, TESTS_DATA / "routing" / "indicators.csv")
        _message(store, "mc1", "208.66.195.7", datetime(2008, 9, 3, 10))
        _message(store, "mc2", "208.72.169.44", datetime(2008, 11, 10, 9))
        enrich_all(store, {})
        d = build_dossier(store, {}, 26780)
    html, md = render_html(d), render_markdown(d)
    _self_contained(html)
    assert "McColo" in d.title
    assert [p[2] for p in d.prefixes] == ["208.66.192.0/22", "208.72.168.0/21", "208.72.173.0/24"]
    assert {p[1] for p in d.prefixes} == {date(2008, 5, 1)}
    kinds = sorted({row[0] for row in d.listings})
    assert kinds == ["cc", "harvester", "landing"]
    assert [m for m, _ in d.timeline] == ["2006-06", "2008-06", "2008-07", "2008-09", "2008-11"]
    assert d.score is not None and d.rank == 1
    for text in (html, md):
        assert "208.72.168.0/21" in text and "mc1" in text and "harvester" in text


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path: Path) -> None:
    run = lambda *args: CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), *args])  # noqa: E731
    excerpt = str(TESTS_DATA / "routing" / "ipasn_20080501_excerpt_208.64-79.dat")
    r = run("routing", "import", excerpt, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["snapshot"]["as_of"] == "2008-05-01"
    undated = tmp_path / "table.dat"
    undated.write_text(CRAFTED_TABLE)
    r = run("routing", "import", str(undated))
    assert r.exit_code == 1 and "--as-of" in r.output
    assert run("routing", "import", str(undated), "--as-of", "2026-06-17").exit_code == 0
    listed = json.loads(run("routing", "list", "--json").output)
    assert [s["as_of"] for s in listed] == ["2008-05-01", "2026-06-17"]
    r = run("routing", "lookup", "208.66.192.5", "--at", "2008-11-01", "--json")
    assert json.loads(r.output)[0] | {"as_name": None} == {
        "ip": "208.66.192.5",
        "prefix": "208.66.192.0/22",
        "asn": 26780,
        "as_name": None,
        "snapshot": "ipasn_20080501_excerpt_208.64-79@2008-05-01",
        "snapshot_date": "2008-05-01",
        "reason": None,
    }
    r = run("feeds", "import", str(TESTS_DATA / "routing" / "indicators.csv"), "--json")
    assert json.loads(r.output)["indicators"] == 5
    with open_store(tmp_path / "d") as store:
        _message(store, "x1", "208.66.195.7", datetime(2008, 9, 3))
    assert json.loads(run("enrich", "--json").output)["by_subject"]["origin"] == {
        "rows": 1,
        "mapped": 1,
    }
    r = run("networks", "--top", "5", "--json")
    rows = json.loads(r.output)
    assert rows[0]["asn"] == 26780
    assert {
        "asn",
        "name",
        "score",
        "baseline_score",
        "spam",
        "harvester",
        "dictionary",
        "url_host",
        "cc",
        "blocklist",
    } <= set(rows[0])
    r = run("dossier", "AS26780", "--out", str(tmp_path / "mccolo.html"))
    assert (
        r.exit_code == 0
        and (tmp_path / "mccolo.html").exists()
        and (tmp_path / "mccolo.md").exists()
    )
    assert run("dossier", "ASX").exit_code != 0
