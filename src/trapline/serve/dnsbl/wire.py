"""The narrow DNS wire codec the DNSBL needs: parse one query, build its response.

Only what a DNSBL answers is decoded: a header, one question and an optional EDNS OPT record
(RFC 1035 §4, RFC 6891). Anything else is a ``WireError`` carrying the RCODE to answer with.
Names in a question are read label by label with hard limits and compression pointers are
refused, so a hostile packet cannot loop the parser (RFC 1035 §4.1.4 allows pointers, but no
resolver compresses a single question).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# RFC 1035 §3.2.2 / RFC 3596 / RFC 6891 types and classes we name.
TYPE_A = 1
TYPE_NS = 2
TYPE_SOA = 6
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# RFC 1035 §4.1.1 response codes (+ RFC 6891 §9 BADVERS, extended).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100

MAX_NAME = 255  # RFC 1035 §2.3.4: whole name in wire form
MAX_LABEL = 63
UDP_PLAIN = 512  # RFC 1035 §4.2.1: without EDNS a UDP answer fits in 512 bytes
EDNS_SIZE = 1232  # the DNS flag day 2020 value: no IP fragmentation on common paths

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_QTAIL = struct.Struct("!HH")


class WireError(Exception):
    """The packet is not a query we can parse; ``rcode`` is what to answer."""

    def __init__(self, rcode: int, reason: str) -> None:
        super().__init__(reason)
        self.rcode = rcode


@dataclass(frozen=True, slots=True)
class Query:
    """One parsed question. ``labels`` are lower-cased; ``question`` is the section as sent."""

    id: int
    flags: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    question: bytes
    edns_size: int | None = None  # None: the query had no OPT record
    edns_version: int = 0
    edns_do: bool = False

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def read_name(data: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    """Labels of the uncompressed name at ``pos`` and the offset after it."""
    labels: list[bytes] = []
    total = 1
    n = len(data)
    while True:
        if pos >= n:
            raise WireError(FORMERR, "name runs past the end of the packet")
        length = data[pos]
        if length == 0:
            return tuple(labels), pos + 1
        if length & 0xC0:
            raise WireError(FORMERR, "compressed or extended label in a question")
        total += length + 1
        if total > MAX_NAME:
            raise WireError(FORMERR, "name longer than 255 bytes")
        end = pos + 1 + length
        if end > n:
            raise WireError(FORMERR, "label runs past the end of the packet")
        labels.append(data[pos + 1 : end].lower())
        pos = end


def parse_query(data: bytes) -> Query:
    """Parse ``data`` as a query; ``WireError`` says which RCODE a bad one deserves."""
    if len(data) < 12:
        raise WireError(FORMERR, "shorter than a DNS header")
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if (flags >> 11) & 0xF != 0:
        raise WireError(NOTIMP, "only standard queries (opcode 0) are answered")
    if qd != 1:  # RFC 9619: exactly one question
        raise WireError(FORMERR, "a query must hold exactly one question")
    labels, pos = read_name(data, 12)
    if pos + 4 > len(data):
        raise WireError(FORMERR, "question cut short")
    qtype, qclass = _QTAIL.unpack_from(data, pos)
    question = data[12 : pos + 4]
    pos += 4
    if an or ns:
        raise WireError(FORMERR, "a query carries no answer or authority records")
    edns_size: int | None = None
    version = 0
    do = False
    for _ in range(ar):
        # RFC 6891 §6.1.1: the OPT record's owner is the root; it may appear once.
        owner, pos = read_name(data, pos)
        if pos + 10 > len(data):
            raise WireError(FORMERR, "additional record cut short")
        rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
        pos += 10 + rdlen
        if pos > len(data):
            raise WireError(FORMERR, "additional record data cut short")
        if rtype != TYPE_OPT:
            continue  # TSIG and friends: not supported, ignored
        if owner or edns_size is not None:
            raise WireError(FORMERR, "malformed or repeated OPT record")
        edns_size = max(UDP_PLAIN, rclass)  # RFC 6891 §6.2.3: below 512 means 512
        version = (ttl >> 16) & 0xFF
        do = bool(ttl & 0x8000)
    return Query(ident, flags, labels, qtype, qclass, question, edns_size, version, do)


def name_wire(labels: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Uncompressed wire form of a name given as labels."""
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def text_labels(name: str) -> tuple[bytes, ...]:
    """``"bl.example.org."`` → (b"bl", b"example", b"org")."""
    return tuple(p.encode("ascii").lower() for p in name.strip().strip(".").split(".") if p)


def header(ident: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return _HEADER.pack(ident, flags, qd, an, ns, ar)


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> bytes:
    """One resource record; ``owner`` is wire form or a 2-byte compression pointer."""
    return owner + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


def pointer(offset: int) -> bytes:
    """A compression pointer to ``offset`` (RFC 1035 §4.1.4)."""
    return struct.pack("!H", 0xC000 | offset)


def txt_rdata(text: str) -> bytes:
    """TXT RDATA: the text in <=255-byte character-strings (RFC 1035 §3.3.14)."""
    raw = text.encode("utf-8", "replace")
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes((len(c),)) + c for c in chunks)


def soa_rdata(
    mname: bytes, rname: bytes, serial: int, refresh: int, retry: int, expire: int, minimum: int
) -> bytes:
    """SOA RDATA (RFC 1035 §3.3.13); names in uncompressed wire form."""
    return mname + rname + struct.pack("!IIIII", serial, refresh, retry, expire, minimum)


def opt_rr(size: int, ext_rcode: int = 0, version: int = 0) -> bytes:
    """Our OPT record: advertised UDP size, upper RCODE bits, version 0 (RFC 6891 §6.1.3)."""
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, size, (ext_rcode << 24) | (version << 16), 0)
