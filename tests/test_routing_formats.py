"""Routing-table readers: pyasn .dat, MRT (real truncated RIB + RFC 6396 records), CSV, names."""

from __future__ import annotations

import bz2
import struct
from datetime import date
from pathlib import Path

import pytest

from conftest import TESTS_DATA, shared
from trapline.errors import RoutingDataError
from trapline.routing.formats import (
    cidr_route,
    date_from_name,
    guess_format,
    read_asnames_json,
    read_ip_range_csv,
    read_mrt,
    read_pyasn_dat,
    read_table,
)

PYASN = ("routing", "routeviews-pyasn")


def test_pyasn_dat_reads_every_prefix_of_the_2008_table() -> None:
    table = read_pyasn_dat(shared(*PYASN, "ipasn_20080501_v12.dat.gz"))
    # The header says "; CIDRs : 270849"; SOURCE.txt says the same.
    assert len(table.routes) == 270_849
    assert all(r.family == 4 and 0 <= r.length <= 32 for r in table.routes)
    mccolo = {f"{cidr_route(p, 0).start}/{cidr_route(p, 0).length}" for p in _mccolo_prefixes()}
    found = {f"{r.start}/{r.length}" for r in table.routes if r.asn == 26780}
    assert found == mccolo


def _mccolo_prefixes() -> list[str]:
    text = (TESTS_DATA / "routing" / "mccolo_AS26780_prefixes_20080501.txt").read_text()
    return [line.split("\t")[0] for line in text.splitlines() if line.strip()]


def test_truncated_mrt_sample_matches_the_dat_made_from_the_same_rib() -> None:
    """The sample is the first MiB of rib.20080501.0644.bz2, from which the .dat was built."""
    mrt = read_mrt(shared(*PYASN, "rib.20080501.0644_firstMB.bz2"))
    dat = read_pyasn_dat(shared(*PYASN, "ipasn_20080501_v12.dat.gz"))
    assert any("truncated" in note for note in mrt.notes), mrt.notes
    by_prefix = {(r.start, r.length): r.asn for r in dat.routes}
    missing = [r for r in mrt.routes if (r.start, r.length) not in by_prefix]
    differ = [r for r in mrt.routes if by_prefix.get((r.start, r.length), r.asn) != r.asn]
    print(
        f"MRT sample: {len(mrt.routes)} prefixes, {len(missing)} not in .dat, {len(differ)} differ"
    )
    assert len(mrt.routes) > 3000
    assert missing == [] and differ == []


@pytest.mark.parametrize("cut", [1, 11, 12, 500, 4097, 65_537, 1_000_003])
def test_mrt_cut_anywhere_parses_up_to_the_cut(tmp_path: Path, cut: int) -> None:
    # The real file is a cut bz2 stream: decompress incrementally to get what it holds.
    raw = bz2.BZ2Decompressor().decompress(
        shared(*PYASN, "rib.20080501.0644_firstMB.bz2").read_bytes()
    )
    whole = read_mrt(_write(tmp_path / "whole.mrt", raw[:2_000_000]))
    part_path = _write(tmp_path / "part.mrt", raw[: 12 + cut])
    if cut < 12 + 22:
        with pytest.raises(RoutingDataError):
            read_mrt(part_path)  # not one complete record: a clear error, not a crash
        return
    part = read_mrt(part_path)
    assert any("truncated" in n for n in part.notes)
    # Every prefix read before the cut is what the longer read says, in the same order.
    assert part.routes == whole.routes[: len(part.routes)]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- RFC 6396 records built by hand (TABLE_DUMP_V2, IPv6, AS_SET, AS4_PATH) ------------------


def _mrt(kind: int, sub: int, body: bytes) -> bytes:
    return struct.pack(">IHHI", 1_225_497_600, kind, sub, len(body)) + body


def _attr(code: int, payload: bytes) -> bytes:
    if len(payload) > 255:  # extended length bit (RFC 4271 §4.3)
        return bytes([0x50, code]) + struct.pack(">H", len(payload)) + payload
    return bytes([0x40, code, len(payload)]) + payload


def _path(segments: list[tuple[int, list[int]]], size: int) -> bytes:
    return b"".join(
        bytes([k, len(a)]) + b"".join(x.to_bytes(size, "big") for x in a) for k, a in segments
    )


def _peer_index() -> bytes:
    peers = bytes([0x02]) + bytes(4) + bytes([192, 0, 2, 1]) + (4_200_000_001).to_bytes(4, "big")
    return _mrt(13, 1, bytes(4) + struct.pack(">H", 2) + b"rv" + struct.pack(">H", 1) + peers)


def _rib(sub: int, prefix: bytes, length: int, entries: list[bytes]) -> bytes:
    body = struct.pack(">IB", 7, length) + prefix + struct.pack(">H", len(entries))
    for attrs in entries:
        body += struct.pack(">HIH", 0, 0, len(attrs)) + attrs
    return _mrt(13, sub, body)


def test_table_dump_v2_ipv4_ipv6_4byte_asns_and_as_set(tmp_path: Path) -> None:
    seq = 2
    records = _peer_index()
    # 10.0.0.0/8 would be special-purpose; the parser does not care, the lookup layer does.
    records += _rib(2, bytes([203, 0]), 16, [_attr(2, _path([(seq, [3356, 196_615])], 4))])
    # MOAS: two peers say 64500, one says 64501 → the majority wins.
    records += _rib(
        2,
        bytes([198, 51, 100]),
        24,
        [
            _attr(2, _path([(seq, [1, 64501])], 4)),
            _attr(2, _path([(seq, [2, 64500])], 4)),
            _attr(2, _path([(seq, [3, 64500])], 4)),
        ],
    )
    # An aggregate ending in AS_SET {65010, 65002}: ambiguous, lowest kept and noted.
    records += _rib(
        2, bytes([192, 0, 2]), 24, [_attr(2, _path([(seq, [174]), (1, [65010, 65002])], 4))]
    )
    records += _rib(
        4, bytes.fromhex("20010db8"), 32, [_attr(2, _path([(seq, [6939, 4_200_000_001])], 4))]
    )
    table = read_mrt(_write(tmp_path / "rib.20081101.0000", records))
    assert len(table.routes) == 4
    by_start = {r.start: r.asn for r in table.routes}
    assert by_start[cidr_route("203.0.0.0/16", 0).start] == 196_615
    assert by_start[cidr_route("198.51.100.0/24", 0).start] == 64500
    assert by_start[cidr_route("192.0.2.0/24", 0).start] == 65002
    assert by_start[cidr_route("2001:db8::/32", 0).start] == 4_200_000_001
    assert any("AS_SET" in n for n in table.notes)


def test_table_dump_v1_as_trans_uses_as4_path(tmp_path: Path) -> None:
    """RFC 6793 §4.2.3: a 2-byte speaker shows AS_TRANS and carries the real path in AS4_PATH."""
    attrs = (
        _attr(1, b"\x00")
        + _attr(2, _path([(2, [701, 23456])], 2))
        + _attr(17, _path([(2, [701, 393_217])], 4))
    )
    body = struct.pack(">HH", 0, 1) + bytes([208, 66, 192, 0]) + bytes([22, 1]) + bytes(4)
    body += bytes([192, 0, 2, 9]) + struct.pack(">HH", 701, len(attrs)) + attrs
    table = read_mrt(_write(tmp_path / "dump.mrt", _mrt(12, 1, body)))
    assert [(r.length, r.asn) for r in table.routes] == [(22, 393_217)]


def test_ip_range_csv_keeps_ranges_and_org_names(tmp_path: Path) -> None:
    src = shared("routing", "ip-location-db-asn-2026", "asn-ipv4.csv")
    with src.open("rb") as fh:
        head = b"".join(fh.readline() for _ in range(2000))
    table = read_ip_range_csv(_write(tmp_path / "asn-ipv4.csv", head))
    assert len(table.routes) == 2000
    first = table.routes[0]  # 1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
    assert (first.length, first.asn) == (24, 13335)
    assert table.names[13335] == "Cloudflare, Inc."
    # 1.0.128.0-1.0.196.255 is not a CIDR block: kept as a range.
    odd = [r for r in table.routes if r.start == cidr_route("1.0.128.0/32", 0).start]
    assert odd and odd[0].length == -1 and odd[0].end == cidr_route("1.0.196.255/32", 0).start


def test_asnames_json() -> None:
    names = read_asnames_json(shared(*PYASN, "asnames.json"))
    assert len(names) == 77_586  # SOURCE.txt
    assert names[26780].startswith("KMOB")  # the later holder, as SOURCE.txt warns


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ipasn_20080501_v12.dat.gz", date(2008, 5, 1)),
        ("rib.20080501.0644.bz2", date(2008, 5, 1)),
        ("rib.20081101.0000.bz2", date(2008, 11, 1)),
        ("ipasn6_20151101.dat.gz", date(2015, 11, 1)),
        ("bview.2014-01-12.1600.gz", date(2014, 1, 12)),
        ("asn-ipv4.csv", None),
        ("ipasn_20081399.dat", None),
    ],
)
def test_date_from_name(name: str, expected: date | None) -> None:
    assert date_from_name(Path(name)) == expected


def test_guess_format_and_errors(tmp_path: Path) -> None:
    assert guess_format(shared(*PYASN, "rib.20080501.0644_firstMB.bz2")) == "mrt"
    assert guess_format(shared(*PYASN, "ipasn_20140513.dat.gz")) == "pyasn"
    junk = _write(tmp_path / "table", b"hello world\n")
    with pytest.raises(RoutingDataError, match="--format"):
        read_table(junk)
    with pytest.raises(RoutingDataError, match="pyasn"):
        read_table(junk, "pyasn")
