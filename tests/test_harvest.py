"""Harvester linkage on a real store: visits + real spam through the spool drain and the ingest
pipeline, then trap_visit_id, dictionary attacks and the harvester ranking."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trap_helpers import spam_bodies
from trapline.analyze.harvesters import harvesters, visit_details
from trapline.config import load_settings
from trapline.enrich import harvest
from trapline.errors import NotConfigured
from trapline.pipeline.adapters.harvest import harvest_stage
from trapline.pipeline.drain import drain
from trapline.store.duckdb import Store, open_store
from trapline.traps import addresses
from trapline.traps.smtp.spool import Spool, SpoolRecord

TRAP = "traps.example.org"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _visit(secret: bytes, seq: int, ip: str, when: datetime, ua: str) -> SpoolRecord:
    return SpoolRecord(
        "visit",
        {
            "id": addresses.visit_id_of(seq), "seq": seq, "address": addresses.encode(seq, secret, TRAP),
            "visited_at": when.isoformat(), "ip": ip, "user_agent": ua, "method": "GET",
            "host": "garden.example", "path": "/contact/", "referer": None, "headers": json.dumps({"user-agent": ua}),
            "sensor_id": None, "ignored_robots": False, "read_robots": False,
        },
    )  # fmt: skip


def _mail(
    body: bytes, rcpt: list[str], when: datetime, peer: str, sender: str = "bulk@sender.example"
) -> SpoolRecord:
    return SpoolRecord(
        "message",
        {"peer_ip": peer, "peer_port": 4321, "helo": "bot", "mail_from": sender, "rcpt_to": rcpt,
         "received_at": when.isoformat(), "session_id": "s1", "session_fingerprint": "f"},
        body,
    )  # fmt: skip


@pytest.fixture
def linked(tmp_path: Path) -> tuple[Store, dict[str, str], dict[str, object]]:
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    secret = addresses.site_secret(settings)
    addr = {f"v{i}": addresses.encode(i, secret, TRAP) for i in range(4)}
    bodies = spam_bodies(6)
    forged = addresses.encode(
        7, b"another site's secret!!", TRAP, "words"
    )  # right shape, wrong key
    # An archived message (no envelope) whose To: header holds v3's address: header linkage.
    header_mail = re.sub(
        rb"(?m)^To: .*$", f"To: Friend <{addr['v3']}>".encode(), bodies[4], count=1
    )
    assert header_mail != bodies[4]
    records = [
        _visit(secret, 0, "198.51.100.7", T0, "EmailSiphon"),
        _visit(secret, 1, "198.51.100.7", T0 + timedelta(hours=1), "EmailSiphon"),
        _visit(secret, 2, "203.0.113.8", T0, "Mozilla/4.0 (compatible; Collector)"),
        _visit(secret, 3, "192.0.2.50", T0, "WebZIP"),
        _mail(bodies[0], [addr["v0"]], T0 + timedelta(hours=1), "192.0.2.10"),
        _mail(bodies[1], [addr["v0"], addr["v1"]], T0 + timedelta(hours=2), "192.0.2.11"),
        _mail(bodies[2], [addr["v2"]], T0 + timedelta(days=1), "192.0.2.12"),
        _mail(bodies[3], [f"sales@{TRAP}", forged, "someone@elsewhere.example"], T0 + timedelta(days=2), "192.0.2.66", "dict@attacker.example"),
    ]  # fmt: skip
    spool = Spool(tmp_path / "spool")
    spool.write_now(records)
    spool.write_now(
        [
            SpoolRecord(
                "message",
                {"peer_ip": "192.0.2.13", "rcpt_to": [], "received_at": None},
                header_mail,
            )
        ]
    )
    store = open_store(tmp_path / "data")
    result = drain(spool, store, settings)
    assert result.messages == 5 and result.new_messages == 5
    assert store.con.execute("SELECT count(*) FROM raw").fetchone() == (5,)
    return store, addr, settings


def test_messages_and_recipients_carry_the_visit_they_were_sent_to(
    linked: tuple[Store, dict[str, str], dict[str, object]],
) -> None:
    store, addr, _ = linked
    con = store.con
    by_visit = dict(
        con.execute("SELECT trap_visit_id, count(*) FROM messages GROUP BY ALL").fetchall()
    )
    assert by_visit == {"v0": 2, "v2": 1, "v3": 1, None: 1}
    rows = con.execute(
        "SELECT addr, trap_visit_id FROM recipients WHERE kind = 'rcpt' AND domain = ? ORDER BY addr",
        [TRAP],
    ).fetchall()
    linked_rows = {a: v for a, v in rows if v}
    assert linked_rows == {addr["v0"]: "v0", addr["v1"]: "v1", addr["v2"]: "v2"}
    header = con.execute(
        "SELECT kind, trap_visit_id FROM recipients WHERE addr = ?", [addr["v3"]]
    ).fetchall()
    assert header == [("to", "v3")]
    undecoded = con.execute(
        "SELECT trap_visit_id FROM messages WHERE origin_ip = '192.0.2.66'"
    ).fetchone()
    assert undecoded == (None,)  # trap mail whose addresses do not decode has a null visit


def test_undecodable_trap_addresses_are_dictionary_attacks_by_the_sender(
    linked: tuple[Store, dict[str, str], dict[str, object]],
) -> None:
    store, _, settings = linked
    rows = store.con.execute(
        "SELECT addr, reason, sender_ip, mail_from FROM dictionary_attacks ORDER BY addr"
    ).fetchall()
    assert len(rows) == 2
    assert {r[1] for r in rows} == {"unparseable", "bad-mac"}
    assert f"sales@{TRAP}" in {r[0] for r in rows}
    assert {(r[2], r[3]) for r in rows} == {("192.0.2.66", "dict@attacker.example")}
    # re-running the stage replaces its rows, never duplicates them
    ids = [r[0] for r in store.con.execute("SELECT id FROM messages").fetchall()]
    harvest_stage(store, ids, settings)  # type: ignore[arg-type]
    assert store.con.execute("SELECT count(*) FROM dictionary_attacks").fetchone() == (2,)


def test_harvesters_are_ranked_by_the_spam_their_addresses_drew(
    linked: tuple[Store, dict[str, str], dict[str, object]],
) -> None:
    store, _, _ = linked
    ranked = harvesters(store)
    assert [h.ip for h in ranked][:1] == ["198.51.100.7"]
    top = ranked[0]
    assert (top.visits, top.addresses, top.messages) == (2, 2, 2)
    assert top.first_spam_delay_s == 3600.0  # visit at T0, first spam to it an hour later
    assert top.user_agents == ("EmailSiphon",)
    second = {h.ip: h for h in ranked[1:]}
    assert (
        second["203.0.113.8"].messages == 1 and second["203.0.113.8"].first_spam_delay_s == 86400.0
    )
    assert second["192.0.2.50"].messages == 1  # linked through the To: header
    assert set(ranked[0].to_dict()) >= {
        "ip",
        "visits",
        "addresses",
        "messages",
        "first_spam_delay_s",
    }


def test_visit_details_for_decode(linked: tuple[Store, dict[str, str], dict[str, object]]) -> None:
    store, _, _ = linked
    details = visit_details(store, "v0")
    assert details is not None
    assert details["ip"] == "198.51.100.7" and details["user_agent"] == "EmailSiphon"
    assert details["messages"] == 2 and details["headers"] == {"user-agent": "EmailSiphon"}
    assert visit_details(store, "v999") is None


def test_resolve_is_pure_and_skips_other_domains() -> None:
    secret = b"s" * 32
    good = addresses.encode(9, secret, TRAP)
    rows = [
        ("m1", "rcpt", good),
        ("m1", "to", "a@other.example"),
        ("m2", "rcpt", f"root@{TRAP}."),
        ("m3", "cc", None),
    ]
    links = harvest.resolve(rows, secret, [TRAP])  # type: ignore[arg-type]
    assert [(x.message_id, x.visit_id, x.reason) for x in links] == [
        ("m1", "v9", ""),
        ("m2", None, "unparseable"),
    ]


def test_stage_switches_itself_off_without_a_secret_or_domains(tmp_path: Path) -> None:
    with open_store(tmp_path / "d") as store:
        with pytest.raises(NotConfigured, match="site secret"):
            harvest_stage(store, ["x"], {"data_dir": str(tmp_path / "d"), "trap_domains": [TRAP]})
        with pytest.raises(NotConfigured, match="trap_domains"):
            harvest_stage(store, ["x"], {"data_dir": str(tmp_path / "d"), "trap_domains": []})


def test_harvester_asn_comes_from_routing_as_of_the_visit(tmp_path: Path) -> None:
    """A harvester on McColo space in 2008 maps to AS26780 with the 2008 RouteViews table."""
    from conftest import shared
    from trapline.store.routing import import_routing

    real = shared("routing", "routeviews-pyasn", "mccolo_AS26780_prefixes_20080501.txt").read_text()
    table = tmp_path / "ipasn_20080501.dat"
    table.write_text("; McColo lines of RouteViews ipasn_20080501_v12.dat (CC BY 4.0)\n" + real)
    settings = load_settings({"data_dir": str(tmp_path / "data"), "trap_domains": [TRAP]})
    secret = addresses.site_secret(settings)
    when = datetime(2008, 5, 2, tzinfo=UTC)
    spool = Spool(tmp_path / "spool")
    spool.write_now(
        [
            _visit(secret, 0, "208.66.194.17", when, "McColo harvester"),
            _mail(
                spam_bodies(1)[0],
                [addresses.encode(0, secret, TRAP)],
                when + timedelta(minutes=5),
                "192.0.2.1",
            ),
        ]
    )
    with open_store(tmp_path / "data") as store:
        assert harvesters(store) == []  # nothing linked yet
        import_routing(store, table, fmt="pyasn")
        drain(spool, store, settings)
        ranked = harvesters(store)
    assert [(h.ip, h.asn, h.first_spam_delay_s) for h in ranked] == [
        ("208.66.194.17", 26780, 300.0)
    ]
