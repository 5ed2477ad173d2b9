"""``Responder.answer`` without sockets: the fast path against the plain statement, a fuzzer of
malformed packets, http:BL and network zones, and hostile packets (compression loops, giants)."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared
from dnsbl_helpers import ZONE, a_values, expected_senders, ingest_real, reversed_name
from trapline.config import load_settings
from trapline.serve.dnsbl.answer import Responder, ZoneConfig
from trapline.serve.dnsbl.run import read_only_source
from trapline.serve.dnsbl.server import RateLimiter
from trapline.serve.dnsbl.zones import (
    HttpblList,
    IpList,
    ListingData,
    NetList,
    build_index,
    httpbl_score,
)

NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("dnsbl-answer") / "data"
    settings = ingest_real(
        data,
        shared("mail", "nazario-phishing-2005", "phishing0.mbox"),
        shared("mail", "personal-spam-2023-2025"),
    )
    settings["dnsbl_max_age_days"] = 0
    listing = read_only_source(settings)()
    responder = Responder([ZoneConfig.from_settings(ZONE, settings)], build_index(listing))
    return {"responder": responder, "expected": expected_senders(data), "settings": settings}


def _queries(expected: dict[str, Any]) -> list[bytes]:
    rng = random.Random(3)
    out = []
    ips = [*sorted(expected), "127.0.0.2", "127.0.0.1", "10.1.2.3", "2001:db8::1"]
    for ip in ips:
        for zone in (ZONE, f"senders.{ZONE}", f"dictionary.{ZONE}", f"networks.{ZONE}"):
            name = reversed_name(ip, zone)
            if rng.random() < 0.3:
                name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
            for rdtype in ("A", "TXT", "ANY", "AAAA"):
                for edns in (False, 0):
                    q = dns.message.make_query(name, rdtype, use_edns=edns)
                    q.id = rng.randrange(65536)
                    if rng.random() < 0.5:
                        q.flags &= ~0x0100  # RD off
                    out.append(q.to_wire())
    return out


def test_fast_path_equals_the_plain_statement(real: dict[str, Any]) -> None:
    r = real["responder"]
    queries = _queries(real["expected"])
    assert len(queries) > 3000
    for q in queries:
        assert r.answer(q) == r.answer_plain(q)
    # And the answers are what the store says: every origin listed, with the senders code.
    for ip in real["expected"]:
        q = dns.message.make_query(reversed_name(ip, f"senders.{ZONE}"), "A")
        assert a_values(dns.message.from_wire(r.answer(q.to_wire()))) == ["127.0.0.2"]


def _mutations(seed_packets: list[bytes], n: int) -> list[bytes]:
    rng = random.Random(1234)
    out: list[bytes] = []
    while len(out) < n:
        base = bytearray(rng.choice(seed_packets))
        kind = rng.randrange(8)
        if kind == 0:  # truncated anywhere
            out.append(bytes(base[: rng.randrange(len(base))]))
        elif kind == 1:  # bit flips
            for _ in range(rng.randrange(1, 6)):
                i = rng.randrange(len(base))
                base[i] ^= 1 << rng.randrange(8)
            out.append(bytes(base))
        elif kind == 2:  # random garbage of any size up to a giant datagram
            out.append(rng.randbytes(rng.choice([0, 1, 11, 12, 13, 40, 512, 4096, 65535])))
        elif kind == 3:  # header counts lie
            struct.pack_into("!HHHH", base, 4, *(rng.randrange(65536) for _ in range(4)))
            out.append(bytes(base))
        elif kind == 4:  # a compression pointer loop where the name starts
            out.append(bytes(base[:12]) + b"\xc0\x0c" + b"\x00\x01\x00\x01")
        elif kind == 5:  # a label longer than 63 / a name longer than 255
            out.append(bytes(base[:12]) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01")
            out.append(bytes(base[:12]) + (b"\x3f" + b"b" * 63) * 5 + b"\x00\x00\x01\x00\x01")
        elif kind == 6:  # random opcode / QR / class / type
            base[2] = rng.randrange(256)
            base[-4:] = rng.randbytes(4)
            out.append(bytes(base))
        else:  # trailing junk and bogus additional records
            struct.pack_into("!H", base, 10, rng.randrange(1, 4))
            out.append(bytes(base) + rng.randbytes(rng.randrange(30)))
    return out


def test_fuzzed_malformed_packets_are_answered_or_dropped(real: dict[str, Any]) -> None:
    r = real["responder"]
    packets = _mutations(_queries(real["expected"])[:400], 5000)
    answered = dropped = 0
    for p in packets:
        reply = r.answer(p)
        assert reply == r.answer_plain(p)
        if reply is None:
            dropped += 1
            assert len(p) < 12 or p[2] & 0x80  # only headerless packets and responses
            continue
        answered += 1
        assert len(reply) <= 512 and reply[:2] == p[:2] and reply[2] & 0x80
        msg = dns.message.from_wire(reply, ignore_trailing=True)  # dnspython can read it
        assert msg.rcode() in (0, 1, 3, 4, 5) or msg.rcode() == 16
    assert answered > 2500 and dropped > 100


@settings(max_examples=800, deadline=None)
@given(st.binary(min_size=0, max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    r = _small_responder()
    reply = r.answer(data)
    assert reply == r.answer_plain(data)
    if reply is not None:
        assert reply[:2] == data[:2]


def test_hostile_packets_get_formerr(real: dict[str, Any]) -> None:
    r = real["responder"]
    header = struct.pack("!HHHHHH", 77, 0x0100, 1, 0, 0, 0)
    loop = header + b"\xc0\x0c\x00\x01\x00\x01"
    self_loop = header + b"\x01a\xc0\x0e\x00\x01\x00\x01"
    giant = header + (b"\x3f" + b"x" * 63) * 1000 + b"\x00\x00\x01\x00\x01"
    for packet in (loop, self_loop, giant, header, header + b"\x05abc"):
        reply = dns.message.from_wire(r.answer(packet))
        assert reply.id == 77 and reply.rcode() == dns.rcode.FORMERR
    # Two questions, an answer in a query, opcode NOTIFY: FORMERR / NOTIMP.
    two = struct.pack("!HHHHHH", 5, 0, 2, 0, 0, 0) + (b"\x01a\x00\x00\x01\x00\x01" * 2)
    assert dns.message.from_wire(r.answer(two)).rcode() == dns.rcode.FORMERR
    notify = struct.pack("!HHHHHH", 6, 4 << 11, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01"
    assert dns.message.from_wire(r.answer(notify)).rcode() == dns.rcode.NOTIMP
    # A response is never answered (no reflection loops between two servers).
    response = bytearray(dns.message.make_query(f"2.0.0.127.{ZONE}", "A").to_wire())
    response[2] |= 0x80
    assert r.answer(bytes(response)) is None
    # EDNS version 1: BADVERS.
    q = dns.message.make_query(f"2.0.0.127.{ZONE}", "A", use_edns=1)
    assert dns.message.from_wire(r.answer(q.to_wire())).rcode() == dns.rcode.BADVERS


# --- http:BL, networks, the other lists (crafted ground truth) ------------------------------------


def _small_responder(**extra: Any) -> Responder:
    day = 86400
    data = ListingData(
        built_at=int(NOW),
        max_age_s=0,
        lists={
            "senders": IpList.from_ips(
                "senders", ["192.0.2.1", "2001:db8::7"], [int(NOW) - day] * 2, [3, 1]
            ),
            "dictionary": IpList.from_ips(
                "dictionary", ["192.0.2.1", "198.51.100.9"], [int(NOW)] * 2, [2, 5]
            ),
            "harvesters": IpList.from_ips(
                "harvesters", ["203.0.113.5"], [int(NOW) - 2 * day], [40]
            ),
        },
        networks=NetList(
            ["198.18.0.0/15", "198.18.4.0/24", "2001:db8:100::/40"],
            [64500, 64500, 64501],
            [int(NOW)] * 3,
            [12, 12, 3],
        ),
        httpbl=HttpblList(
            ["203.0.113.5", "203.0.113.6", "203.0.113.7"],
            [2, 4, 1 | 2 | 4],
            [int(NOW) - 3 * day, int(NOW), int(NOW) - 400 * day],
            [100, 1, 10_000],
        ),
    )
    settings = {**load_settings({}), **extra}
    return Responder([ZoneConfig.from_settings(ZONE, settings)], build_index(data), lambda: NOW)


def _ask(r: Responder, name: str, rdtype: str = "A") -> dns.message.Message:
    reply = r.answer(dns.message.make_query(name, rdtype).to_wire())
    assert reply is not None
    return dns.message.from_wire(reply)


def test_every_list_has_its_code_and_the_apex_combines_them() -> None:
    r = _small_responder()
    assert a_values(_ask(r, reversed_name("192.0.2.1"))) == ["127.0.0.2", "127.0.0.3"]
    assert a_values(_ask(r, reversed_name("192.0.2.1", f"dictionary.{ZONE}"))) == ["127.0.0.3"]
    assert a_values(_ask(r, reversed_name("203.0.113.5", f"harvesters.{ZONE}"))) == ["127.0.0.4"]
    assert _ask(r, reversed_name("203.0.113.5", f"senders.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    # Networks: any address inside a listed prefix, nested prefixes merged, IPv6 too.
    for ip in ("198.18.0.1", "198.19.255.255", "198.18.4.4", "2001:db8:1ff::1"):
        assert a_values(_ask(r, reversed_name(ip, f"networks.{ZONE}"))) == ["127.0.0.9"], ip
    assert a_values(_ask(r, reversed_name("198.18.0.1"))) == ["127.0.0.9"]
    assert _ask(r, reversed_name("198.20.0.1", f"networks.{ZONE}")).rcode() == dns.rcode.NXDOMAIN
    txt = _ask(r, reversed_name("198.18.7.7", f"networks.{ZONE}"), "TXT")
    (text,) = [b"".join(x.strings).decode() for x in txt.answer[0]]
    assert text.startswith("network of a top-ranked AS: 198.18.0.0/15 AS64500, 12 pieces")
    assert text.endswith("/api/v1/ip/198.18.7.7")
    # The fast path (apex with networks, list zones) gives the plain statement's bytes.
    for ip in (
        "192.0.2.1",
        "198.18.4.4",
        "2001:db8:1ff::1",
        "2001:db8::7",
        "203.0.113.5",
        "10.0.0.1",
    ):
        for zone in (ZONE, f"senders.{ZONE}", f"networks.{ZONE}", f"harvesters.{ZONE}"):
            wire_q = dns.message.make_query(reversed_name(ip, zone), "A", use_edns=False).to_wire()
            assert r.answer(wire_q) == r.answer_plain(wire_q), (ip, zone)
    # Non-canonical names are not addresses: NXDOMAIN.
    assert _ask(r, f"01.2.0.192.senders.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert _ask(r, f"1.2.0.192.1.senders.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_httpbl_zone_answers_days_score_type() -> None:
    r = _small_responder()
    key = "abcdefghijkl"
    got = a_values(_ask(r, f"{key}.5.113.0.203.httpbl.{ZONE}"))
    assert got == [f"127.3.{httpbl_score(100)}.2"] == ["127.3.25.2"]  # 3 days, 100 hits, harvester
    assert a_values(_ask(r, f"{key}.6.113.0.203.httpbl.{ZONE}")) == ["127.0.1.4"]
    assert a_values(_ask(r, f"{key}.7.113.0.203.httpbl.{ZONE}")) == ["127.255.50.7"]  # days capped
    assert _ask(r, f"{key}.8.113.0.203.httpbl.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    # Bad keys: NXDOMAIN, as for an unlisted visitor.
    for bad in ("short", "abcdefghijk1", "ABCDEFGHIJKL"[:11]):
        assert _ask(r, f"{bad}.5.113.0.203.httpbl.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    # The documented test entries answer with themselves.
    tests = [f"127.1.1.{t}" for t in range(8)] + [f"127.1.{s}.1" for s in (10, 20, 40, 80)]
    tests += [f"127.{d}.1.1" for d in (10, 20, 40, 80)]
    for ip in tests:
        a, b, c, d = ip.split(".")
        assert a_values(_ask(r, f"{key}.{d}.{c}.{b}.{a}.httpbl.{ZONE}")) == [ip]
    # Configured keys: only those.
    keyed = _small_responder(dnsbl_httpbl_keys=["mysecretkeyz"])
    assert _ask(keyed, f"{key}.5.113.0.203.httpbl.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert a_values(_ask(keyed, f"mysecretkeyz.5.113.0.203.httpbl.{ZONE}")) == ["127.3.25.2"]


def test_httpbl_score_is_logarithmic_in_hits() -> None:
    assert [httpbl_score(h) for h in (1, 10, 100, 10_000, 1_000_000, 10**30)] == [
        1, 12, 25, 50, 75, 255,
    ]  # fmt: skip


def test_rate_limiter_refills_per_source() -> None:
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(5)] == [True, True, True, False, False]
    assert limiter.allow("b")
    now[0] = 1.0
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_networks_zone_lists_the_top_ranked_ases_from_the_store(tmp_path: Path) -> None:
    """Crafted routing + messages (ground truth), ranked by analyze.networks, listed by prefix."""
    from test_networks import _crafted
    from trapline.serve.dnsbl.listings import load_listings
    from trapline.store.duckdb import open_store

    _crafted(tmp_path)
    settings = load_settings({"data_dir": str(tmp_path / "data")})
    settings.update(dnsbl_max_age_days=0, dnsbl_networks_top=2)
    with open_store(tmp_path / "data") as store:
        data = load_listings(store, settings, NOW)
        from trapline.analyze.networks import network_scores

        top = [n.asn for n in network_scores(store, settings, by="asn", top=2)]
    assert set(data.networks.asns) == set(top) and len(top) == 2
    r = Responder([ZoneConfig.from_settings(ZONE, settings)], build_index(data), lambda: NOW)
    table = {100: "11.0.0.0/16", 200: "12.0.0.0/24", 300: "13.0.0.0/22", 400: "14.0.0.0/24"}
    for asn, prefix in table.items():
        inside = prefix.split("/")[0].rsplit(".", 1)[0] + ".77"
        got = _ask(r, reversed_name(inside, f"networks.{ZONE}"))
        assert (a_values(got) == ["127.0.0.9"]) == (asn in top), (asn, got.rcode())
    # The crafted store's dictionary attackers are listed too.
    assert sorted(data.lists["dictionary"].ips) == ["14.0.0.1", "14.0.0.2"]
    senders = dict(zip(data.lists["senders"].ips, data.lists["senders"].hits, strict=True))
    # m6 and m7 both came from 13.0.0.5.
    assert senders == {
        "11.0.0.1": 1, "11.0.0.2": 1, "11.0.0.3": 1, "11.0.0.4": 1, "12.0.0.9": 1, "13.0.0.5": 2,
    }  # fmt: skip
