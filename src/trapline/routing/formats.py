"""Readers for routing tables: pyasn ``.dat``, MRT RIB dumps, IP-range CSV, and AS-name JSON.

Every reader returns a ``ParsedTable``: one row per announced prefix (or range) with its origin AS,
as plain Python tuples. Building the fast lookup structure is ``trapline.routing.index``'s job; keeping the two
apart lets a reader be tested against another reader (the MRT sample against the ``.dat`` made
from the same RIB) without any index in between.

MRT follows RFC 6396 (TABLE_DUMP §4.2, TABLE_DUMP_V2 §4.3); AS_PATH follows RFC 4271 §4.3 and
RFC 6793 (4-byte ASNs, AS4_PATH). Compressed inputs (.gz, .bz2, .xz) are read up to the point
where a truncated stream ends, and the table says so in its notes instead of failing.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import lzma
import re
import socket
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from trapline.errors import RoutingDataError

FORMATS = ("pyasn", "mrt", "ip-range-csv")
_DECLARED = re.compile(r";\s*CIDRs\s*:\s*(\d+)")
AS_TRANS = 23456  # RFC 6793 §9: placeholder for a 4-byte ASN in a 2-byte AS_PATH


@dataclass(slots=True, frozen=True)
class Route:
    """One announced block: ``[start, end]`` as integers; ``length`` is -1 for a non-CIDR range."""

    family: int  # 4 or 6
    start: int
    end: int
    length: int
    asn: int


@dataclass(slots=True, frozen=True)
class ParsedTable:
    routes: tuple[Route, ...]
    names: dict[int, str] = field(default_factory=dict)  # org names carried by the file itself
    notes: tuple[str, ...] = ()  # truncation, skipped records, ambiguous origins

    @property
    def partial(self) -> bool:
        """Whether the file held less than the whole table (see ``PARTIAL``)."""
        return any(note.startswith(PARTIAL) for note in self.notes)


# Note prefix of a table known to be incomplete (a cut download, fewer prefixes than its header
# declares): such a snapshot is not used to map mail unless the operator allows it.
PARTIAL = "partial: "
MAX_ASN = (1 << 32) - 1


def parse_asn(text: str) -> int:
    """An AS number from text; ValueError unless it is 0..2^32-1 (4-byte ASNs, RFC 6793)."""
    value = int(text.strip().upper().removeprefix("AS"))
    if not 0 <= value <= MAX_ASN:
        raise ValueError(f"AS number {value} outside 0..{MAX_ASN}")
    return value


def _partial_notes(notes: list[str]) -> list[str]:
    """The reader's notes, a truncated stream marked ``PARTIAL``."""
    return [PARTIAL + n if "truncated" in n and not n.startswith(PARTIAL) else n for n in notes]


# --- bytes in --------------------------------------------------------------------------------


def _decompressor(head: bytes) -> Any:
    """A decompressor for the stream starting with ``head``, or None for plain bytes."""
    if head[:3] == b"BZh":
        return bz2.BZ2Decompressor()
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMADecompressor()
    if head[:2] == b"\x1f\x8b":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    return None


def iter_chunks(path: Path, notes: list[str], size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed bytes of ``path`` in chunks (.gz, .bz2, .xz or plain; multi-stream too).

    A stream that ends early (a truncated download, or the 1 MiB RIB sample) yields what it holds
    and appends a note instead of raising.
    """
    try:
        fh = Path(path).open("rb")  # noqa: SIM115 (a generator: closed by the with below)
    except OSError as exc:
        raise RoutingDataError(f"cannot read {path}: {exc.strerror}; check the path") from exc
    with fh:
        block = fh.read(size)
        dec = _decompressor(block)
        if dec is None:
            while block:
                yield block
                block = fh.read(size)
            return
        total = 0
        try:
            while block:
                out = dec.decompress(block)
                total += len(out)
                yield out
                while dec.eof and dec.unused_data:  # the next stream of a multi-stream file
                    rest, dec = dec.unused_data, _decompressor(dec.unused_data)
                    if dec is None:
                        break
                    out = dec.decompress(rest)
                    total += len(out)
                    yield out
                block = fh.read(size)
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
            raise RoutingDataError(
                f"{path}: corrupt compressed data ({exc}); re-download it"
            ) from exc
        if dec is not None and not dec.eof:
            notes.append(
                f"compressed stream ends early (truncated file): read {total:,} bytes before the cut"
            )


def read_bytes(path: Path) -> tuple[bytes, list[str]]:
    """The decompressed bytes of ``path`` and notes; a truncated stream yields what it holds."""
    notes: list[str] = []
    return b"".join(iter_chunks(path, notes)), notes


def _ip_to_int(text: str) -> tuple[int, int]:
    """(family, integer) of an address in text form; ValueError when it is not one."""
    if ":" in text:
        try:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
        except OSError as exc:
            raise ValueError(text) from exc
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except OSError as exc:
        raise ValueError(text) from exc


def cidr_route(prefix: str, asn: int) -> Route:
    """A ``Route`` from ``a.b.c.d/len``; host bits are cleared as routers do."""
    net, _, length_text = prefix.strip().partition("/")
    family, value = _ip_to_int(net)
    bits = 32 if family == 4 else 128
    length = int(length_text) if length_text else bits
    if not 0 <= length <= bits:
        raise ValueError(prefix)
    host = (1 << (bits - length)) - 1
    start = value & ~host
    return Route(family, start, start | host, length, asn)


def _dedupe(routes: list[Route]) -> tuple[Route, ...]:
    """Keep the first row per block: later duplicates in a RIB are other peers' views."""
    seen: set[tuple[int, int, int]] = set()
    out = []
    for r in routes:
        key = (r.family, r.start, r.end)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return tuple(out)


# --- pyasn .dat --------------------------------------------------------------------------------


def read_pyasn_dat(path: Path) -> ParsedTable:
    """pyasn's text format: ``;`` comment lines, then ``<prefix>/<len>\\t<asn>`` per line."""
    data, notes = read_bytes(path)
    notes = _partial_notes(notes)
    routes: list[Route] = []
    bad = bad_asn = lines = 0
    declared: int | None = None
    for line in data.decode("ascii", "replace").splitlines():
        if not line or line.startswith(";"):
            if m := _DECLARED.match(line):  # "; CIDRs         : 270849"
                declared = int(m[1])
            continue
        lines += 1
        prefix, _, asn_text = line.partition("\t")
        try:
            asn = parse_asn(asn_text)
        except ValueError:
            bad_asn += 1  # -1, 2^32 and beyond: skipped and counted, never an OverflowError
            continue
        try:
            routes.append(cidr_route(prefix, asn))
        except ValueError:
            bad += 1
    if not routes:
        raise RoutingDataError(f"{path}: no '<prefix>/<len><TAB><asn>' lines; is it a pyasn .dat?")
    if bad:
        notes.append(f"{bad} unparseable lines skipped")
    if bad_asn:
        notes.append(f"{bad_asn} lines with an AS number outside 0..{MAX_ASN} skipped")
    if declared is not None and lines < declared:
        notes.append(f"{PARTIAL}{lines:,} prefix lines of the {declared:,} the header declares")
    return ParsedTable(_dedupe(routes), notes=tuple(notes))


# --- IP-range CSV (ip-location-db: first,last,asn,org) ---------------------------------------


def read_ip_range_csv(path: Path) -> ParsedTable:
    """``first_ip,last_ip,asn[,org]`` rows; ranges need not be CIDR-aligned."""
    data, notes = read_bytes(path)
    notes = _partial_notes(notes)
    routes: list[Route] = []
    names: dict[int, str] = {}
    bad = 0
    for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))):
        if len(row) < 3 or row[0].startswith("#"):
            continue
        try:
            fam, first = _ip_to_int(row[0].strip())
            fam2, last = _ip_to_int(row[1].strip())
            asn = parse_asn(row[2])
        except ValueError:
            bad += 1  # header lines land here too
            continue
        if fam != fam2 or last < first:
            bad += 1
            continue
        size = last - first + 1
        aligned = size & (size - 1) == 0 and first % size == 0
        bits = 32 if fam == 4 else 128
        length = bits - size.bit_length() + 1 if aligned else -1
        routes.append(Route(fam, first, last, length, asn))
        if len(row) > 3 and row[3].strip():
            names.setdefault(asn, row[3].strip())
    if not routes:
        raise RoutingDataError(f"{path}: no 'first_ip,last_ip,asn,org' rows; check --format")
    if bad:
        notes.append(f"{bad} rows skipped (header, unparseable, or AS number out of range)")
    return ParsedTable(_dedupe(routes), names=names, notes=tuple(notes))


# --- AS names ------------------------------------------------------------------------------------


def read_asnames_json(path: Path) -> dict[int, str]:
    """pyasn's ``asnames.json``: ``{"ASN": "HANDLE - Org, CC"}``."""
    data, _ = read_bytes(path)
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise RoutingDataError(f"{path}: not JSON ({exc}); expected {{asn: name}}") from exc
    if not isinstance(obj, dict):
        raise RoutingDataError(f"{path}: expected a JSON object mapping ASN to name")
    out: dict[int, str] = {}
    for key, value in obj.items():
        text = str(key).upper().removeprefix("AS")
        if text.isdigit() and isinstance(value, str) and int(text) <= MAX_ASN:
            out[int(text)] = value
    return out


# --- MRT (RFC 6396) -------------------------------------------------------------------------------

TABLE_DUMP, TABLE_DUMP_V2 = 12, 13
PEER_INDEX_TABLE, RIB_IPV4_UNICAST, RIB_IPV6_UNICAST = 1, 2, 4
ATTR_AS_PATH, ATTR_AS4_PATH = 2, 17
AS_SET, AS_SEQUENCE = 1, 2


@dataclass(slots=True)
class _MrtStats:
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    as_set_origins: int = 0
    peers: int = 0


def _attrs(buf: bytes) -> dict[int, bytes]:
    """Path attributes by type code (RFC 4271 §4.3); bit 0x10 of the flags = 2-byte length."""
    out: dict[int, bytes] = {}
    i, n = 0, len(buf)
    while i + 3 <= n:
        flags, code = buf[i], buf[i + 1]
        if flags & 0x10:
            (length,) = struct.unpack_from(">H", buf, i + 2)
            i += 4
        else:
            length = buf[i + 2]
            i += 3
        out.setdefault(code, buf[i : i + length])
        i += length
    return out


def _origin(path: bytes, asn_size: int, stats: _MrtStats) -> int | None:
    """Origin AS: the last AS of the last AS_SEQUENCE/AS_SET segment (RFC 4271 §5.1.2)."""
    fmt = ">H" if asn_size == 2 else ">I"
    last_kind, last_asns = 0, ()
    i, n = 0, len(path)
    while i + 2 <= n:
        kind, count = path[i], path[i + 1]
        i += 2
        end = i + count * asn_size
        if end > n:
            break
        if kind in (AS_SET, AS_SEQUENCE):  # confederation segments (3, 4) are not origins
            last_kind = kind
            last_asns = tuple(
                struct.unpack_from(fmt, path, i + k * asn_size)[0] for k in range(count)
            )
        i = end
    if not last_asns:
        return None
    if last_kind == AS_SET and len(last_asns) > 1:
        # An aggregate's origin is ambiguous; pick the lowest member so reruns agree.
        stats.as_set_origins += 1
        return min(last_asns)
    return last_asns[-1]


def _entry_origin(attr_buf: bytes, asn_size: int, stats: _MrtStats) -> int | None:
    attrs = _attrs(attr_buf)
    path = attrs.get(ATTR_AS_PATH)
    if path is None:
        return None
    origin = _origin(path, asn_size, stats)
    if origin == AS_TRANS and asn_size == 2 and ATTR_AS4_PATH in attrs:
        # RFC 6793 §4.2.3: a 2-byte speaker carried the real 4-byte path in AS4_PATH.
        origin = _origin(attrs[ATTR_AS4_PATH], 4, stats) or origin
    return origin


def _prefix_route(family: int, raw: bytes, length: int, asn: int) -> Route:
    width = 4 if family == 4 else 16
    value = int.from_bytes(raw.ljust(width, b"\0")[:width], "big")
    bits = width * 8
    host = (1 << (bits - length)) - 1
    start = value & ~host
    return Route(family, start, start | host, length, asn)


def _table_dump(body: bytes, afi: int, stats: _MrtStats) -> Route | None:
    """RFC 6396 §4.2: one prefix, one peer's entry, 2-byte ASNs."""
    width = 4 if afi == 1 else 16
    offset = 4  # view, sequence
    raw = body[offset : offset + width]
    length = body[offset + width]
    offset += width + 2 + 4 + width + 2  # prefix, len, status, originated, peer ip, peer as
    (attr_len,) = struct.unpack_from(">H", body, offset)
    origin = _entry_origin(body[offset + 2 : offset + 2 + attr_len], 2, stats)
    if origin is None:
        stats.skipped["no AS_PATH"] += 1
        return None
    return _prefix_route(4 if afi == 1 else 6, raw, length, origin)


def _rib_entry(body: bytes, family: int, stats: _MrtStats) -> Route | None:
    """RFC 6396 §4.3.2: one prefix, entries from many peers; ASNs are 4 bytes (§4.3.4)."""
    length = body[4]
    octets = (length + 7) // 8
    raw = body[5 : 5 + octets]
    (count,) = struct.unpack_from(">H", body, 5 + octets)
    offset = 7 + octets
    votes: Counter[int] = Counter()
    first: int | None = None
    for _ in range(count):
        _peer, _ts, attr_len = struct.unpack_from(">HIH", body, offset)
        origin = _entry_origin(body[offset + 8 : offset + 8 + attr_len], 4, stats)
        offset += 8 + attr_len
        if origin is not None:
            votes[origin] += 1
            first = origin if first is None else first
    if first is None:
        stats.skipped["no AS_PATH"] += 1
        return None
    # Peers can disagree (MOAS); the origin most peers see wins, ties go to the first peer.
    best = max(votes.values())
    origin = first if votes[first] == best else min(a for a, v in votes.items() if v == best)
    return _prefix_route(family, raw, length, origin)


def _peer_index(body: bytes, stats: _MrtStats) -> None:
    """RFC 6396 §4.3.1: read for validation; origins do not depend on which peer saw them."""
    (name_len,) = struct.unpack_from(">H", body, 4)
    (count,) = struct.unpack_from(">H", body, 6 + name_len)
    stats.peers = count


class _Stream:
    """Exact-size reads over decompressed chunks, so a RIB of gigabytes is never held whole."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = bytearray()
        self.offset = 0  # bytes consumed so far

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.offset += len(out)
        return out


def read_mrt(path: Path) -> ParsedTable:
    """An MRT RIB dump (TABLE_DUMP or TABLE_DUMP_V2), read as a stream, possibly cut short."""
    notes: list[str] = []
    stream = _Stream(iter_chunks(path, notes))
    stats = _MrtStats()
    routes: list[Route] = []
    while True:
        start = stream.offset
        header = stream.read(12)
        if not header:
            break
        if len(header) < 12:
            notes.append(f"last MRT header cut at byte {start:,} (truncated file); stopped there")
            break
        _ts, kind, sub, length = struct.unpack(">IHHI", header)
        body = stream.read(length)
        if len(body) < length:
            notes.append(
                f"MRT record {stats.records + 1:,} cut at byte {start:,} (truncated file); "
                "parsed everything before it"
            )
            break
        stats.records += 1
        try:
            route: Route | None = None
            if kind == TABLE_DUMP and sub in (1, 2):
                route = _table_dump(body, sub, stats)
            elif kind == TABLE_DUMP_V2 and sub == PEER_INDEX_TABLE:
                _peer_index(body, stats)
            elif kind == TABLE_DUMP_V2 and sub in (RIB_IPV4_UNICAST, RIB_IPV6_UNICAST):
                route = _rib_entry(body, 4 if sub == RIB_IPV4_UNICAST else 6, stats)
            else:
                stats.skipped[f"type {kind}/{sub}"] += 1
        except (struct.error, IndexError):
            stats.skipped["malformed record"] += 1
            continue
        if route is not None:
            routes.append(route)
    if stats.records == 0 or (not routes and not stats.peers):
        raise RoutingDataError(f"{path}: no MRT TABLE_DUMP/TABLE_DUMP_V2 records; check --format")
    for reason, count in sorted(stats.skipped.items()):
        notes.append(f"{count:,} records skipped: {reason}")
    if stats.as_set_origins:
        notes.append(f"{stats.as_set_origins:,} AS_SET origins with several members (lowest kept)")
    # The default route says nothing about who originates an address (pyasn drops it too).
    kept = [r for r in routes if r.length != 0]
    return ParsedTable(_dedupe(kept), notes=tuple(notes))


# --- format and date from the file name ----------------------------------------------------------

_DATE_RE = re.compile(
    r"(?<!\d)(19|20)(\d{2})[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])(?!\d)"
)


def date_from_name(path: Path) -> date | None:
    """``ipasn_20080501_v12.dat.gz`` → 2008-05-01; ``rib.20080501.0644.bz2`` → 2008-05-01."""
    m = _DATE_RE.search(Path(path).name)
    if not m:
        return None
    try:
        return date(int(m.group(1) + m.group(2)), int(m.group(3)), int(m.group(4)))
    except ValueError:
        return None


def guess_format(path: Path) -> str:
    """Format from the name, then from the first bytes: MRT is binary, pyasn has tab lines."""
    name = Path(path).name.lower()
    if name.startswith(("rib", "bview", "updates")) or ".mrt" in name:
        return "mrt"
    if ".csv" in name:
        return "ip-range-csv"
    if name.startswith("ipasn") or ".dat" in name:
        return "pyasn"
    data, _ = read_bytes(path)
    head = data[:4096]
    if len(head) >= 12 and struct.unpack_from(">H", head, 4)[0] in (TABLE_DUMP, TABLE_DUMP_V2):
        return "mrt"
    if b"\t" in head:
        return "pyasn"
    if b"," in head:
        return "ip-range-csv"
    raise RoutingDataError(f"{path}: cannot tell the format; pass --format ({', '.join(FORMATS)})")


def read_table(path: Path, fmt: str | None = None) -> ParsedTable:
    """Read any supported routing table; ``fmt`` None means guess from name and content."""
    fmt = fmt or guess_format(path)
    if fmt == "pyasn":
        return read_pyasn_dat(path)
    if fmt == "mrt":
        return read_mrt(path)
    if fmt == "ip-range-csv":
        return read_ip_range_csv(path)
    raise RoutingDataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
